"""The document: one project, its undo stack, and signals that fire only on real change.

Views never touch the graph: a gesture becomes a command (commands.py), the command calls
the primitives below, and the document tells every view what changed. After each change the
graph is analysed again (shapes, errors), which is cheap enough to do on every edit.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import networkx as nx
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from layerlab.core.compiler import param_counts
from layerlab.core.memory import machine_memory, memory_problems
from layerlab.core.project import Project
from layerlab.core.shapes import Analysis, analyze, valid_id_error
from layerlab.core.summary import Summary, summarise
from layerlab.core.tying import KEY as TIE_KEY
from layerlab.core.tying import ties


class Document(QObject):
    nodeAdded = Signal(str)
    nodeRemoved = Signal(str)
    nodeChanged = Signal(str)  # type, params, frozen
    nodeMoved = Signal(str)
    nodeRenamed = Signal(str, str)
    edgeAdded = Signal(str, str)
    edgeRemoved = Signal(str, str)
    groupChanged = Signal(str)  # a group's name or collapsed state; core/groups.py
    edgeChanged = Signal(str, str)  # how it is drawn (bend points)
    directionChanged = Signal(str)  # the canvas's flow: "TB" or "LR"
    analysisChanged = Signal()
    trainingChanged = Signal()
    locked = Signal(bool)  # structure locked while a run is live
    reset = Signal()  # a different project: views rebuild from scratch

    def __init__(self, project: Project | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.project = project or Project()
        self.undo_stack = QUndoStack(self)
        self.undo_stack.setObjectName("undoStack")
        self.analysis: Analysis = Analysis()
        self.counts: dict[str, int] = {}
        self.structure_locked = False
        self._deferred = 0
        self._pending: list[tuple[Any, tuple[object, ...]]] = []
        self._summary: Summary | None = None
        self.reanalyse()

    @property
    def graph(self) -> nx.DiGraph:
        return self.project.graph

    # -- queries ----------------------------------------------------------------------
    def unique_id(self, base: str) -> str:
        """`base` if free, else base_2, base_3, … (a valid Python identifier)."""
        name = re.sub(r"\W", "_", base) or "node"
        if name[0].isdigit():
            name = f"n{name}"
        if name not in self.graph and not valid_id_error(name):
            return name
        stem, k = re.sub(r"_\d+$", "", name), 2
        while f"{stem}_{k}" in self.graph or valid_id_error(f"{stem}_{k}"):
            k += 1
        return f"{stem}_{k}"

    def would_cycle(self, source: str, target: str) -> bool:
        return source == target or nx.has_path(self.graph, target, source)

    def in_ports(self, node: str) -> dict[int, str]:
        """Port → source for the node's incoming edges."""
        return {data.get("port", 0): src for src, _, data in
                self.graph.in_edges(node, data=True)}

    # -- primitives, for commands only ------------------------------------------------
    # Each runs inside changes(): the graph is analysed once the outermost change ends, and
    # only then are the views told, so that they never see a graph and an analysis that
    # disagree.
    def add_node(self, node: str, data: dict[str, Any]) -> None:
        with self.changes():
            self.graph.add_node(node, **copy.deepcopy(data))
            self._notify(self.nodeAdded, node)

    def remove_node(self, node: str) -> None:
        with self.changes():
            for src, dst in list(self.graph.in_edges(node)) + list(self.graph.out_edges(node)):
                self.remove_edge(src, dst)
            self.graph.remove_node(node)
            self._notify(self.nodeRemoved, node)

    def add_edge(self, source: str, target: str, data: dict[str, Any]) -> None:
        with self.changes():
            self.graph.add_edge(source, target, **copy.deepcopy(data))
            self._notify(self.edgeAdded, source, target)

    def remove_edge(self, source: str, target: str) -> None:
        with self.changes():
            self.graph.remove_edge(source, target)
            self._notify(self.edgeRemoved, source, target)

    def set_pos(self, node: str, pos: list[float]) -> None:
        if self.graph.nodes[node].get("pos") != pos:
            self.graph.nodes[node]["pos"] = list(pos)
            self.nodeMoved.emit(node)  # a move changes no shape: no analysis

    def set_bends(self, source: str, target: str, bends: list[list[float]] | None) -> None:
        """Where the edge bends on the canvas (None: straight); a view change, no analysis."""
        data = self.graph.edges[source, target]
        if data.get("bends") != (bends or None):
            if bends:
                data["bends"] = copy.deepcopy(bends)
            else:
                data.pop("bends", None)
            self.edgeChanged.emit(source, target)

    def set_direction(self, direction: str) -> None:
        if self.project.view.get("direction") != direction:
            self.project.view["direction"] = direction
            self.directionChanged.emit(direction)

    def set_attr(self, node: str, key: str, value: Any) -> None:
        """Set a node attribute (`type`, `frozen`, or `params` as a whole); None removes it."""
        data = self.graph.nodes[node]
        if data.get(key) == value and (key in data) == (value is not None):
            return
        with self.changes():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = copy.deepcopy(value)
            self._notify(self.nodeChanged, node)

    def set_group(self, group: str, data: dict[str, Any] | None) -> None:
        """Define, change or (None) forget a group's own data; membership is on the nodes."""
        if self.project.groups.get(group) == data:
            return
        with self.changes():
            if data is None:
                self.project.groups.pop(group, None)
            else:
                self.project.groups[group] = copy.deepcopy(data)
            self._notify(self.groupChanged, group)

    def rename(self, old: str, new: str) -> None:
        with self.changes():
            order = [new if n == old else n for n in self.graph]
            edges = [(new if u == old else u, new if v == old else v)
                     for u, v in self.edge_order()]
            nx.relabel_nodes(self.graph, {old: new}, copy=False)
            for node, target in ties(self.graph).items():  # a tied weight follows its table
                if target == old:
                    self.graph.nodes[node]["params"] = {**self.graph.nodes[node]["params"],
                                                        TIE_KEY: new}
                    self._notify(self.nodeChanged, node)
            self.restore_order(order, edges)
            self._notify(self.nodeRenamed, old, new)

    def edge_order(self) -> list[tuple[str, str]]:
        return list(self.graph.edges())

    def restore_order(self, nodes: list[str], edges: list[tuple[str, str]]) -> None:
        """Put nodes and edges back in a remembered order, so that undo restores the file
        byte for byte (networkx keeps insertion order)."""
        g = self.graph
        if list(g) == nodes and list(g.edges()) == edges:
            return
        ordered = nx.DiGraph(**g.graph)
        ordered.add_nodes_from((n, g.nodes[n]) for n in nodes)
        ordered.add_edges_from((u, v, g.edges[u, v]) for u, v in edges)
        self.project.graph = ordered

    def replace_project(self, project: Project) -> None:
        """Show another project; the undo history belongs to the old one and goes."""
        self.undo_stack.clear()
        self.project = project
        self._analyse()
        self._pending = []
        self.reset.emit()
        self.analysisChanged.emit()
        self.trainingChanged.emit()

    def set_training(self, training: dict[str, Any]) -> None:
        if training != self.project.training:
            self.project.training = copy.deepcopy(training)
            self.trainingChanged.emit()

    def set_locked(self, value: bool) -> None:
        if value != self.structure_locked:
            self.structure_locked = value
            self.locked.emit(value)

    @contextmanager
    def changes(self) -> Iterator[None]:
        """Group primitives: the graph is analysed once, at the end, then views are told."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
            if not self._deferred:
                self.reanalyse()

    def _notify(self, signal: Any, *args: object) -> None:
        self._pending.append((signal, args))

    def reanalyse(self) -> None:
        """Analyse the graph, then tell the views what changed and that shapes changed."""
        self._analyse()
        pending, self._pending = self._pending, []
        for signal, args in pending:
            signal.emit(*args)
        self.analysisChanged.emit()

    def _analyse(self) -> None:
        """Shapes, parameter counts and problems (a network too large for this machine's
        memory is one: training it could only fail)."""
        self.analysis = analyze(self.graph)
        self.counts = param_counts(self.graph, self.analysis)
        self.analysis.errors += memory_problems(self.counts, machine_memory())
        self._summary = None

    def summary(self) -> Summary:
        """Sizes and FLOPs; computed when first asked for after each change (FLOPs need a
        model on the meta device, too slow to build on every edit of a big graph)."""
        if self._summary is None:
            self._summary = summarise(self.graph, self.analysis)
        return self._summary
