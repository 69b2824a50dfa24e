"""Edit ▸ Open Block into Parts (Ctrl+Shift+B, and the node's context menu): a GPTBlock node
becomes a group of its parts (core/gpt_parts.py) in one undo step. The parts stand in a
column where the block stood and the nodes after it move along to make room; a trained
model's weights follow, renamed by key, on redo and on undo (app/generate_ops.py carries
them in the torch thread), so the opened model computes what the block computed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import networkx as nx
from PySide6.QtCore import QObject
from PySide6.QtGui import QKeySequence, QUndoCommand
from PySide6.QtWidgets import QMenu

from layerlab.app.canvas.items import NODE_WIDTH
from layerlab.app.document import Document
from layerlab.core.gpt_parts import open_block
from layerlab.core.groups import group_of, members, new_group
from layerlab.core.stages import START_KEY

if TYPE_CHECKING:
    from layerlab.app.main_window import MainWindow

SHORTCUT = "Ctrl+Shift+B"
STEP = {"TB": 110, "LR": NODE_WIDTH + 50}  # between parts, along the flow (pixels)
Carry = Callable[[nx.DiGraph, dict[str, str]], None]  # graph before, key renames


def opened_layout(graph: nx.DiGraph, opened: nx.DiGraph, node: str, parts: list[str],
                  direction: str) -> dict[str, list[float]]:
    """Where every node that moves goes: the parts in a column (a row, left to right)
    from the block's place, and each node further along the flow pushed on by the
    column's length."""
    axis = 1 if direction == "TB" else 0
    start = list(graph.nodes[node].get("pos", [0.0, 0.0]))
    step = STEP["TB" if axis else "LR"]
    moved: dict[str, list[float]] = {}
    for k, part in enumerate(parts):
        pos = list(start)
        pos[axis] = start[axis] + step * k
        moved[part] = pos
    for other, pos in opened.nodes(data="pos"):
        if other not in moved and pos is not None and pos[axis] > start[axis]:
            moved[other] = list(pos)
            moved[other][axis] = pos[axis] + step * (len(parts) - 1)
    return moved


class OpenBlock(QUndoCommand):
    """The block out, its parts and their group in, the nodes after it moved: one step;
    undo puts back every node, edge, position and order, so the file returns byte for
    byte."""

    def __init__(self, doc: Document, node: str, carry: Carry) -> None:
        super().__init__(f"Open {node} into Parts")
        self.doc, self.node, self.carry = doc, node, carry
        g = doc.graph
        opened, self.mapping = open_block(g, node)
        self.parts = [n for n in opened if n not in g]
        if g.nodes[node].get(START_KEY) is True:  # a pinned pipeline stage starts at the
            opened.nodes[self.parts[0]][START_KEY] = True  # first part, as at the block
        moves = opened_layout(g, opened, node, self.parts, doc.project.direction)
        for part in self.parts:
            opened.nodes[part]["pos"] = moves[part]
        self.moves = {n: (copy.deepcopy(g.nodes[n].get("pos")), p) for n, p in moves.items()
                      if n in g}
        self.block = copy.deepcopy(dict(g.nodes[node]))
        self.block_edges = [(u, v, copy.deepcopy(d)) for u, v, d in g.edges(data=True)
                            if node in (u, v)]
        self.part_data = {n: copy.deepcopy(dict(opened.nodes[n])) for n in self.parts}
        inside = set(self.parts)
        self.part_edges = [(u, v, copy.deepcopy(d)) for u, v, d in opened.edges(data=True)
                           if u in inside or v in inside]
        self.before = (list(g), doc.edge_order())
        self.after = (list(opened), list(opened.edges()))
        self.group = new_group(f"{node} (GPTBlock)", collapsed=False)

    def redo(self) -> None:
        before = copy.deepcopy(self.doc.graph)
        with self.doc.changes():
            self.doc.remove_node(self.node)
            for part, data in self.part_data.items():
                self.doc.add_node(part, data)
            for source, target, data in self.part_edges:
                self.doc.add_edge(source, target, data)
            self.doc.set_group(self.node, self.group)
            self.doc.restore_order(*self.after)
        for other, (_, new) in self.moves.items():
            self.doc.set_pos(other, new)
        self.carry(before, self.mapping)

    def undo(self) -> None:
        before = copy.deepcopy(self.doc.graph)
        with self.doc.changes():
            for part in self.parts:
                self.doc.remove_node(part)
            self.doc.set_group(self.node, None)
            self.doc.add_node(self.node, self.block)
            for source, target, data in self.block_edges:
                self.doc.add_edge(source, target, data)
            self.doc.restore_order(*self.before)
        for other, (old, _) in self.moves.items():
            self.doc.set_pos(other, old)
        self.carry(before, {new: old for old, new in self.mapping.items()})


def openable(doc: Document, nodes: list[str]) -> str | None:
    """The one selected GPTBlock that can be opened now, if any."""
    if len(nodes) != 1 or doc.structure_locked:
        return None
    node = nodes[0]
    if node not in doc.graph:  # its item is still selected while it is being removed
        return None
    if doc.graph.nodes[node].get("type") != "GPTBlock" or node not in doc.analysis.shapes:
        return None
    return node


def refusal(doc: Document, node: str) -> str | None:
    """Why the block cannot become a group of parts here, in one sentence, or None."""
    g = doc.graph
    outer = group_of(g, node)
    if outer is not None:
        name = doc.project.groups.get(outer, {}).get("name", outer)
        return (f"{node} is inside group {name}, and a layer is in one group at most: "
                "ungroup it first (Edit ▸ Ungroup), then open it.")
    if node in doc.project.groups:
        return f"A group with the id {node} exists already: rename the block, then open it."
    taken = [part for part in members(open_block(g, node)[0], node) if part in g]
    if taken:
        return (f"Its parts would be named like layers that exist ({', '.join(taken)}): "
                f"rename those, then open {node}.")
    return None


class BlockOpener(QObject):
    """The action and its state; a child of the window, so that the document's and the
    scene's signals stop reaching it when the window goes."""

    def __init__(self, window: MainWindow, carry: Carry) -> None:
        super().__init__(window)
        self.window, self.carry = window, carry
        self.action = window.action(
            "actionOpenBlock", "&Open Block into Parts", self.run, QKeySequence(SHORTCUT),
            "Replace the selected GPTBlock by a group of its parts (LayerNorm, attention, "
            "residual Add, MLP), weights carried over")
        window.menuBar().findChild(QMenu, "editMenu").addAction(self.action)  # after Ungroup
        window.view.context_actions.append(self.action)
        window.scene.selectionChanged.connect(self.update)
        window.doc.locked.connect(self.update)
        window.doc.analysisChanged.connect(self.update)
        self.update()

    def update(self) -> None:
        self.action.setEnabled(openable(self.window.doc, self.window.scene.selected_nodes())
                               is not None)

    def run(self) -> None:
        doc, bar = self.window.doc, self.window.statusBar()
        node = openable(doc, self.window.scene.selected_nodes())
        if node is None:
            bar.showMessage("Select one GPTBlock node (with a known input shape) to open it "
                            "into its parts.", 6000)
            return
        problem = refusal(doc, node)
        if problem is not None:
            bar.showMessage(problem, 10_000)
            return
        doc.undo_stack.push(OpenBlock(doc, node, self.carry))
        bar.showMessage(f"{node} opened into its parts (Ctrl+Z closes it again).", 6000)


def install(window: MainWindow, carry: Carry) -> BlockOpener:
    """Edit ▸ Open Block into Parts, in the node menu too; enabled on one GPTBlock."""
    return BlockOpener(window, carry)
