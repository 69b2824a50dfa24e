"""The causal mask of a CausalSelfAttention or GPTBlock node, drawn in the inspector: a T×T
grid (T from the node's inferred input shape) whose filled cells are the keys each query
may read and whose grey cells are the later ones, set to −∞ before the softmax."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from layerlab.app.document import Document
from layerlab.core.attention_maps import CAUSAL_TYPES

MAX_STEPS = 32  # positions drawn at most; a longer sequence shows its first MAX_STEPS
ALLOWED, MASKED = QColor("#7b3fc4"), QColor("#d5d5da")
SIDE = 160  # pixels of the drawn grid


def steps_of(doc: Document, node: str) -> int | None:
    """T, the sequence length entering `node`, when its shape is known."""
    ctx = doc.analysis.contexts.get(node)
    if ctx is None or not ctx.in_shapes or len(ctx.in_shapes[0]) != 2:
        return None
    return int(ctx.in_shapes[0][0])


class MaskGrid(QWidget):
    """Cell (i, j) filled when query i may read key j (j ≤ i), grey otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("causalMaskGrid")
        self.setAccessibleName("Causal mask")
        self.setToolTip("Row i is query position i, column j key position j: purple cells "
                        "are read (j ≤ i), grey cells are masked (a later position)")
        self.steps = 0
        self.setFixedSize(SIDE + 2, SIDE + 2)

    def cell(self, row: int, column: int) -> QRectF:
        """Where cell (row, column) is drawn."""
        size = SIDE / max(self.steps, 1)
        return QRectF(1 + column * size, 1 + row * size, size, size)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        pen = QPen(QColor("white"))
        pen.setWidthF(1.0 if self.steps <= 16 else 0.0)
        painter.setPen(pen if self.steps <= 16 else Qt.PenStyle.NoPen)
        for row in range(self.steps):
            for column in range(self.steps):
                painter.setBrush(ALLOWED if column <= row else MASKED)
                painter.drawRect(self.cell(row, column))
        painter.end()


class CausalMaskView(QWidget):
    """The grid and one line saying what it means; redrawn when the input shape changes."""

    def __init__(self, doc: Document, node: str) -> None:
        super().__init__()
        self.setObjectName("causalMask")
        self.setAccessibleName("Causal mask")
        self.doc, self.node = doc, node
        self.grid = MaskGrid()
        self.caption = QLabel()
        self.caption.setObjectName("causalMaskCaption")
        self.caption.setAccessibleName("What the causal mask does")
        self.caption.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(QLabel("<b>causal mask</b>"))
        layout.addWidget(self.grid)
        layout.addWidget(self.caption)
        doc.analysisChanged.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        steps = steps_of(self.doc, self.node) if self.node in self.doc.graph else None
        self.grid.steps = min(steps or 0, MAX_STEPS)
        self.grid.setVisible(bool(steps))
        self.grid.update()
        if not steps:
            self.caption.setText("The mask is T×T once the input's shape [T, D] is known.")
            return
        shown = f" (the first {MAX_STEPS} of {steps} positions drawn)" if steps > MAX_STEPS \
            else ""
        self.caption.setText(f"{steps}×{steps}{shown}, a row per query t, a column per "
                             "key: t reads keys 0…t only; the grey scores are set to −∞ "
                             "before the softmax, so their weight is 0.")


def mask_view(doc: Document, node: str) -> CausalMaskView | None:
    """The mask for a causal attention node, else None (the inspector's hook)."""
    return CausalMaskView(doc, node) if doc.graph.nodes[node].get("type") in CAUSAL_TYPES \
        else None
