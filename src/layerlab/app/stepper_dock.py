"""The step-through dock: controls, what happens at the current event, the chain rule with
real numbers, a tensor inspector, and the gradient flow per layer."""

from __future__ import annotations

import torch
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.step_views import FlowView, TensorView
from layerlab.app.stepper import SPEEDS_MS, Stepper
from layerlab.core.timeline import PHASES, chain_rule, describe

SHOWN = 8  # entries of a vector printed in the chain-rule view


def vector(t: torch.Tensor) -> str:
    values = ", ".join(f"{v:.3g}" for v in t.flatten()[:SHOWN].tolist())
    more = f", … ({t.numel()} in all)" if t.numel() > SHOWN else ""
    return f"[{values}{more}]"


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
        self.tabs = QTabWidget()
        self.tabs.setObjectName("stepTabs")
        self.tabs.addTab(self._chain_tab(), "Chain rule")
        self.tensor = TensorView()
        self.tensor.sampleChosen.connect(self._sample_chosen)
        self.flow = FlowView()
        self.tabs.addTab(self.tensor, "Tensor")
        self.tabs.addTab(self.flow, "Gradient flow")
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addLayout(phases)
        layout.addWidget(self.text)
        layout.addWidget(self.tabs, 1)
        stepper.eventChanged.connect(self.show_event)
        stepper.modeChanged.connect(self._mode)
        stepper.finished.connect(lambda: self.buttons["play"].setText("▶ Play"))
        self._mode(False)

    def _button(self, name: str, text: str, slot: object) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName(f"step_{name}")
        button.setAccessibleName(text.strip("◀▶ "))
        button.clicked.connect(slot)
        self.buttons[name] = button
        return button

    def _chain_tab(self) -> QWidget:
        page = QWidget()
        self.sample = QSpinBox()
        self.sample.setObjectName("chainSample")
        self.sample.setAccessibleName("Sample")
        self.sample.valueChanged.connect(lambda v: self.show_event(self.stepper.index))
        self.chain = QLabel("The chain rule appears here for a Linear layer.")
        self.chain.setObjectName("chainRule")
        self.chain.setWordWrap(True)
        layout = QVBoxLayout(page)
        row = QHBoxLayout()
        row.addWidget(QLabel("sample"))
        row.addWidget(self.sample)
        row.addStretch(1)
        layout.addLayout(row)
        layout.addWidget(self.chain, 1)
        return page

    # -- showing ----------------------------------------------------------------------
    def _mode(self, active: bool) -> None:
        for button in self.buttons.values():
            button.setEnabled(active)
        self.speed.setEnabled(active)
        if active:
            self.flow.show(self.stepper.trace, self.stepper.verdicts)
            trace = self.stepper.trace
            self.sample.setRange(0, max(0, int(trace.kept["samples"]) - 1))
        else:
            self.buttons["play"].setText("▶ Play")

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
        self._show_chain(event.node)
        self.tensor.show(stepper.trace, event.phase, event.node)

    def _show_chain(self, node: str) -> None:
        stepper = self.stepper
        try:
            rule = chain_rule(stepper.trace, stepper.graph, node, self.sample.value())
        except ValueError as exc:
            self.chain.setText(f"{exc}.")
            return
        check = ("✓ Σᵢ (dL/dŷᵢ)ᵀ·xᵢ equals autograd's dL/dW (max difference "
                 f"{rule.max_diff:.1e})" if rule.matches else
                 "(not every sample of the batch was kept: the sum covers the kept ones)")
        self.chain.setText(
            f"<b>{node}</b>, sample {rule.sample}:<br>"
            f"dL/dŷ = {vector(rule.dy)}<br>x = {vector(rule.x)}<br>"
            f"dL/dW (this sample) = (dL/dŷ)ᵀ·x: shape {list(rule.dw.shape)}, first row "
            f"{vector(rule.dw[0])}<br>dL/db (this sample) = dL/dŷ = {vector(rule.db)}<br>"
            f"{check}")
        self.last_chain = rule

    def _sample_chosen(self, sample: int) -> None:
        self.sample.setValue(sample)
        self.tabs.setCurrentIndex(0)
