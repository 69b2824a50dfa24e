"""A heatmap of one tensor with a colour bar, its axes named and ticked at whole indices,
and a click on a cell reported as (row, column)."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QGraphicsRectItem, QLabel, QVBoxLayout, QWidget

from layerlab.app.views import montage

CMAP = pg.colormap.get("CET-D1")  # diverging: blue negative, white zero, red positive
MAX_TICKS = 6


def index_ticks(n: int) -> list[tuple[float, str]]:
    """At most MAX_TICKS whole indices (0, a round step, …), each at its cell's centre."""
    step = 1
    for candidate in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        step = candidate
        if -(-n // candidate) <= MAX_TICKS:
            break
    return [(i + 0.5, str(i)) for i in range(0, n, step)]


def as_matrix(t: np.ndarray) -> np.ndarray:
    """A tensor as rows × columns: a scalar or vector is one row; more dimensions are
    flattened after the first (row i is entry i of the first dimension)."""
    array = np.asarray(t, dtype=np.float64)
    if array.ndim <= 1:
        return array.reshape(1, -1)
    return array.reshape(array.shape[0], -1)


def cell_index(shape: tuple[int, ...], row: int, column: int) -> tuple[int, ...]:
    """The index into a tensor of `shape` that cell (row, column) of its as_matrix shows."""
    width = math.prod(shape[1:]) if len(shape) > 1 else max(1, math.prod(shape))
    flat = row * width + column if len(shape) > 1 else column
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def index_cell(shape: tuple[int, ...], index: tuple[int, ...]) -> tuple[int, int]:
    """The cell (row, column) of as_matrix that shows tensor entry `index`."""
    flat = int(np.ravel_multi_index(index, shape))
    if len(shape) <= 1:
        return 0, flat
    return divmod(flat, math.prod(shape[1:]))


class Heatmap(QWidget):
    """Values centred on zero (white), with the colour bar beside them and the title above
    (a label that wraps, so a long title never widens the plot past its room)."""

    cellClicked = Signal(int, int)  # row, column of the shown matrix

    def __init__(self, name: str, tooltip: str = "") -> None:
        super().__init__()
        self.setObjectName(name)
        self.setAccessibleName(name)
        if tooltip:
            self.setToolTip(tooltip)
        self.setMinimumSize(150, 120)
        self.title = QLabel()
        self.title.setObjectName("heatmapTitle")
        self.title.setWordWrap(True)
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.view = pg.GraphicsLayoutWidget()
        self.plot = self.view.addPlot()
        self.plot.invertY(True)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.bar = pg.ColorBarItem(values=(-1.0, 1.0), colorMap=CMAP, interactive=False,
                                   width=12)
        self.bar.setImageItem(self.image, insert_in=self.plot)
        self.bar.axis.setWidth(52)  # room for labels such as "-0.0025"
        self.values = np.zeros((0, 0))
        self.marker = QGraphicsRectItem(0, 0, 1, 1)
        pen = QPen(QColor("#111111"), 2)
        pen.setCosmetic(True)
        self.marker.setPen(pen)
        self.marker.setZValue(10)
        self.marker.hide()
        self.plot.addItem(self.marker)
        self.view.scene().sigMouseClicked.connect(self._clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)

    def show_tiles(self, images: np.ndarray, title: str) -> None:
        """Images (N, H, W), such as the channels of one sample, tiled row by row."""
        n = len(images)
        tiles = montage(images, math.ceil(math.sqrt(n)))
        self._paint(tiles, title)
        self.plot.setAspectLocked(True)
        for axis in ("left", "bottom"):
            self.plot.hideAxis(axis)
        self.plot.setRange(xRange=(0, tiles.shape[1]), yRange=(0, tiles.shape[0]),
                           padding=0.02)

    def show_matrix(self, values: np.ndarray, title: str, rows: str = "",
                    columns: str = "") -> None:
        """Show a rows × columns array (see as_matrix for other shapes)."""
        matrix = as_matrix(values)
        self._paint(matrix, title)
        self.plot.setAspectLocked(False)
        height, width = matrix.shape
        for axis, label, n in (("left", rows, height), ("bottom", columns, width)):
            self.plot.showAxis(axis)
            self.plot.setLabel(axis, label)
            self.plot.getAxis(axis).setTicks([index_ticks(n)])
        self.plot.setRange(xRange=(0, width), yRange=(0, height), padding=0.02)

    def mark(self, row: int, column: int) -> None:
        """Outline one cell (the weight being explained)."""
        self.marker.setRect(column, row, 1, 1)
        self.marker.show()

    def _paint(self, matrix: np.ndarray, title: str) -> None:
        self.values = matrix
        self.marker.hide()
        finite = matrix[np.isfinite(matrix)]
        bound = float(np.abs(finite).max()) if finite.size else 0.0
        bound = bound or 1.0
        self.image.setImage(np.nan_to_num(matrix, nan=0.0, posinf=bound, neginf=-bound),
                            autoLevels=False)
        self.bar.setLevels((-bound, bound))
        self.title.setText(title)

    def cell_centre(self, row: int, column: int) -> QPointF:
        """Where cell (row, column) is drawn, in the coordinates of the plot's view."""
        scene = self.image.mapToScene(QPointF(column + 0.5, row + 0.5))
        return self.view.mapFromScene(scene).toPointF()

    def _clicked(self, event: object) -> None:
        point = self.image.mapFromScene(event.scenePos())  # type: ignore[attr-defined]
        row, column = int(np.floor(point.y())), int(np.floor(point.x()))
        height, width = self.values.shape
        if 0 <= row < height and 0 <= column < width:
            self.cellClicked.emit(row, column)
