"""Attention you can see: one small heatmap per head, query positions on the rows and key
positions on the columns, each labelled by its token; and the Attention tab of the
step-through dock, which shows the maps its traced step kept for the node in view.

Weights run from white (0) to purple (1) on the same scale for every head, so heads can be
compared; cells that causal attention masks (a later token) are grey, not white, so a
weight that is 0 because of the mask reads differently from one the model learnt to be
small. Hovering a cell says which query reads which key, and how much.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from layerlab.core.attention_maps import AttentionMaps, trace_maps

if TYPE_CHECKING:
    from layerlab.app.stepper_dock import StepperDock

CMAP = pg.ColorMap(pos=[0.0, 1.0], color=[(255, 255, 255), (91, 33, 160)])
MASKED = (205, 205, 210, 255)  # a cell causal attention never reads
ROW_PX, COLUMN_PX = 13, 11  # room a tick label needs: one line; one character


def ticks(labels: tuple[str, ...], room: int, indexed: bool) -> list[tuple[float, str]]:
    """Each position's label at its cell's centre; where fewer than all fit in `room`
    labels, every k-th, written with its position (`indexed`: "12:a") or as it alone."""
    step = max(1, math.ceil(len(labels) / max(room, 1)))
    if step == 1:
        return [(i + 0.5, text) for i, text in enumerate(labels)]
    return [(i + 0.5, f"{i}:{text}" if indexed else str(i))
            for i, text in enumerate(labels) if i % step == 0]


def colours(weights: np.ndarray, causal: bool) -> np.ndarray:
    """RGBA bytes [T, T, 4] of one head's map, masked cells grey."""
    rgba = CMAP.map(np.clip(weights, 0.0, 1.0).reshape(-1), mode="byte").reshape(
        *weights.shape, 4)
    if causal:
        rgba[np.triu(np.ones(weights.shape, dtype=bool), 1)] = MASKED
    return rgba


def grid(heads: int, width: int, height: int) -> tuple[int, float]:
    """The number of columns that gives each head's square plot the most room, and that
    room's side in pixels."""
    def side(columns: int) -> float:
        return min(width / columns, height / math.ceil(heads / columns))
    columns = max(range(1, max(heads, 1) + 1), key=side)
    return columns, side(columns)


class HeadsView(QWidget):
    """The maps of one node for one sample: heads side by side in a grid."""

    def __init__(self, name: str = "attentionHeads") -> None:
        super().__init__()
        self.setObjectName(name)
        self.setAccessibleName("Attention maps per head")
        self.setToolTip("Row i: how much query token i reads each key token (a row sums "
                        "to 1); white 0, purple 1; grey: masked (a later token)")
        self.setMinimumSize(220, 180)
        self.values = np.zeros((0, 0, 0))  # [heads, T, T] as shown
        self.labels: tuple[str, ...] = ()
        self.causal = False
        self._laid: tuple[int, list, list] = (0, [], [])
        self.view = pg.GraphicsLayoutWidget()
        self.view.setObjectName(f"{name}Plots")
        self.view.setBackground("w")
        self.plots: list[pg.PlotItem] = []
        self.title = QLabel()
        self.title.setObjectName(f"{name}Title")
        self.title.setWordWrap(True)
        self.hover = QLabel("Hover a cell to read its weight.")
        self.hover.setObjectName(f"{name}Hover")
        self.hover.setAccessibleName("Weight under the pointer")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.hover)
        self.view.scene().sigMouseMoved.connect(self._moved)

    def show_maps(self, maps: AttentionMaps, sample: int, title: str) -> None:
        """Every head of `maps` for one of its samples."""
        self.values, self.labels = maps.weights[sample].numpy(), maps.labels[sample]
        self.causal = maps.causal
        self.title.setText(title)
        self._lay_out()

    def _plan(self) -> tuple[int, list[tuple[float, str]], list[tuple[float, str]]]:
        """Columns, and the row and column tick labels that fit the view's size."""
        columns, room = grid(len(self.values), self.view.width(), self.view.height())
        room -= 60  # the axes' share of each head's room
        left = ticks(self.labels, int(room // ROW_PX), indexed=True)
        every = len(left) == len(self.labels)  # one label per column too, where they fit
        bottom = ticks(self.labels, int(room // COLUMN_PX) if every else
                       int(room // (3 * COLUMN_PX)), indexed=False)
        return columns, left, bottom

    def _lay_out(self) -> None:
        """One plot per head, in as many columns as make the cells largest."""
        self.view.clear()
        self.plots = []
        self._laid = self._plan()
        columns, left, bottom = self._laid
        steps = self.values.shape[-1]
        for h in range(len(self.values)):
            plot = self.view.addPlot(row=h // columns, col=h % columns,
                                     title=f"<span style='font-size:9pt'>head {h}</span>")
            plot.invertY(True)
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.setMouseEnabled(x=False, y=False)
            plot.setAspectLocked(True)
            plot.addItem(pg.ImageItem(colours(self.values[h], self.causal),
                                      axisOrder="row-major"))
            plot.getAxis("left").setTicks([left])
            plot.getAxis("bottom").setTicks([bottom])
            plot.setRange(xRange=(0, steps), yRange=(0, steps), padding=0.02)
            self.plots.append(plot)
        self.hover.setText("Hover a cell to read its weight.")

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Laid out again only when the columns or the labels that fit change."""
        super().resizeEvent(event)
        if self.plots and self._plan() != self._laid:
            self._lay_out()

    def clear(self, message: str) -> None:
        self.view.clear()
        self.plots = []
        self.values = np.zeros((0, 0, 0))
        self.labels = ()
        self.title.setText(message)

    def describe(self, head: int, row: int, column: int) -> str:
        """What one cell says, in words."""
        q, k = self.labels[row], self.labels[column]
        if self.causal and column > row:
            return f"head {head}: query {q!r} (position {row}) cannot read the later key " \
                   f"{k!r} (position {column}): masked"
        return f"head {head}: query {q!r} (position {row}) reads key {k!r} (position " \
               f"{column}) with weight {self.values[head, row, column]:.3f}"

    def _moved(self, pos: QPointF) -> None:
        for head, plot in enumerate(self.plots):
            if plot.vb.sceneBoundingRect().contains(pos):
                point = plot.vb.mapSceneToView(pos)
                row, column = math.floor(point.y()), math.floor(point.x())
                steps = self.values.shape[-1]
                if 0 <= row < steps and 0 <= column < steps:
                    self.hover.setText(self.describe(head, row, column))
                return


class AttentionTab(QWidget):
    """The step-through's Attention tab: the node in view's maps, for the sample chosen in
    the chain-rule tab (a placeholder elsewhere)."""

    def __init__(self, dock: StepperDock) -> None:
        super().__init__()
        self.setObjectName("stepAttention")
        self.setAccessibleName("Attention")
        self.dock = dock
        self.heads = HeadsView("stepAttentionHeads")
        layout = QVBoxLayout(self)
        layout.addWidget(self.heads)
        self.maps: AttentionMaps | None = None
        self.index = dock.tabs.addTab(self, "Attention")
        dock.tabs.setTabToolTip(self.index, "Each head's attention weights for the sample "
                                "(attention nodes only): which tokens each token reads")
        dock.stepper.eventChanged.connect(self._event)
        dock.stepper.modeChanged.connect(lambda active: active or self._event(-1))
        dock.sample.valueChanged.connect(lambda _: self._show())

    def _event(self, index: int) -> None:
        stepper = self.dock.stepper
        self.maps = None
        if index >= 0 and stepper.trace is not None and stepper.graph is not None:
            node = stepper.events[index].node
            self.maps = trace_maps(stepper.trace, stepper.graph, node)
        self._show()

    def _show(self) -> None:
        maps, sample = self.maps, self.dock.sample.value()
        if maps is None:
            self.heads.clear("Step to an attention node to see its heads.")
        elif sample >= len(maps.weights):
            self.heads.clear(f"Maps were kept for the first {len(maps.weights)} samples "
                             f"only (long sequences); choose one of those.")
        else:
            self.heads.show_maps(maps, sample, f"<b>{maps.node}</b>, sample {sample}: "
                                 f"{len(maps.weights[sample])} heads; row: a query token, "
                                 "column: a key token it reads")


def install(dock: StepperDock) -> AttentionTab:
    """Add the Attention tab to the step-through dock."""
    return AttentionTab(dock)
