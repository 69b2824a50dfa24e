"""The step-through dock: controls, what happens at the current event, the chain rule with
real numbers, a tensor inspector, the update of a clicked weight, and the gradient flow per
layer."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from layerlab.app import attention_view
from layerlab.app.chain_view import ChainView
from layerlab.app.step_views import FlowView, TensorView
from layerlab.app.stepper import SPEEDS_MS, Stepper
from layerlab.app.update_view import UpdateView
from layerlab.core.timeline import PHASES, describe


class StepperDock(QWidget):
    def __init__(self, stepper: Stepper, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stepperPanel")
        self.stepper = stepper
        self.buttons: dict[str, QPushButton] = {}
        controls = QHBoxLayout()
        for name, text, slot in (
                ("back", "◀ Back", stepper.back), ("play", "▶ Play", self.toggle_play),
                ("forward", "Next ▶", stepper.forward), ("leave", "Done", stepper.leave)):
            controls.addWidget(self._button(name, text, slot))
        phases = QHBoxLayout()
        phases.addWidget(QLabel("jump to"))
        for phase in PHASES:
            phases.addWidget(self._button(f"jump_{phase}", phase.capitalize(),
                                          lambda checked=False, p=phase: stepper.jump(p)))
        self.speed = QComboBox()
        self.speed.setObjectName("stepSpeed")
        self.speed.setAccessibleName("Animation speed")
        self.speed.addItems(list(SPEEDS_MS))
        self.speed.setCurrentText(stepper.speed)
        self.speed.currentTextChanged.connect(self._speed)
        self.continuous = QCheckBox("then the next batch")
        self.continuous.setObjectName("stepContinuous")
        self.continuous.setAccessibleName("Continuous")
        self.continuous.toggled.connect(lambda on: setattr(stepper, "continuous", on))
        controls.addWidget(self.speed)
        controls.addStretch(1)
        phases.addWidget(self.continuous)
        phases.addStretch(1)
        self.text = QLabel("Press Step Through (F11) to record the next training step.")
        self.text.setObjectName("stepText")
        self.text.setAccessibleName("What happens at this event")
        self.text.setWordWrap(True)
        self.tabs = self._tabs()
        self.attention = attention_view.install(self)  # per-head maps of attention nodes
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addLayout(phases)
        layout.addWidget(self.text)
        layout.addWidget(self.tabs, 1)
        stepper.eventChanged.connect(self.show_event)
        stepper.modeChanged.connect(self._mode)
        stepper.finished.connect(lambda: self.buttons["play"].setText("▶ Play"))
        self._mode(False)

    def _tabs(self) -> QTabWidget:
        """Chain rule, Tensor, Update and Gradient flow."""
        tabs = QTabWidget()
        tabs.setObjectName("stepTabs")
        self.chain = ChainView()
        self.sample = self.chain.sample
        self.sample.valueChanged.connect(lambda v: self._show_chain())
        self.tensor = TensorView()
        self.tensor.sampleChosen.connect(self._sample_chosen)
        self.tensor.weightChosen.connect(self.explain_weight)
        self.update_view = UpdateView()
        self.flow = FlowView()
        for widget, title, tip in (
                (self.chain, "Chain rule", "The node's backward rule with one sample's numbers"),
                (self.tensor, "Tensor", "The node's values, gradient or weights as heatmaps"),
                (self.update_view, "Update", "How the optimizer changed the weight clicked in "
                                             "the Tensor tab"),
                (self.flow, "Gradient flow", "The gradient norm of each layer, and the verdicts")):
            tabs.setTabToolTip(tabs.addTab(widget, title), tip)
        tabs.currentChanged.connect(lambda i: self._show_chain())
        return tabs

    def _button(self, name: str, text: str, slot: object) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName(f"step_{name}")
        button.setAccessibleName(text.strip("◀▶ "))
        button.clicked.connect(slot)
        self.buttons[name] = button
        return button

    # -- showing ----------------------------------------------------------------------
    def _mode(self, active: bool) -> None:
        for button in self.buttons.values():
            button.setEnabled(active)
        self.speed.setEnabled(active)
        if active:
            self.flow.show_trace(self.stepper.trace, self.stepper.verdicts)
            trace = self.stepper.trace
            self.sample.setRange(0, max(0, int(trace.kept["samples"]) - 1))
            self.update_view.clear()
        else:
            self.buttons["play"].setText("▶ Play")
            self.chain.clear()
            self.update_view.clear()

    def toggle_play(self) -> None:
        if self.stepper.playing:
            self.stepper.pause()
            self.buttons["play"].setText("▶ Play")
        else:
            if self.stepper.index >= len(self.stepper.events) - 1:
                self.stepper.go(-1)
            self.stepper.play()
            self.buttons["play"].setText("❚❚ Pause")

    def _speed(self, speed: str) -> None:
        self.stepper.speed = speed
        if self.stepper.playing:
            self.stepper.play()

    def show_event(self, index: int) -> None:
        stepper = self.stepper
        if stepper.trace is None or stepper.graph is None:
            return
        if index < 0:
            self.text.setText(f"A recorded step of {stepper.trace.kept['batch']} samples, "
                              f"{len(stepper.events)} events. Press Next or Play.")
            return
        event = stepper.events[index]
        self.text.setText(f"<b>{event.phase}</b> ({index + 1}/{len(stepper.events)}) · "
                          + describe(event, stepper.trace, stepper.graph))
        self.tensor.show_step(stepper.trace, event.phase, event.node, stepper.output)
        self._show_chain()

    def _show_chain(self) -> None:
        """The chain rule of the event's node, computed only while its tab is shown."""
        stepper = self.stepper
        if self.tabs.currentWidget() is not self.chain or stepper.trace is None or \
                stepper.graph is None or stepper.index < 0:
            return
        self.chain.show_node(stepper.trace, stepper.graph, stepper.events[stepper.index].node)

    def explain_weight(self, key: str, index: tuple[int, ...]) -> None:
        """The update of weight `key[index]` of the shown step, in the Update tab."""
        if self.stepper.trace is not None:
            self.update_view.show_weight(self.stepper.trace, key, index)
            self.tabs.setCurrentWidget(self.update_view)

    def _sample_chosen(self, sample: int) -> None:
        self.sample.setValue(sample)
        self.tabs.setCurrentWidget(self.chain)
