"""Gradient-health verdicts while a run trains, where a person looks during the run.

The torch thread judges the trainer's health records (layerlab.core.health_watch) and sends
the verdicts that stand as VerdictRecords with the other records. Each verdict that appears
is drawn as step-through draws one (the badge and its kind under the node), its sentence is
added to the node's tooltip, and one line in the status bar names the first. They stay until
a new run starts, the graph is edited or another project is opened.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QLabel

from layerlab.app.canvas.scene import GraphScene
from layerlab.app.document import Document
from layerlab.app.style import WARNING_COLOUR
from layerlab.app.training_controller import TrainingController
from layerlab.core.diagnostics import Verdict
from layerlab.core.health_watch import VerdictRecord


class HealthBadges(QObject):
    """The verdicts of the current run, on the canvas and in `label` (for the status bar)."""

    def __init__(self, scene: GraphScene, controller: TrainingController,
                 doc: Document) -> None:
        super().__init__()
        self.scene = scene
        self.controller = controller
        self.verdicts: dict[tuple[str, str], Verdict] = {}  # (node, kind): its newest words
        self.label = QLabel()
        self.label.setObjectName("statusHealth")
        self.label.setAccessibleName("Training health")
        self.label.setStyleSheet(f"color: {WARNING_COLOUR.darker(115).name()};"
                                 " font-weight: bold")
        self.label.setVisible(False)
        controller.worker.records.connect(self.receive)
        controller.started.connect(self.clear)
        for signal in (doc.nodeAdded, doc.nodeRemoved, doc.nodeChanged, doc.nodeRenamed,
                       doc.edgeAdded, doc.edgeRemoved, doc.reset):
            signal.connect(self.clear)

    def receive(self, records: list[object]) -> None:
        """Verdicts of a run (a step-through step's are the step-through's to show)."""
        if self.controller.state == "idle":
            return
        fresh = [v for r in records if isinstance(r, VerdictRecord) for v in r.verdicts]
        if fresh:
            self.verdicts.update(((v.node, v.kind), v) for v in fresh)
            self.redraw()

    def clear(self, *_: object) -> None:
        if self.verdicts:
            self.verdicts = {}
            self.redraw()

    def redraw(self) -> None:
        by_node: dict[str, list[Verdict]] = {}
        for verdict in self.verdicts.values():
            by_node.setdefault(verdict.node, []).append(verdict)
        for node, item in self.scene.nodes.items():
            verdicts = by_node.get(node, [])
            item.set_health(", ".join(dict.fromkeys(v.kind for v in verdicts)),
                            [v.message for v in verdicts])
        messages = [v.message for v in self.verdicts.values()]
        more = f" (+{len(messages) - 1} more on the canvas)" if len(messages) > 1 else ""
        self.label.setText(f"⚠ {messages[0]}{more}" if messages else "")
        self.label.setToolTip("Found in this run's gradients:\n" + "\n".join(messages)
                              if messages else "")
        self.label.setVisible(bool(messages))
