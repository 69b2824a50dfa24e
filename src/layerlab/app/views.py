"""What a run shows besides curves: the dataset, the decision boundary, and the results."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QLabel,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

CLASS_BRUSHES = ["#4c9be8", "#e8594c", "#2fa37a", "#c98b2a", "#8a63c9", "#2b9db3",
                 "#d4a017", "#7a7a7a", "#b5487d", "#5b6ee1"]
# one QBrush/QPen per class, shared by every point: a colour name per point made pyqtgraph
# build a brush per point (1,000 spiral points: ~300 ms against ~25 ms)
_BRUSHES = np.array([pg.mkBrush(c) for c in CLASS_BRUSHES], dtype=object)
_PENS = np.array([pg.mkPen(c, width=1.5) for c in CLASS_BRUSHES], dtype=object)
BOUNDARY_LUT = pg.ColorMap([0.0, 0.5, 1.0], ["#9cc3ef", "#f4f4f4", "#efa49c"]).getLookupTable(
    0.0, 1.0, 256)


def montage(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """Images (N, H, W) tiled into one (rows·H, columns·W) picture with 1-pixel gaps."""
    n, h, w = images.shape
    rows = max(1, -(-n // columns))
    out = np.full((rows * (h + 1), columns * (w + 1)), np.nan, dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = image
    return out


def _image_plot(name: str) -> tuple[pg.PlotWidget, pg.ImageItem]:
    plot = pg.PlotWidget()
    plot.setObjectName(name)
    plot.setAccessibleName(name)
    plot.setAspectLocked(True)
    plot.invertY(True)
    plot.hideAxis("left")
    plot.hideAxis("bottom")
    image = pg.ImageItem()
    image.setLookupTable(pg.colormap.get("CET-L1").getLookupTable())
    plot.addItem(image)
    return plot, image


class BoundaryView(pg.PlotWidget):
    """The model's prediction over the input plane, with the data on top (train: filled,
    validation: hollow)."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("boundaryPlot")
        self.setAccessibleName("Decision boundary")
        self.setAspectLocked(True)
        self.image = pg.ImageItem()
        self.image.setLookupTable(BOUNDARY_LUT)
        self.image.setZValue(-10)
        self.addItem(self.image)
        self.train_points = pg.ScatterPlotItem(size=5, pen=pg.mkPen("#333333", width=0.5))
        self.val_points = pg.ScatterPlotItem(size=7, brush=None)
        self.addItem(self.train_points)
        self.addItem(self.val_points)
        self.last_image: np.ndarray | None = None

    def set_points(self, x: np.ndarray, y: np.ndarray, val: np.ndarray) -> None:
        classes = np.asarray(y).astype(int) % len(CLASS_BRUSHES)
        train = np.ones(len(x), dtype=bool)
        train[val] = False
        self.train_points.setData(pos=x[train], brush=_BRUSHES[classes[train]])
        self.val_points.setData(pos=x[~train], pen=_PENS[classes[~train]])

    def clear_boundary(self) -> None:
        self.image.clear()
        self.train_points.clear()
        self.val_points.clear()
        self.last_image = None

    def set_boundary(self, image: np.ndarray, extent: tuple[float, float, float, float]
                     ) -> None:
        x0, x1, y0, y1 = extent
        self.last_image = image
        self.image.setImage(image.T, levels=(0.0, 1.0))
        self.image.setRect(x0, y0, x1 - x0, y1 - y0)


class DatasetPreview(QStackedWidget):
    """A scatter of 2-D points, a grid of sample images, or a table of CSV rows. Clicking a
    point or an image chooses that sample (for step-through)."""

    sampleChosen = Signal(int)
    COLUMNS = 8

    def __init__(self) -> None:
        super().__init__()
        self._tile = (0, 0)
        self.setObjectName("datasetPreview")
        self.setAccessibleName("Dataset preview")
        self.scatter = pg.PlotWidget()
        self.scatter.setAspectLocked(True)
        self.points = pg.ScatterPlotItem(size=5, hoverable=True)
        self.points.sigClicked.connect(
            lambda item, points, ev: self.sampleChosen.emit(int(points[0].index()))
            if len(points) else None)
        self.scatter.addItem(self.points)
        self.scatter.setToolTip("Click a point to step through that sample")
        self.images_plot, self.images = _image_plot("datasetImages")
        self.images_plot.setToolTip("Click an image to step through that sample")
        self.images_plot.scene().sigMouseClicked.connect(self._image_clicked)
        self.table = QTableWidget()
        self.message = QLabel()
        self.message.setWordWrap(True)
        for widget in (self.scatter, self.images_plot, self.table, self.message):
            self.addWidget(widget)

    def show_points(self, x: np.ndarray, y: np.ndarray) -> None:
        self.points.setData(pos=x, brush=_BRUSHES[np.asarray(y).astype(int) % 10])
        self.setCurrentWidget(self.scatter)

    def show_images(self, images: np.ndarray) -> None:
        self._tile = images.shape[1:3]
        self.images.setImage(montage(images[:64], self.COLUMNS).T)
        self.setCurrentWidget(self.images_plot)

    def image_index(self, x: float, y: float) -> int | None:
        """The sample under image coordinates (x, y) of the montage."""
        h, w = self._tile
        if not h or x < 0 or y < 0:
            return None
        column, row = int(x // (w + 1)), int(y // (h + 1))
        return row * self.COLUMNS + column if column < self.COLUMNS else None

    def _image_clicked(self, event: object) -> None:
        point = self.images.mapFromScene(event.scenePos())  # type: ignore[attr-defined]
        index = self.image_index(point.x(), point.y())
        if index is not None:
            self.sampleChosen.emit(index)

    def show_table(self, header: list[str], rows: list[list[float | str]]) -> None:
        self.table.setColumnCount(len(header))
        self.table.setHorizontalHeaderLabels(header)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                text = value if isinstance(value, str) else f"{value:g}"  # text datasets
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.setCurrentWidget(self.table)

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.setCurrentWidget(self.message)


class ResultsView(QWidget):
    """Confusion matrix (click a cell for its samples), validation samples with true and
    predicted labels, and weight histograms per layer."""

    cellSamples = Signal(int, int, object)  # true, predicted, sample indices

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("resultsView")
        self.matrix = QTableWidget()
        self.matrix.setObjectName("confusionMatrix")
        self.matrix.setAccessibleName("Confusion matrix (rows: true class)")
        self.matrix.cellClicked.connect(self._cell)
        self.caption = QLabel("Train a model to see its results on the validation set.")
        self.caption.setObjectName("resultsCaption")
        self.caption.setWordWrap(True)
        self.samples_plot, self.samples = _image_plot("resultSamples")
        self.layer = QComboBox()
        self.layer.setObjectName("histogramLayer")
        self.layer.setAccessibleName("Layer for the weight histogram")
        self.layer.currentTextChanged.connect(self._histogram)
        self.hist = pg.PlotWidget(title="weights")
        self.hist.setObjectName("weightHistogram")
        layout = QVBoxLayout(self)
        layout.addWidget(self.caption)
        layout.addWidget(self.matrix, 2)
        layout.addWidget(self.samples_plot, 2)
        layout.addWidget(self.layer)
        layout.addWidget(self.hist, 1)
        self.results: object | None = None

    def show_results(self, results: object) -> None:
        self.results = results
        confusion = results.confusion  # type: ignore[attr-defined]
        classes = results.classes  # type: ignore[attr-defined]
        k = len(confusion)
        self.matrix.setRowCount(k)
        self.matrix.setColumnCount(k)
        self.matrix.setHorizontalHeaderLabels([f"→{c}" for c in classes])
        self.matrix.setVerticalHeaderLabels(list(classes))
        peak = max(1, int(confusion.max()))
        for t in range(k):
            for p in range(k):
                item = QTableWidgetItem(str(int(confusion[t, p])))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                shade = int(255 - 140 * confusion[t, p] / peak)
                item.setBackground(pg.mkColor(shade, shade, 255) if t == p else
                                   pg.mkColor(255, shade, shade))
                item.setForeground(pg.mkColor("#000000"))
                self.matrix.setItem(t, p, item)
        outside = results.outside  # type: ignore[attr-defined]
        total = int(confusion.sum()) + outside
        accuracy = np.trace(confusion) / max(1, total)
        extra = (f" {outside} prediction(s) named an output beyond the dataset's classes and "
                 "are not in the table." if outside else "")
        self.caption.setText(f"Validation accuracy {100 * accuracy:.2f}% on {total} samples "
                             "(rows: true class, columns: predicted). Click a cell to see its "
                             f"samples.{extra}")
        self.layer.clear()
        self.layer.addItems(list(results.histograms))  # type: ignore[attr-defined]
        if results.samples is not None:  # type: ignore[attr-defined]
            self._show_samples(np.arange(min(64, len(results.targets))))  # type: ignore

    def clear_results(self) -> None:
        self.results = None
        self.matrix.setRowCount(0)
        self.matrix.setColumnCount(0)
        self.samples.clear()
        self.layer.clear()
        self.hist.clear()
        self.caption.setText("Train a model to see its results on the validation set.")

    def samples_of(self, true: int, predicted: int) -> np.ndarray:
        r = self.results
        return np.where((r.targets == true) & (r.predicted == predicted))[0]  # type: ignore

    def _cell(self, row: int, column: int) -> None:
        if self.results is None:
            return
        indices = self.samples_of(row, column)
        self.cellSamples.emit(row, column, indices)
        if self.results.samples is not None:  # type: ignore[attr-defined]
            self._show_samples(indices[:64])

    def _show_samples(self, indices: np.ndarray) -> None:
        r = self.results
        if len(indices) == 0 or r is None:
            self.samples.clear()
            return
        self.samples.setImage(montage(r.samples[indices]).T)  # type: ignore[attr-defined]
        pairs = ", ".join(f"{r.classes[r.targets[i]]}→{r.classes[r.predicted[i]]}"  # type: ignore
                          for i in indices[:16])
        self.samples_plot.setToolTip(f"true→predicted: {pairs}")

    def _histogram(self, key: str) -> None:
        self.hist.clear()
        if self.results is None or key not in self.results.histograms:  # type: ignore
            return
        counts, edges = self.results.histograms[key]  # type: ignore[attr-defined]
        self.hist.plot(edges, counts, stepMode="center", fillLevel=0,
                       brush=pg.mkBrush("#4c9be880"))
        self.hist.setTitle(f"weights of {key}")
