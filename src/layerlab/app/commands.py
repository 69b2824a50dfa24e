"""Every change to a document is one undoable command, named for the Edit menu."""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtGui import QUndoCommand

from layerlab.app.document import Document

Edge = tuple[str, str, dict[str, Any]]


class AddNodes(QUndoCommand):
    """Add nodes and the edges among them (a palette drop, a paste)."""

    def __init__(self, doc: Document, nodes: dict[str, dict[str, Any]], edges: list[Edge],
                 text: str) -> None:
        super().__init__(text)
        self.doc, self.nodes, self.edges = doc, copy.deepcopy(nodes), copy.deepcopy(edges)
        self.order: tuple[list[str], list[tuple[str, str]]] | None = None

    def redo(self) -> None:
        self.order = (list(self.doc.graph), self.doc.edge_order())
        with self.doc.changes():
            for node, data in self.nodes.items():
                self.doc.add_node(node, data)
            for src, dst, data in self.edges:
                self.doc.add_edge(src, dst, data)

    def undo(self) -> None:
        with self.doc.changes():
            for node in self.nodes:
                self.doc.remove_node(node)
            assert self.order is not None
            self.doc.restore_order(*self.order)


class RemoveItems(QUndoCommand):
    """Delete nodes (with their edges) and edges; undo puts everything back in order."""

    def __init__(self, doc: Document, nodes: list[str], edges: list[tuple[str, str]],
                 text: str = "Delete") -> None:
        super().__init__(text)
        self.doc = doc
        g = doc.graph
        self.nodes = {n: copy.deepcopy(dict(g.nodes[n])) for n in nodes}
        touched = set(edges) | {(u, v) for u, v in g.edges() if u in nodes or v in nodes}
        self.edges = [(u, v, copy.deepcopy(g.edges[u, v])) for u, v in g.edges()
                      if (u, v) in touched]
        self.order = (list(g), doc.edge_order())

    def redo(self) -> None:
        with self.doc.changes():
            for src, dst, _ in self.edges:
                self.doc.remove_edge(src, dst)
            for node in self.nodes:
                self.doc.remove_node(node)

    def undo(self) -> None:
        with self.doc.changes():
            for node, data in self.nodes.items():
                self.doc.add_node(node, data)
            for src, dst, data in self.edges:
                self.doc.add_edge(src, dst, data)
            self.doc.restore_order(*self.order)


class Connect(QUndoCommand):
    def __init__(self, doc: Document, source: str, target: str, port: int | None) -> None:
        super().__init__(f"Connect {source} → {target}")
        self.doc, self.source, self.target = doc, source, target
        self.data = {} if port is None else {"port": port}

    def redo(self) -> None:
        self.doc.add_edge(self.source, self.target, self.data)

    def undo(self) -> None:
        self.doc.remove_edge(self.source, self.target)


class MoveNodes(QUndoCommand):
    def __init__(self, doc: Document, moves: dict[str, tuple[list[float], list[float]]],
                 text: str = "Move") -> None:
        super().__init__(text)
        self.doc, self.moves = doc, moves

    def redo(self) -> None:
        for node, (_, new) in self.moves.items():
            self.doc.set_pos(node, new)

    def undo(self) -> None:
        for node, (old, _) in self.moves.items():
            self.doc.set_pos(node, old)


class SetAttribute(QUndoCommand):
    """Change one node attribute: a parameter (params with one key changed), frozen, …
    Consecutive edits of the same field merge into one undo step."""

    MERGE_ID = 7001

    def __init__(self, doc: Document, node: str, key: str, old: Any, new: Any,
                 text: str) -> None:
        super().__init__(text)
        self.doc, self.node, self.key = doc, node, key
        self.old, self.new = copy.deepcopy(old), copy.deepcopy(new)
        self.field = text

    def redo(self) -> None:
        self.doc.set_attr(self.node, self.key, self.new)

    def undo(self) -> None:
        self.doc.set_attr(self.node, self.key, self.old)

    def id(self) -> int:
        return self.MERGE_ID

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SetAttribute) or (other.node, other.key, other.field) != (
                self.node, self.key, self.field):
            return False
        self.new = other.new
        return True


def set_param(doc: Document, node: str, name: str, value: Any) -> SetAttribute | None:
    """The command that sets parameter `name` of `node` (None: back to torch's default)."""
    old = doc.graph.nodes[node].get("params", {})
    new = dict(old)
    if value is None:
        new.pop(name, None)
    else:
        new[name] = value
    if new == old:
        return None
    return SetAttribute(doc, node, "params", old, new, f"Change {name}")


class Rename(QUndoCommand):
    def __init__(self, doc: Document, old: str, new: str) -> None:
        super().__init__(f"Rename {old} to {new}")
        self.doc, self.old, self.new = doc, old, new

    def redo(self) -> None:
        self.doc.rename(self.old, self.new)

    def undo(self) -> None:
        self.doc.rename(self.new, self.old)


class SetTraining(QUndoCommand):
    def __init__(self, doc: Document, old: dict[str, Any], new: dict[str, Any],
                 text: str) -> None:
        super().__init__(text)
        self.doc, self.old, self.new = doc, copy.deepcopy(old), copy.deepcopy(new)

    def redo(self) -> None:
        self.doc.set_training(self.new)

    def undo(self) -> None:
        self.doc.set_training(self.old)
