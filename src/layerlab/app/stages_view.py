"""View ▸ Pipeline Stages: every node coloured by the stage it falls in under
`layerlab train --parallel pipeline`, as core/stages.py plans it (the trainer runs the same
plan), with the stage count and the balance (parameters or FLOPs) in a small toolbar.

"Start Stage Here" in the node menu pins a cut (`"stage_start": true` on the node, one undo
step; the stage count grows with it when the pins need more stages); a node where a stage
cannot start is refused in one sentence on the status bar. The canvas only paints.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QComboBox, QLabel, QMenu, QSpinBox, QToolBar

from layerlab.app.commands import SetAttribute, SetTraining
from layerlab.core.errors import GraphError
from layerlab.core.records import TrainingError
from layerlab.core.stages import (
    BALANCES,
    START_KEY,
    costed_plan,
    pinned_starts,
    pipeline_plan,
    stage_of,
)

if TYPE_CHECKING:
    from layerlab.app.main_window import MainWindow

SHORTCUT = "Ctrl+Shift+P"
DEFAULT_STAGES = 2
# light fills that dark text reads on, told apart in colour and by the label above a node
COLOURS = ("#9ecae1", "#fdd49e", "#a1d99b", "#fcbba1", "#dadaeb", "#c7e9c0", "#fde0ef",
           "#d9d9d9")
BALANCE_TEXT = {"parameters": "by parameters", "flops": "by FLOPs"}


class StagesBar(QToolBar):
    """The stage count, the balance, and what the plan is (or why there is none)."""

    def __init__(self) -> None:
        super().__init__("Pipeline Stages")
        self.setObjectName("stagesToolbar")
        self.setAccessibleName("Pipeline stages")
        self.count = QSpinBox()
        self.count.setObjectName("stageCount")
        self.count.setAccessibleName("Pipeline stage count")
        self.count.setRange(2, 64)
        self.count.setPrefix("stages: ")
        self.count.setToolTip("How many pipeline stages (torchrun --nproc_per_node must "
                              "equal it under --parallel pipeline)")
        self.balance = QComboBox()
        self.balance.setObjectName("stageBalance")
        self.balance.setAccessibleName("Balance stages by")
        self.balance.setToolTip("What the automatic cuts even out between stages: "
                                "parameter count, or forward FLOPs per sample")
        for key in BALANCES:
            self.balance.addItem(BALANCE_TEXT[key], key)
        self.note = QLabel()
        self.note.setObjectName("stagesNote")
        self.note.setAccessibleName("Pipeline stages summary")
        for widget in (self.count, self.balance, self.note):
            self.addWidget(widget)


def sentence(message: str) -> str:
    """Core's reason ("the graph cannot be split …") as the window shows it: a sentence."""
    return f"{message[:1].upper()}{message[1:]}{'' if message.endswith('.') else '.'}"


class PipelineStages(QObject):
    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window, self.doc, self.scene = window, window.doc, window.scene
        self.bar = StagesBar()
        window.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.bar)
        self.bar.hide()
        self.bar.toggleViewAction().setVisible(False)  # View ▸ Pipeline Stages shows it
        self.toggle = window.action(
            "actionPipelineStages", "&Pipeline Stages", lambda *_: self.refresh(), SHORTCUT,
            "Colour each node by the pipeline stage it falls in (--parallel pipeline)")
        self.toggle.setCheckable(True)
        window.menuBar().findChild(QMenu, "viewMenu").addAction(self.toggle)
        self.pin = window.action(
            "actionStartStage", "Start &Stage Here", self.toggle_pin,
            tip="Make the selected node the first of a pipeline stage (again: unpin it)")
        window.view.context_actions.append(self.pin)
        self.bar.count.valueChanged.connect(lambda v: self._set("pipeline_stages", v))
        self.bar.balance.currentIndexChanged.connect(
            lambda i: self._set("pipeline_balance", self.bar.balance.itemData(i)))
        self.doc.analysisChanged.connect(self.refresh)
        self.doc.trainingChanged.connect(self.refresh)
        self.bar.visibilityChanged.connect(self._shown)

    def _shown(self, visible: bool) -> None:
        """The toolbar shown by the window's last layout (restored at start): the stages
        come with it, as View ▸ Pipeline Stages shows them."""
        if visible and not self.toggle.isChecked():
            self.toggle.setChecked(True)
            self.refresh()

    @property
    def count(self) -> int:
        return int(self.doc.project.training.get("pipeline_stages", DEFAULT_STAGES))

    @property
    def balance(self) -> str:
        return str(self.doc.project.training.get("pipeline_balance", BALANCES[0]))

    def _set(self, key: str, value: Any) -> None:
        """A change in the toolbar: one undoable change of the training settings."""
        old = self.doc.project.training
        if old.get(key) != value:
            self.doc.undo_stack.push(SetTraining(self.doc, old, {**old, key: value},
                                                 f"Pipeline {key.split('_')[1]}"))

    def refresh(self) -> None:
        """Show the toolbar's values, then colour the nodes (or clear them when off)."""
        bar = self.bar
        for widget in (bar.count, bar.balance):
            widget.blockSignals(True)
        bar.count.setValue(self.count)
        bar.balance.setCurrentIndex(bar.balance.findData(self.balance))
        for widget in (bar.count, bar.balance):
            widget.blockSignals(False)
        shown = self.toggle.isChecked()
        self.bar.setVisible(shown)
        stage: dict[str, int] = {}
        if shown:
            try:
                plan, costs = costed_plan(self.doc.graph, self.count, self.balance)
                stage = stage_of(plan)
                self.bar.note.setText(self._summary(plan, costs))
            except GraphError:
                self.bar.note.setText("Fix the graph's problems to see its stages.")
            except TrainingError as exc:
                self.bar.note.setText(sentence(str(exc)))
        for node, item in self.scene.nodes.items():
            k = stage.get(node)
            item.set_stage(None if k is None else QColor(COLOURS[k % len(COLOURS)]),
                           "" if k is None else f"stage {k + 1}")

    def _summary(self, plan: list[list[str]], costs: dict[str, int]) -> str:
        unit = "params" if self.balance == "parameters" else "FLOPs"
        return " · ".join(f"stage {i}: {sum(costs.get(n, 0) for n in names):,} {unit}"
                          for i, names in enumerate(plan, start=1))

    def toggle_pin(self) -> None:
        """Pin (or unpin) the selected node as a stage's first, in one undo step."""
        nodes = self.scene.selected_nodes()
        status = self.window.statusBar()
        if len(nodes) != 1:
            status.showMessage("Select one node to start a pipeline stage at.", 6000)
            return
        node = nodes[0]
        old = self.doc.graph.nodes[node].get(START_KEY)
        new = None if old is True else True
        trial = copy.deepcopy(self.doc.graph)
        trial.nodes[node].pop(START_KEY, None)
        if new:
            trial.nodes[node][START_KEY] = True
        count = max(self.count, len(pinned_starts(trial)) + 1)
        try:
            pipeline_plan(trial, count, self.balance)
        except (GraphError, TrainingError) as exc:
            message = exc.errors[0][1] if isinstance(exc, GraphError) else str(exc)
            status.showMessage(sentence(message), 8000)
            return
        text = f"{'Start a pipeline stage at' if new else 'Unpin the stage start of'} {node}"
        self.doc.undo_stack.beginMacro(text)
        self.doc.undo_stack.push(SetAttribute(self.doc, node, START_KEY, old, new, text))
        if count != self.count:
            self._set("pipeline_stages", count)
        self.doc.undo_stack.endMacro()
        status.showMessage(f"{text}.", 6000)


def install(window: MainWindow) -> PipelineStages:
    return PipelineStages(window)
