"""Step through one real training step on the canvas: forward, loss, backward, update.

The stepper only replays a StepTrace recorded in the torch thread: each event colours the
nodes (forward by |output|, backward by gradient norm on a log scale, update by ‖Δw‖/‖w‖),
sends pulses along the edges (with them forward, against them backward) with Qt's animation
framework, and tells the panels what happened in words and numbers.
"""

from __future__ import annotations

import math

import networkx as nx
from PySide6.QtCore import QObject, QPointF, QTimer, QVariantAnimation, Signal
from PySide6.QtGui import QBrush, QColor, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem

from layerlab.app.canvas.scene import GraphScene
from layerlab.core.diagnostics import Verdict, diagnose
from layerlab.core.timeline import Event, grad_norms_by_node, timeline, update_ratio
from layerlab.core.tracer import StepTrace

FORWARD = (QColor("#fff3c4"), QColor("#f08c1a"))  # small → large |y|
BACKWARD = (QColor("#efe6fb"), QColor("#7b3fc4"))  # small → large gradient norm
UPDATE = (QColor("#e3f6e8"), QColor("#1f9d55"))
PULSE_FORWARD, PULSE_BACKWARD = QColor("#f08c1a"), QColor("#7b3fc4")
SPEEDS_MS = {"slow": 900, "normal": 450, "fast": 150}
# the phases whose numbers each kind of verdict is about: its badge shows only there
VERDICT_PHASES = {"dead": ("forward", "loss"), "saturated": ("forward", "loss"),
                  "vanishing": ("backward",),
                  "exploding": ("backward",), "update-large": ("update",),
                  "update-small": ("update",)}


def mix(pair: tuple[QColor, QColor], t: float) -> QColor:
    a, b = pair
    t = max(0.0, min(1.0, t))
    return QColor(round(a.red() + (b.red() - a.red()) * t),
                  round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t))


def log_scale(value: float, low: float, high: float) -> float:
    """Where `value` sits between `low` and `high` on a log scale, in [0, 1]."""
    if value <= 0 or not math.isfinite(value):
        return 0.0 if value <= 0 else 1.0
    return (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low))


class Stepper(QObject):
    """The state of step-through mode: the trace, its events, where we are, and playback."""

    eventChanged = Signal(int)  # index into events (-1: before the first)
    finished = Signal()
    modeChanged = Signal(bool)

    def __init__(self, scene: GraphScene) -> None:
        super().__init__()
        self.scene = scene
        self.trace: StepTrace | None = None
        self.graph: nx.DiGraph | None = None
        self.output = ""  # the node whose values are ŷ
        self.events: list[Event] = []
        self.verdicts: list[Verdict] = []
        self.index = -1
        self.active = False
        self.continuous = False
        self.speed = "normal"
        self.timer = QTimer(self)
        self.timer.setObjectName("stepTimer")
        self.timer.timeout.connect(self._tick)
        self.animations: list[QVariantAnimation] = []
        self.pulses: list[QGraphicsEllipseItem] = []

    # -- the mode ---------------------------------------------------------------------
    def load(self, trace: StepTrace, graph: nx.DiGraph) -> None:
        self.trace, self.graph = trace, graph
        self.events = timeline(trace, graph)
        # the model's output, ŷ wherever its values are named (as in the chain rule)
        self.output = next((trace.inputs[e.node][0] for e in self.events
                            if e.phase == "loss" and trace.inputs.get(e.node)), "")
        self.verdicts = diagnose(trace, trace.judged)
        self.active = True
        self.modeChanged.emit(True)
        self.go(-1)

    def leave(self) -> None:
        """Back to editing: no timer, no animation, no colour left behind."""
        self.pause()
        self._stop_animations()
        for item in self.scene.nodes.values():
            item.set_step_state(None, "", "")
        self.scene.groups.light(None, None)
        for edge in self.scene.edges.values():
            edge.set_style(QColor("#8a8f98"), 2.0)
        self.active = False
        self.trace = None
        self.events = []
        self.index = -1
        self.modeChanged.emit(False)

    # -- moving through the events ----------------------------------------------------
    def go(self, index: int, animate: bool = False) -> None:
        index = max(-1, min(index, len(self.events) - 1))
        self._stop_animations()
        self.index = index
        self._paint(index)
        if animate and index >= 0:
            self._pulse(self.events[index])
        self.eventChanged.emit(index)

    def forward(self) -> bool:
        if self.index + 1 >= len(self.events):
            return False
        self.go(self.index + 1, animate=True)
        return True

    def back(self) -> None:
        self.go(self.index - 1)

    def jump(self, phase: str) -> None:
        first = next((e.index for e in self.events if e.phase == phase), None)
        if first is not None:
            self.go(first, animate=True)

    def play(self) -> None:
        if self.active:
            self.timer.start(SPEEDS_MS[self.speed])

    def pause(self) -> None:
        self.timer.stop()

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def _tick(self) -> None:
        if not self.forward():
            self.pause()
            self.finished.emit()

    # -- colours: a pure function of the trace and the index, so stepping back restores --
    def _paint(self, index: int) -> None:
        assert self.trace is not None
        trace = self.trace
        phase = self.events[index].phase if index >= 0 else ""
        seen = {e.node: e for e in self.events[: index + 1]}
        grads = grad_norms_by_node(trace)
        for node, item in self.scene.nodes.items():
            colour, caption = None, ""
            event = seen.get(node)
            if phase in ("forward", "loss") and event is not None:
                if event.phase == "loss":
                    colour, caption = FORWARD[1], f"L = {float(trace.loss):.4g}"
                else:
                    value = trace.stats[node].mean_abs  # the whole batch, not the kept rows
                    colour = mix(FORWARD, log_scale(value, 1e-3, 10))
                    caption = f"mean |{self.name(node)}| {value:.3g}"
            elif phase == "backward" and node in grads and self._reached(node, index):
                colour = mix(BACKWARD, log_scale(grads[node], 1e-6, 10))
                caption = f"‖dL/d{self.name(node)}‖ {grads[node]:.2g}"
            elif phase == "update" and event is not None and event.phase == "update":
                ratio = update_ratio(trace, node)
                colour = mix(UPDATE, log_scale(ratio, 1e-6, 1e-1))
                caption = f"Δw/w {ratio:.1e}"
            item.set_step_state(colour, caption, self._badge(node, phase, index))
        current = self.events[index].node if index >= 0 else None
        lit = self.scene.nodes.get(current or "")  # a collapsed group lights up as one
        self.scene.groups.light(current, (lit.highlight or PULSE_FORWARD) if lit else None,
                                lit.caption if lit else "")
        for (source, target), edge in self.scene.edges.items():
            if phase == "backward" and self._reached(source, index) and source in grads:
                width = 1.5 + 3.5 * log_scale(grads[source], 1e-6, 10)
                edge.set_style(PULSE_BACKWARD, width)
            elif phase in ("forward", "loss") and target in seen:
                edge.set_style(PULSE_FORWARD, 2.5)
            else:
                edge.set_style(QColor("#8a8f98"), 2.0)

    def name(self, node: str) -> str:
        """What a node's values are called: its id, or ŷ for the model's output."""
        return "ŷ" if node == self.output else node

    def _badge(self, node: str, phase: str, index: int) -> str:
        """The node's verdicts about this phase, once the node has been reached in it."""
        seen = {e.phase for e in self.events[: index + 1] if e.node == node}
        kinds = [v.kind for v in self.verdicts if v.node == node
                 and phase in self._phases(v) and seen & set(self._phases(v))]
        return ", ".join(dict.fromkeys(kinds))

    def _phases(self, verdict: Verdict) -> tuple[str, ...]:
        """The phases a verdict is about; "nonfinite" names an output that holds inf or
        NaN (forward), or else a gradient that does (backward)."""
        if verdict.kind == "nonfinite" and self.trace is not None:
            stats = self.trace.stats.get(verdict.node)
            return ("forward", "loss") if stats is not None and not stats.finite else \
                ("backward",)
        return VERDICT_PHASES.get(verdict.kind, ("backward",))

    def _reached(self, node: str, index: int) -> bool:
        return any(e.phase == "backward" and e.node == node for e in self.events[: index + 1])

    # -- pulses along the edges --------------------------------------------------------
    def _pulse(self, event: Event) -> None:
        if event.phase not in ("forward", "backward", "loss"):
            return
        g = self.scene.doc.graph
        edges = [(u, event.node) for u in g.predecessors(event.node)] if event.phase != \
            "backward" else [(event.node, v) for v in g.successors(event.node)]
        paths = []
        for u, v in edges:
            edge = self.scene.edges.get((u, v))
            if edge is None or not edge.isVisible():  # inside a collapsed group
                continue
            dot = QGraphicsEllipseItem(-5, -5, 10, 10)
            colour = PULSE_BACKWARD if event.phase == "backward" else PULSE_FORWARD
            dot.setBrush(QBrush(colour))
            dot.setPen(QPen(colour.darker(130)))
            dot.setZValue(5)
            self.scene.addItem(dot)
            self.pulses.append(dot)
            paths.append((dot, edge.path(), event.phase == "backward"))
        if not paths:
            return
        animation = QVariantAnimation(self)
        animation.setStartValue(0.0)
        animation.setEndValue(1.0)
        animation.setDuration(max(80, int(0.8 * SPEEDS_MS[self.speed])))

        def move(t: object) -> None:
            for dot, path, reverse in paths:
                point = path.pointAtPercent(1.0 - float(t) if reverse else float(t))
                dot.setPos(QPointF(point))

        animation.valueChanged.connect(move)
        animation.finished.connect(self._stop_animations)
        self.animations.append(animation)
        animation.start()

    def _stop_animations(self) -> None:
        for animation in self.animations:
            animation.stop()
            animation.deleteLater()
        self.animations = []
        for dot in self.pulses:
            if dot.scene() is not None:
                self.scene.removeItem(dot)
        self.pulses = []
