"""Run ▸ Show Attention… (Ctrl+Shift+A, also on an attention node's menu): each head's
attention map of the chosen attention node for a chosen sample of the dataset, with the
current weights (the last run's, a weights file's, or fresh ones before any training).

The maps are computed in the torch thread by a worker that lives beside the training
worker and uses its trainer (core/attention_maps.py does the work); the GUI only draws.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx
from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.attention_view import HeadsView
from layerlab.app.generate_ops import GenerateOps, GenerateWorker
from layerlab.app.naming import named
from layerlab.app.training_worker import TrainingWorker, describe
from layerlab.core.attention_maps import ATTENTION_TYPES, AttentionRecord, sample_attention
from layerlab.core.errors import GraphError
from layerlab.core.project import Project
from layerlab.core.text_model import same_model
from layerlab.core.trainer import Trainer

if TYPE_CHECKING:
    from layerlab.app.main_window import MainWindow

SHORTCUT = "Ctrl+Shift+A"
BUSY = ("Training is under way: stop it (Run ▸ Stop, Shift+F5) or let it finish, then "
        "look at the attention.")
NO_ATTENTION = ("This model has no attention node to show (CausalSelfAttention, GPTBlock, "
                "MultiheadAttention or TransformerEncoderLayer): add one, or open the "
                "tiny-gpt example.")
CHANGED = ("The graph has changed since these maps were computed: press Ctrl+Shift+A "
           "(Run ▸ Show Attention…) to compute them again.")
ANY_SAMPLE = 10_000_000  # the sample box's bound until the dataset's size is known


class AttentionWorker(QObject):
    """Lives in the torch thread; the training worker's trainer holds the weights."""

    ready = Signal(object, str)  # an AttentionRecord, and which weights made it
    refused = Signal(str)

    def __init__(self, training: TrainingWorker, writer: GenerateWorker) -> None:
        super().__init__()
        self.training = training
        self.writer = writer  # knows a trainer whose weights came from a file or a redraw

    def _trainer(self, project: Project) -> Trainer:
        """The trainer with the current weights when it is of this model and data, else a
        fresh one (as Step Through makes)."""
        trainer = self.training.trainer
        if trainer is not None and same_model(trainer.project.graph, project.graph) and \
                trainer.project.training.get("dataset") == project.training.get("dataset"):
            return trainer
        return self.training._ensure_trainer(project)

    @Slot(object, int)
    def maps(self, project: Project, index: int) -> None:
        try:
            trainer = self._trainer(project)
            record = sample_attention(trainer.model, trainer.data, index, trainer.device)
        except Exception as exc:  # the thread boundary: nothing escapes a slot
            self.refused.emit(describe(exc))
            return
        self.ready.emit(record, self._weights(trainer))

    def _weights(self, trainer: Trainer) -> str:
        if trainer.step:
            return f"weights after {trainer.step} training steps"
        if trainer is self.writer.given:
            return "weights loaded from a file or carried over from the graph as it was"
        return "weights as initialised (not trained yet)"


class AttentionPanel(QWidget):
    """The node and the sample to look at, the sample's text, and its heads' maps."""

    requested = Signal(int)  # a sample index whose maps are wanted

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("attentionPanel")
        self.setAccessibleName("Attention maps")
        self.record: AttentionRecord | None = None
        self.weights = ""
        self.node = named(QComboBox(), "attentionNode", "Attention node",
                           "Which attention node's heads to show")
        self.sample = named(QSpinBox(), "attentionSample", "Sample",
                             "Which sample of the dataset (numbered as in its preview)")
        self.sample.setRange(0, ANY_SAMPLE)
        self.sample.setKeyboardTracking(False)
        self.text = named(QLabel(), "attentionText", "Sample text",
                           "The sample's tokens as text")
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = named(QLabel(), "attentionStatus", "Attention status",
                             "Which weights the maps come from, or what went wrong")
        self.status.setWordWrap(True)
        self.heads = HeadsView("attentionHeads")
        top = QHBoxLayout()
        for caption, widget in (("node", self.node), ("sample", self.sample)):
            top.addWidget(QLabel(caption))
            top.addWidget(widget)
        top.addWidget(self.text, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addWidget(self.heads, 1)
        self.sample.valueChanged.connect(self.requested)
        self.node.currentTextChanged.connect(lambda _: self._draw())

    def set_nodes(self, nodes: list[str], chosen: str = "") -> None:
        current = chosen or self.node.currentText()
        self.node.blockSignals(True)
        self.node.clear()
        self.node.addItems(nodes)
        if current in nodes:
            self.node.setCurrentText(current)
        self.node.blockSignals(False)
        self._draw()

    def show_record(self, record: AttentionRecord, weights: str) -> None:
        if record.index != self.sample.value():
            return  # an older request's answer: a newer one is on its way
        self.record, self.weights = record, weights
        self.sample.setMaximum(record.samples - 1)
        self.text.setText(f"text: <code>{record.text}</code>" if record.text else "")
        self._draw()

    def forget(self) -> None:
        """Another project: nothing of the old one's sample stays on screen."""
        self.record = None
        self.sample.blockSignals(True)
        self.sample.setRange(0, ANY_SAMPLE)
        self.sample.setValue(0)
        self.sample.blockSignals(False)
        self.text.clear()
        self.status.clear()
        self.heads.clear("")

    def refuse(self, message: str) -> None:
        self.record = None
        self.status.setText(message)
        self.heads.clear("")

    def _draw(self) -> None:
        record, node = self.record, self.node.currentText()
        if record is None:
            return
        maps = record.maps.get(node)
        if maps is None:
            self.heads.clear(f"{node or 'The graph'} has no attention maps for this sample "
                             "yet.")
            return
        self.status.setText(f"Sample {record.index} of {record.samples}, {self.weights}.")
        self.heads.show_maps(maps, 0, f"<b>{node}</b>: {len(maps.weights[0])} heads; row: a "
                             "query token, column: a key token it reads")


class AttentionOps(QObject):
    """The dock, its action (Run menu and the node menu) and the requests."""

    mapsRequested = Signal(object, int)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        controller = window.training.controller
        self.worker = AttentionWorker(controller.worker, window.findChild(GenerateOps).worker)
        self.worker.moveToThread(controller.thread)
        self.mapsRequested.connect(self.worker.maps)
        self.asked: nx.DiGraph | None = None  # the graph whose maps were last asked for
        self.panel = AttentionPanel()
        self.dock = window.add_dock("attentionDock", "Attention", self.panel,
                                    Qt.DockWidgetArea.BottomDockWidgetArea)
        window.tabifyDockWidget(window.training_dock, self.dock)
        self.dock.hide()  # shown by Show Attention…
        self.panel.requested.connect(self.ask)
        self.worker.ready.connect(self.panel.show_record)
        self.worker.refused.connect(self.panel.refuse)
        controller.ended.connect(lambda _: self.dock.isVisible() and self.ask())
        self.action = window.action(
            "actionShowAttention", "Show &Attention…", self.show_panel, SHORTCUT,
            "Each head's attention map of an attention node for a chosen sample")
        window.run_menu.addAction(self.action)
        window.view.context_actions.append(self.action)
        toggle = self.dock.toggleViewAction()
        toggle.setObjectName("actionAttentionDock")
        toggle.toggled.connect(lambda opened: opened and self._nodes())
        window.menuBar().findChild(QMenu, "viewMenu").addAction(toggle)
        window.doc.analysisChanged.connect(self._nodes)
        window.doc.reset.connect(self._forget)
        self._nodes()

    def attention_nodes(self) -> list[str]:
        return [n for n, d in self.window.doc.graph.nodes(data=True)
                if d.get("type") in ATTENTION_TYPES]

    def _forget(self) -> None:
        self.asked = None
        self.panel.forget()

    def _nodes(self) -> None:
        """The graph changed (or another project came): while the dock is open, another
        project's maps are computed; an edited model's are said to be out of date; a graph
        without attention says so."""
        nodes = self.attention_nodes()
        self.action.setEnabled(bool(nodes))
        self.panel.set_nodes(nodes)
        if not self.dock.toggleViewAction().isChecked():
            return
        if not nodes:
            self.panel.refuse(NO_ATTENTION)
        elif self.asked is None:  # another project, or the dock has just opened
            self.ask()
        elif not same_model(self.asked, self.window.doc.graph):  # not asked here: the
            self.panel.refuse(CHANGED)  # maps' fresh trainer would replace trained weights

    def show_panel(self) -> None:
        """Open the dock on the selected attention node (else the first) and compute."""
        selected = [n for n in self.window.scene.selected_nodes()
                    if n in self.attention_nodes()]
        self.panel.set_nodes(self.attention_nodes(), selected[0] if selected else "")
        self.asked = None  # asked afresh: the weights may have changed since
        self.dock.show()  # a closed dock asks as it opens (_nodes)
        self.dock.raise_()
        self.panel.sample.setFocus()
        if self.asked is None:
            self.ask()

    def ask(self, index: int | None = None) -> None:
        """Send a request to the torch thread, unless a run holds it."""
        controller = self.window.training.controller
        if controller.state != "idle":
            self.panel.refuse(BUSY)
            return
        try:
            project = controller.snapshot()
        except GraphError as exc:
            self.panel.refuse(f"The project cannot be used yet: "
                              f"{'; '.join(m for _, m in exc.errors)}")
            return
        self.panel.status.setText("Computing…")
        self.asked = project.graph
        self.mapsRequested.emit(project, self.panel.sample.value() if index is None
                                else index)


def install(window: MainWindow) -> AttentionOps:
    return AttentionOps(window)
