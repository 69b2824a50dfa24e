"""Every change to a document is one undoable command, named for the Edit menu."""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtGui import QUndoCommand

from layerlab.app.document import Document
from layerlab.core.groups import KEY as GROUP_KEY
from layerlab.core.groups import GroupData

Edge = tuple[str, str, dict[str, Any]]


class AddNodes(QUndoCommand):
    """Add nodes and the edges among them (a palette drop, a paste), and the groups that
    came with them (a pasted group)."""

    def __init__(self, doc: Document, nodes: dict[str, dict[str, Any]], edges: list[Edge],
                 text: str, groups: dict[str, GroupData] | None = None) -> None:
        super().__init__(text)
        self.doc, self.nodes, self.edges = doc, copy.deepcopy(nodes), copy.deepcopy(edges)
        self.groups = copy.deepcopy(groups or {})
        self.order: tuple[list[str], list[tuple[str, str]]] | None = None

    def redo(self) -> None:
        self.order = (list(self.doc.graph), self.doc.edge_order())
        with self.doc.changes():
            for group, data in self.groups.items():
                self.doc.set_group(group, data)
            for node, data in self.nodes.items():
                self.doc.add_node(node, data)
            for src, dst, data in self.edges:
                self.doc.add_edge(src, dst, data)

    def undo(self) -> None:
        with self.doc.changes():
            for node in self.nodes:
                self.doc.remove_node(node)
            for group in self.groups:
                self.doc.set_group(group, None)
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
    def __init__(self, doc: Document, source: str, target: str, port: int | None,
                 out_port: int = 0) -> None:
        super().__init__(f"Connect {source} → {target}")
        self.doc, self.source, self.target = doc, source, target
        self.data = {} if port is None else {"port": port}
        if out_port:  # output ports other than the first (Split, Chunk); 0 is not written
            self.data["out_port"] = out_port

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
    Each committed value is its own undo step (5 → 16 → 7 undoes in two steps to 5)."""

    def __init__(self, doc: Document, node: str, key: str, old: Any, new: Any,
                 text: str) -> None:
        super().__init__(text)
        self.doc, self.node, self.key = doc, node, key
        self.old, self.new = copy.deepcopy(old), copy.deepcopy(new)
        self.order = list(doc.graph.nodes[node])  # undo puts a removed key back in its place

    def redo(self) -> None:
        self.doc.set_attr(self.node, self.key, self.new)

    def undo(self) -> None:
        self.doc.set_attr(self.node, self.key, self.old)
        data = self.doc.graph.nodes[self.node]
        ordered = {k: data[k] for k in self.order if k in data}
        ordered.update((k, v) for k, v in data.items() if k not in ordered)
        data.clear()
        data.update(ordered)


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


class EditGroups(QUndoCommand):
    """Group, ungroup, collapse, expand or rename: the nodes' memberships and the groups'
    own data change together; undo restores both, in their order, so the file comes back
    byte for byte."""

    def __init__(self, doc: Document, members: dict[str, str | None],
                 groups: dict[str, GroupData | None], text: str) -> None:
        super().__init__(text)
        self.doc = doc
        g, known = doc.graph, doc.project.groups
        self.members = {n: (g.nodes[n].get(GROUP_KEY), new) for n, new in members.items()}
        self.groups = {k: (copy.deepcopy(known.get(k)), copy.deepcopy(v))
                       for k, v in groups.items()}
        self.key_order = {n: list(g.nodes[n]) for n in members}
        self.group_order = list(known)

    def redo(self) -> None:
        self._apply(1)

    def undo(self) -> None:
        self._apply(0)
        # the same keys as before redo, put back in their order (not an observable change)
        project = self.doc.project
        project.groups = {k: project.groups[k] for k in self.group_order}
        for node, order in self.key_order.items():
            data = self.doc.graph.nodes[node]
            items = [(k, data[k]) for k in order]
            data.clear()
            data.update(items)

    def _apply(self, which: int) -> None:
        with self.doc.changes():
            for group, pair in self.groups.items():
                if pair[which] is not None:
                    self.doc.set_group(group, pair[which])
            for node, pair in self.members.items():
                self.doc.set_attr(node, GROUP_KEY, pair[which])
            for group, pair in self.groups.items():
                if pair[which] is None:
                    self.doc.set_group(group, None)
