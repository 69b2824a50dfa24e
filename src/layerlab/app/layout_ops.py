"""Auto-layout as one undoable command: positions, bend points and direction together."""

from __future__ import annotations

import copy

from PySide6.QtGui import QUndoCommand

from layerlab.app.document import Document
from layerlab.core.layout import NODE_SIZE, layered

Bends = dict[tuple[str, str], list[list[float]] | None]


class ApplyLayout(QUndoCommand):
    """Move every node and re-route every edge as the layered layout says."""

    def __init__(self, doc: Document, direction: str, text: str = "Auto-Layout") -> None:
        super().__init__(text)
        self.doc = doc
        g = doc.graph
        layout = layered(g, direction, NODE_SIZE)
        self.old_direction, self.new_direction = doc.project.direction, direction
        self.old_pos = {n: copy.deepcopy(g.nodes[n].get("pos", [0, 0])) for n in g}
        self.new_pos = {n: [round(x), round(y)] for n, (x, y) in layout.positions.items()}
        self.old_bends: Bends = {(u, v): copy.deepcopy(d.get("bends"))
                                 for u, v, d in g.edges(data=True)}
        self.new_bends: Bends = {
            edge: [[round(x), round(y)] for x, y in layout.bends[edge]]
            if edge in layout.bends else None for edge in self.old_bends}

    def redo(self) -> None:
        self._apply(self.new_direction, self.new_pos, self.new_bends)

    def undo(self) -> None:
        self._apply(self.old_direction, self.old_pos, self.old_bends)

    def _apply(self, direction: str, positions: dict[str, list[float]], bends: Bends) -> None:
        self.doc.set_direction(direction)
        for node, pos in positions.items():
            self.doc.set_pos(node, pos)
        for (u, v), points in bends.items():
            self.doc.set_bends(u, v, points)


def auto_layout(doc: Document, direction: str | None = None) -> None:
    """Lay the graph out in layers (Ctrl+Shift+L), flowing `direction` (default: the
    project's); one undo step."""
    direction = direction or doc.project.direction
    if doc.structure_locked or (not doc.graph and direction == doc.project.direction):
        return
    text = "Auto-Layout" if direction == doc.project.direction else \
        f"Lay Out {'Top to Bottom' if direction == 'TB' else 'Left to Right'}"
    doc.undo_stack.push(ApplyLayout(doc, direction, text))
