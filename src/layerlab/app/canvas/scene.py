"""The scene: fills itself from the document, then follows its signals; turns gestures
(drops, port drags, moves) into commands."""

from __future__ import annotations

import itertools
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Signal
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsPathItem, QGraphicsScene, QGraphicsSceneMouseEvent
from shiboken6 import isValid

from layerlab.app.canvas.group_item import GroupLayer
from layerlab.app.canvas.items import EdgeItem, NodeItem, PortItem
from layerlab.app.commands import AddNodes, Connect, MoveNodes
from layerlab.app.document import Document
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.ops import node_title
from layerlab.core.ports import drawn_port, output_count
from layerlab.core.spec import fmt_output


def _along_flow(points: list[QPointF], flow: str) -> bool:
    """True when the points advance down (TB) or rightwards (LR) the whole way."""
    axis = [p.y() if flow == "TB" else p.x() for p in points]
    return all(a <= b for a, b in itertools.pairwise(axis))


def new_node_data(type_name: str, pos: QPointF) -> dict[str, Any]:
    """A fresh node of `type_name`: required parameters get their suggested start value."""
    spec = CATALOGUE[type_name]
    params = {p.name: p.initial for p in spec.params if p.required}
    return {"type": type_name, "params": params, "pos": [round(pos.x()), round(pos.y())]}


class GraphScene(QGraphicsScene):
    message = Signal(str)  # for the status bar

    def __init__(self, doc: Document) -> None:
        super().__init__()
        self.doc = doc
        self.nodes: dict[str, NodeItem] = {}
        self.edges: dict[tuple[str, str], EdgeItem] = {}
        self._drag_line: QGraphicsPathItem | None = None
        self._drag_port: PortItem | None = None
        self._shown: dict[str, tuple[object, ...]] = {}  # what each item shows now
        self._routed: set[tuple[str, str]] = set()
        self.rebuild()
        doc.nodeAdded.connect(self._add_node)
        doc.nodeRemoved.connect(self._remove_node)
        doc.nodeMoved.connect(self._move_node)
        doc.nodeRenamed.connect(lambda old, new: self.rebuild())
        doc.edgeAdded.connect(self._add_edge)
        doc.edgeRemoved.connect(self._remove_edge)
        doc.edgeChanged.connect(self._route)
        doc.directionChanged.connect(self._set_flow)
        doc.analysisChanged.connect(self.refresh)
        doc.reset.connect(self.rebuild)
        self.groups = GroupLayer(self)  # after the scene's own slots: it draws on top of them

    # -- filling from the document ----------------------------------------------------
    def rebuild(self) -> None:
        items = [*self.nodes.values(), *self.edges.values()]
        self.nodes.clear()
        self.edges.clear()
        self._shown.clear()
        self._routed.clear()
        for item in items:
            self.removeItem(item)
        for node in self.doc.graph:
            self._add_node(node, refresh=False)
        for source, target in self.doc.graph.edges():
            self._add_edge(source, target, refresh=False)
        self.refresh()

    @property
    def flow(self) -> str:
        return self.doc.project.direction

    def _set_flow(self, flow: str) -> None:
        for item in self.nodes.values():
            item.set_flow(flow)
        for source, target in self.edges:
            self._route(source, target)

    def _add_node(self, node: str, refresh: bool = True) -> None:
        item = NodeItem(node, self._node_moved)
        item.set_flow(self.flow)
        self.nodes[node] = item
        self.addItem(item)
        item.setPos(QPointF(*self.doc.graph.nodes[node].get("pos", [0, 0])))
        if refresh:
            self.refresh()

    def _remove_node(self, node: str) -> None:
        self._shown.pop(node, None)
        item = self.nodes.pop(node, None)
        if item is not None:
            self.removeItem(item)

    def _move_node(self, node: str) -> None:
        item = self.nodes.get(node)
        pos = QPointF(*self.doc.graph.nodes[node].get("pos", [0, 0]))
        if item is not None and item.pos() != pos:
            item.setPos(pos)

    def _add_edge(self, source: str, target: str, refresh: bool = True) -> None:
        item = EdgeItem(source, target)
        self.edges[(source, target)] = item
        self.addItem(item)
        if refresh:
            self.refresh()

    def _remove_edge(self, source: str, target: str) -> None:
        self._routed.discard((source, target))
        item = self.edges.pop((source, target), None)
        if item is not None:
            self.removeItem(item)

    def refresh(self) -> None:
        """Show each node's shape, parameters and errors; route every edge."""
        analysis, g = self.doc.analysis, self.doc.graph
        errors: dict[str, list[str]] = {}
        for node, message in analysis.errors:
            errors.setdefault(node, []).append(message)  # type: ignore[arg-type]
        changed: set[str] = set()
        for node, item in self.nodes.items():
            if node not in g:
                continue
            data = g.nodes[node]
            spec = CATALOGUE.get(data.get("type", ""))
            params = data.get("params", {}) if isinstance(data.get("params"), dict) else {}
            lines = [", ".join(f"{k}={params[k]}" for k in spec.key_params if k in params)] \
                if spec and spec.key_params else []
            if spec and spec.caption:
                lines = spec.caption(params, g.in_degree(node)).splitlines()
            lines = [line for line in lines if line]
            count = self.doc.counts.get(node, 0)
            shape = analysis.shown(node)
            if count:
                shape += f" · {count:,} params"
            shown = (node_title(data), spec.group if spec else "dense", lines, shape,
                     errors.get(node, []), bool(data.get("frozen")),
                     self._input_port_count(node, spec), output_count(g, node) if spec else 0)
            if self._shown.get(node) != shown:  # repaint only what changed
                self._shown[node] = shown
                item.show(*shown)
                changed.add(node)
        for (source, target) in self.edges:
            if source in changed or target in changed or (source, target) not in self._routed:
                self._route(source, target)

    def _input_port_count(self, node: str, spec: object) -> int:
        if spec is None:
            return 1
        if spec.max_inputs == 0:  # type: ignore[attr-defined]
            return 0
        if spec.is_merge:  # type: ignore[attr-defined]
            used = self.doc.graph.in_degree(node)
            return max(spec.min_inputs, used + 1)  # type: ignore[attr-defined]
        return 1

    def _route(self, source: str, target: str) -> None:
        edge = self.edges.get((source, target))
        src, dst = self.nodes.get(source), self.nodes.get(target)
        if edge is None or src is None or dst is None:
            return
        data = self.doc.graph.edges[source, target]
        port = data.get("port", 0)
        port = port if isinstance(port, int) and not isinstance(port, bool) else 0
        leaves = drawn_port(data)
        start, end = src.output_pos(leaves), dst.input_pos(port)
        bends = [QPointF(x, y) for x, y in data.get("bends", [])]
        if not _along_flow([start, *bends, end], self.flow):
            bends = []  # the nodes moved since the layout: the bends no longer lead there
        edge.route(start, end, fmt_output(self.doc.analysis.out_shape(source, leaves)), bends,
                   self.flow)
        self._routed.add((source, target))

    def _node_moved(self, node: str) -> None:
        g = self.doc.graph
        if node in g and self.edges:  # no edges yet while the scene is filled
            for source, target in [*g.in_edges(node), *g.out_edges(node)]:
                self._route(source, target)

    # -- gestures ---------------------------------------------------------------------
    def add_layer(self, type_name: str, pos: QPointF, after: str | None = None) -> str:
        """Add a node of `type_name` at `pos` (optionally fed by `after`); returns its id."""
        if self.doc.structure_locked:
            self.message.emit("The graph is locked while training runs; stop the run first.")
            return ""
        node = self.doc.unique_id(type_name.lower())
        edges = []
        if after is not None and after in self.doc.graph and self._has_output(after) and \
                CATALOGUE[type_name].max_inputs != 0:  # an Input or a Parameter takes none
            port = 0 if CATALOGUE[type_name].is_merge else None
            edges.append((after, node, {} if port is None else {"port": port}))
        self.doc.undo_stack.push(AddNodes(self.doc, {node: new_node_data(type_name, pos)},
                                          edges, f"Add {type_name}"))
        return node

    def _has_output(self, node: str) -> bool:
        spec = CATALOGUE.get(self.doc.graph.nodes[node].get("type", ""))
        return spec is not None and not spec.is_loss

    def connect_ports(self, source: str, target: str, port: int, source_port: int = 0) -> bool:
        """Connect source's output `source_port` to target's input `port`, or say why not."""
        g = self.doc.graph
        spec = CATALOGUE.get(g.nodes[target].get("type", ""))
        if self.doc.structure_locked:
            self.message.emit("The graph is locked while training runs; stop the run first.")
            return False
        if g.has_edge(source, target):
            self.message.emit(f"{source} already feeds {target}.")
            return False
        if self.doc.would_cycle(source, target):
            self.message.emit(f"Connecting {source} → {target} would make a cycle.")
            return False
        taken = self.doc.in_ports(target)
        if spec is not None and not spec.is_merge and taken:
            self.message.emit(f"{target} takes one input and already has {taken[0]}; "
                              "delete that edge first.")
            return False
        if port in taken:
            self.message.emit(f"Port {port} of {target} is already fed by {taken[port]}.")
            return False
        merge = spec is not None and spec.is_merge
        self.doc.undo_stack.push(Connect(self.doc, source, target, port if merge else None,
                                         source_port))
        self.message.emit(f"Connected {source} → {target}.")
        return True

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        port = self._port_at(event.scenePos())
        if port is not None and port.is_output and not self.doc.structure_locked:
            self._drag_port = port
            self._drag_line = QGraphicsPathItem()
            self._drag_line.setPen(QPen(QColor("#ffb300"), 2))
            self._drag_line.setZValue(3)
            self.addItem(self._drag_line)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._drag_line is not None and self._drag_port is not None:
            start = self._drag_port.scenePos()
            path = QPainterPath(start)
            path.lineTo(event.scenePos())
            self._drag_line.setPath(path)
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._drag_line is not None and self._drag_port is not None:
            self.removeItem(self._drag_line)
            source, leaves = self._drag_port.node, self._drag_port.index
            self._drag_line, self._drag_port = None, None
            target = self._port_at(event.scenePos())
            if target is not None and not target.is_output:
                self.connect_ports(source, target.node, target.index, leaves)
            event.accept()
            return
        super().mouseReleaseEvent(event)
        self._commit_moves()

    def _commit_moves(self) -> None:
        moves = {}
        for node, item in self.nodes.items():
            old = list(self.doc.graph.nodes[node].get("pos", [0, 0]))
            new = [round(item.pos().x()), round(item.pos().y())]
            if item.isSelected() and old != new:
                moves[node] = (old, new)
        moves.update(self.groups.member_moves())
        if moves:
            self.doc.undo_stack.push(MoveNodes(self.doc, moves))

    def _port_at(self, pos: QPointF) -> PortItem | None:
        near = QRectF(pos.x() - 7, pos.y() - 7, 14, 14)  # a little slack for the mouse
        for item in [*self.items(pos), *self.items(near)]:
            if isinstance(item, PortItem):
                return item
        return None

    def show_thumbnails(self, means: dict[str, object] | None) -> None:
        """Each node's output over the input plane (None: hide them all)."""
        for node, item in self.nodes.items():
            item.show_thumbnail(None if means is None else means.get(node))  # type: ignore

    def selected_nodes(self) -> list[str]:
        """Selected nodes, and the members of selected collapsed groups, in graph order."""
        chosen = {n for n, item in self.nodes.items() if isValid(item) and item.isSelected()}
        chosen |= self.groups.selected_members()
        return [n for n in self.nodes if n in chosen]

    def selected_edges(self) -> list[tuple[str, str]]:
        return [key for key, item in self.edges.items() if isValid(item) and item.isSelected()]

    def select_only(self, nodes: list[str]) -> None:
        self.clearSelection()
        for node in nodes:
            if node in self.nodes:
                self.nodes[node].setSelected(True)
