"""Training curves (pyqtgraph): every run overlaid in its own colour with its label in the
legend, smoothed as TensorBoard smooths, by step, epoch or training time; redrawn at a bounded
rate (on a timer, or on a live run's turns), downsampled and clipped to view so a million
points stay smooth."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QCoreApplication, QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QPaintEvent, QPixmap, QPixmapCache
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from layerlab.app import plot_export
from layerlab.app.plot_hover import Hover
from layerlab.app.plot_tools import AXES, RunData, Series, run_colour
from layerlab.core.records import StepRecord

__all__ = ["RunPlots", "run_colour"]

# Redraws cost the GUI thread Python time (pyqtgraph paints in Python), and during a run the
# training thread waits meanwhile (a live run's curves redraw on its turns: redraw_if_due):
# at most 5 a second, and at most DUTY of the time counting both the redraw and the paints
# that follow it (20 ms in all: one every 670 ms), keeps curves live and training near full
# speed (benchmarks/bench_window.py).
REDRAW_MS = 200
SLOWEST_REDRAW_MS = 2000
DUTY = 0.03
PAINT_ROUNDS = 4  # of queued updates and paints a turn's redraw sends at most
# pyqtgraph draws ~5 points per pixel by default; peak downsampling to one x-bin per pixel
# looks the same, and a 2-pixel antialiased pen costs Qt ~10 µs a point. With that and each
# line cached as a pixmap, ten runs of 5,000 steps take ~25-35 ms of CPU a live redraw
# instead of ~120 (benchmarks/bench_plots.py)
DOWNSAMPLE = 1.0
PIXMAP_CACHE_KB = 64 * 1024
SMOOTHING = 0.95  # the default: per-step losses of small batches are noisy


class _PaintClock(pg.GraphicsLayoutWidget):
    """The plots' view, counting the seconds its paints take: Qt paints after a redraw has
    returned, so the redraw pace learns their cost from here."""

    def __init__(self) -> None:
        super().__init__()
        self.painting = 0.0  # seconds spent painting since the pace last read it

    def paintEvent(self, event: QPaintEvent) -> None:
        start = time.perf_counter()
        super().paintEvent(event)
        self.painting += time.perf_counter() - start


def _plot(view: pg.GraphicsLayoutWidget, column: int, name: str, title: str,
          left: str) -> pg.PlotItem:
    plot = view.addPlot(row=0, col=column, title=title)
    plot.setObjectName(name)
    plot.setLabel("left", left)
    plot.showGrid(x=True, y=True, alpha=0.2)
    plot.setDownsampling(auto=True, mode="peak")
    plot.setClipToView(True)
    plot.disableAutoRange()  # ranges change in steps (see _fit): axes repaint rarely
    for side in ("left", "bottom"):
        axis = plot.getAxis(side)
        axis.enableAutoSIPrefix(False)
        # repainted when its range changes, not whenever a curve beside it does (pyqtgraph
        # draws ticks and labels in Python: most of a live redraw's paint)
        axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
    return plot


def _fit(plot: pg.PlotItem, curves: list[tuple[np.ndarray, np.ndarray]], log: bool,
         floor: float, fixed_y: tuple[float, float] | None = None) -> None:
    """Widen the view only when the data leave it (to a round x, 10% headroom in y),
    so that most redraws repaint the curves but not the axes, which cost far more."""
    xs = [x.max() for x, _y in curves if len(x)]
    ys = [y[np.isfinite(y) & ((y > 0) if log else True)] for _x, y in curves]
    ys = [y for y in ys if len(y)]
    if not xs or not ys:  # nothing to show: plain axes, not the reset's 1e-9 view
        if plot.viewRange()[0][1] < 1e-6:
            plot.setRange(xRange=(0, floor), yRange=fixed_y or (0, 1), padding=0)
        return
    (_x0, x1), (y0, y1) = plot.viewRange()
    top = max(xs)
    low, high = min(y.min() for y in ys), max(y.max() for y in ys)
    if log:
        low, high = np.log10(low), np.log10(high)
    if top > x1 or x1 > 8 * max(top, floor):
        plot.setXRange(0, max(floor, _nice(top * 1.05)), padding=0)
    span = max(high - low, 1e-6)
    if fixed_y is not None:
        if (y0, y1) != fixed_y:
            plot.setYRange(*fixed_y, padding=0)
    elif low < y0 or high > y1 or span < 0.4 * (y1 - y0):
        plot.setYRange(low - 0.1 * span, high + 0.1 * span, padding=0)


def _nice(value: float) -> float:
    """The least round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten) at
    or above `value`: a view that grows about twelve times a decade, not on every step."""
    power = 10 ** np.floor(np.log10(max(value, 1e-9)))
    return float(next(m * power for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
                      if m * power >= value * (1 - 1e-12)))


def _first_step(records: list[object]) -> int | None:
    return next((r.step for r in records if isinstance(r, StepRecord)), None)


def _last_step(records: list[object]) -> int:
    return next((r.step for r in reversed(records) if isinstance(r, StepRecord)), -1)


def _points(run: RunData, series: Series, axis: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = run.x(series, axis), series.column("value")
    known = np.isfinite(x)
    return (x, y) if known.all() else (x[known], y[known])


def _swatch(colour: str) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(colour))
    return QIcon(pixmap)


class RunPlots(QWidget):
    """Training loss per step (raw and smoothed), validation loss and accuracy per epoch, one
    colour per run. Runs are keyed by text (a run's folder); `add(records)` feeds the run
    being trained, the last one given to add_run."""

    visibilityChanged = Signal(str, bool)  # a run shown or hidden (key, shown)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = _PaintClock()
        self.view.setObjectName("runPlotsView")
        self.view.setAccessibleName("Training curves")
        self.view.setToolTip("Point at a curve to read its run and value; drag to pan, "
                             "wheel to zoom, right-click for more")
        self.loss_plot = _plot(self.view, 0, "lossPlot", "training loss", "loss")
        self.val_plot = _plot(self.view, 1, "valLossPlot", "validation loss", "loss")
        self.acc_plot = _plot(self.view, 2, "accuracyPlot", "validation accuracy or R²",
                              "accuracy / R²")
        self.view.ci.layout.setColumnStretchFactor(0, 2)
        self.legend = self.loss_plot.addLegend(offset=(-10, 10))
        self.legend.sigSampleClicked.connect(self._legend_clicked)
        self.hover = Hover(self._plots())
        self.view.scene().sigMouseMoved.connect(
            lambda pos: self.hover.point_at(pos, self._runs.values(),
                                            self.x_axis.currentText(), self.log.isChecked()))
        self.run_list = QListWidget()
        self.run_list.setObjectName("runList")
        self.run_list.setAccessibleName("Runs")
        self.run_list.setToolTip("Runs on the plots: untick one to hide its curves")
        self.run_list.itemChanged.connect(self._ticked)
        self.run_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = QHBoxLayout(self)
        layout.addLayout(self._controls())
        layout.addWidget(self.view, 1)
        self._runs: dict[str, RunData] = {}
        self._live: RunData | None = None  # where add(records) goes
        self._numbered = 0
        self._held: list[object] = []  # traced steps waiting for the run they begin
        self._spare: list[pg.PlotDataItem] = []  # the next run's curves, made ahead
        self._dirty = False
        self._refit = False
        self._last_redraw = 0.0  # when the curves were last redrawn (perf_counter)
        self.timer = QTimer(self)
        self.timer.setObjectName("plotTimer")
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()
        self._axis_changed()

    def _controls(self) -> QVBoxLayout:
        self.x_axis = QComboBox()
        self.x_axis.addItems(list(AXES))
        self.smoothing = QSlider(Qt.Orientation.Horizontal)
        self.smoothing.setRange(0, 99)
        self.smoothing.setValue(round(100 * SMOOTHING))
        self.smoothing_label = QLabel()
        self.log = QCheckBox("log scale")
        self.export_button = QPushButton("Export…")
        self.clear_button = QPushButton("Clear runs")
        for widget, name, accessible, tip in (
            (self.x_axis, "plotXAxis", "Plot x axis",
             "Place points by optimizer step, by epoch, or by seconds of training (a live "
             "run's steps show by seconds once its first epoch has ended)"),
            (self.smoothing, "plotSmoothing", "Smoothing",
             "Smooth the per-step training loss (exponential moving average, as TensorBoard "
             "does); the raw curve stays faint behind. 0 draws it raw"),
            (self.log, "logScale", "Log scale", "Loss axes on a log scale"),
            (self.export_button, "exportPlots", "Export plots",
             "Save the three plots as one PNG image or SVG drawing"),
            (self.clear_button, "clearRuns", "Clear runs", "Take every run off the plots"),
        ):
            widget.setObjectName(name)
            widget.setAccessibleName(accessible)
            widget.setToolTip(tip)
        self.smoothing_label.setObjectName("plotSmoothingValue")
        self.x_axis.currentTextChanged.connect(self._axis_changed)
        self.smoothing.valueChanged.connect(self._smoothing_changed)
        self.log.toggled.connect(self._set_log)
        self.export_button.clicked.connect(self._export_clicked)
        self.clear_button.clicked.connect(self.clear)
        self.smoothing_label.setText(f"s&moothing {SMOOTHING:.2f}")
        self.smoothing_label.setBuddy(self.smoothing)  # Alt+M
        axis_label = QLabel("&x axis")  # Alt+X
        axis_label.setBuddy(self.x_axis)
        side = QVBoxLayout()
        side.addWidget(self.run_list, 1)
        for widget in (axis_label, self.x_axis, self.smoothing_label, self.smoothing,
                       self.log, self.export_button, self.clear_button):
            widget.setMaximumWidth(150)
            side.addWidget(widget)
        self.run_list.setMaximumWidth(150)
        return side

    # -- runs ---------------------------------------------------------------------------
    @property
    def runs(self) -> list[RunData]:
        return list(self._runs.values())

    def add_run(self, key: str, label: str, colour: str) -> None:
        """A run being trained: add(records) feeds it from now on. A key already shown keeps
        its curves and goes on from them (a paused run resumed)."""
        self._live = self._runs.get(key) or self._make_run(key, label, colour)
        self.rename_run(key, label)

    def new_run(self) -> RunData:
        """A run named by its number, for callers that keep no run folders."""
        number = self._numbered + 1
        self.add_run(f"run {number}", f"run {number}", run_colour(number - 1))
        assert self._live is not None
        return self._live

    def load_run(self, key: str, label: str, colour: str,
                 rows: list[Mapping[str, object]]) -> None:
        """A run from its metrics.csv rows (dicts by header). A run already shown takes the
        label and colour, and keeps the curves it has (live steps are finer than the file's
        epochs)."""
        run = self._runs.get(key) or self._make_run(key, label, colour)
        if not run.loss.n:
            run.load(rows)
            self._dirty = True
        if label != run.label:  # restyling repaints the run's lines: only when they change
            self.rename_run(key, label)
        if colour != run.colour:
            self._recolour(run, colour)

    def rename_run(self, key: str, label: str) -> None:
        run = self._runs[key]
        run.label = label
        self._restyle(run)

    def set_run_visible(self, key: str, on: bool) -> None:
        """Show or hide a run's curves. The views fit the shown runs again, which repaints
        every line: only when the run's visibility changes (not, say, as its swatch does)."""
        run = self._runs[key]
        if run.visible == on:
            return
        run.visible = on
        self._restyle(run)
        self._refit = self._dirty = True
        self.visibilityChanged.emit(key, on)

    def remove_run(self, key: str) -> None:
        run = self._runs.pop(key)
        for plot, curve in zip(self._curve_plots(), run.curves, strict=True):
            plot.removeItem(curve)
        self.run_list.takeItem(self._row(key))
        if self._live is run:
            self._live = None
        self.hover.hide()
        self._refit = self._dirty = True

    def clear(self) -> None:
        for key in list(self._runs):
            self.remove_run(key)
        self._held = []

    def mark_best(self, key: str | None) -> None:
        """Draw one run (or none) thicker, with a star before its label."""
        for run in self._runs.values():
            if run.best != (run.key == key):
                run.best = run.key == key
                self._restyle(run)

    def _make_run(self, key: str, label: str, colour: str) -> RunData:
        self._numbered += 1
        run = RunData(key, label, colour, self._numbered)
        self.prepare_run()
        run.curves, self._spare = self._spare, []
        # ...as long as Qt's pixmap cache holds every line (ten runs' fill its default 10 MB)
        QPixmapCache.setCacheLimit(max(QPixmapCache.cacheLimit(), PIXMAP_CACHE_KB))
        self.legend.addItem(run.curves[1], label)
        self._runs[key] = run
        item = QListWidgetItem(label)
        item.setData(Qt.ItemDataRole.UserRole, key)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked)
        self.run_list.addItem(item)
        self._recolour(run, colour)
        return run

    def prepare_run(self) -> None:
        """Make the next run's (empty) curves now: building them holds the GIL for tens of
        milliseconds, which the torch thread would otherwise wait through as its run begins
        (the window calls this when Train is pressed, while the trainer is being built)."""
        if self._spare:
            return
        self._spare = [plot.plot(autoDownsampleFactor=DOWNSAMPLE)
                       for plot in self._curve_plots()]
        for curve in self._spare:  # a growing run repaints its plot, not the others' lines
            curve.curve.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
            curve.scatter.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def _recolour(self, run: RunData, colour: str) -> None:
        run.colour = colour
        faint = QColor(colour)
        faint.setAlpha(70)
        run.curves[0].setPen(pg.mkPen(faint, width=1))
        for curve in run.curves[2:]:
            curve.setSymbol("o")
            curve.setSymbolSize(5)
            curve.setSymbolBrush(colour)
            curve.setSymbolPen(colour)
        self.run_list.item(self._row(run.key)).setIcon(_swatch(colour))
        self._restyle(run)

    def _restyle(self, run: RunData) -> None:
        """Pens, visibility and texts from the run's colour, label, visibility and best."""
        # unsmoothed steps zigzag: a 2-pixel pen would cost Qt several times a 1-pixel one
        width = (2.0 if self._weight() > 0 else 1.0) + (1.5 if run.best else 0.0)
        run.curves[1].setPen(pg.mkPen(run.colour, width=width))
        for curve in run.curves[2:]:
            curve.setPen(pg.mkPen(run.colour, width=1.5 + (1.5 if run.best else 0.0)))
        for index, curve in enumerate(run.curves):
            curve.setVisible(run.visible and (index > 0 or self._weight() > 0))
        text = f"★ {run.label}" if run.best else run.label
        sample_label = self.legend.getLabel(run.curves[1])
        if sample_label is not None:
            sample_label.setText(text)
        self.legend.updateSize()
        item = self.run_list.item(self._row(run.key))
        self.run_list.blockSignals(True)
        item.setText(text)
        item.setToolTip(f"{run.label}\n{run.key}" if run.key != run.label else run.label)
        item.setCheckState(Qt.CheckState.Checked if run.visible else Qt.CheckState.Unchecked)
        font = item.font()
        font.setBold(run.best)
        item.setFont(font)
        self.run_list.blockSignals(False)

    def _row(self, key: str) -> int:
        return next(i for i in range(self.run_list.count())
                    if self.run_list.item(i).data(Qt.ItemDataRole.UserRole) == key)

    # -- live records -------------------------------------------------------------------
    def add(self, records: list[object]) -> None:
        if self._live is None:
            self.new_run()
        run = self._live
        assert run is not None
        if self._held and run.loss.n == 0:  # the traced steps this run continues
            if _first_step(records) == _last_step(self._held) + 1:
                records = self._held + records
            self._held = []
        run.add_steps([r for r in records if isinstance(r, StepRecord)])
        for record in records:
            if not isinstance(record, StepRecord):
                run.add(record)
        self._dirty = True

    def add_between_runs(self, records: list[object]) -> None:
        """Steps trained outside a run (a traced step): they extend the last run's curve
        when they follow its last step, else they wait for the run that continues them, so
        a traced step never shows as a run of one point."""
        first = _first_step(records)
        if first is None:
            return
        loss = self._live.loss if self._live is not None else None
        if loss is not None and loss.n and loss.column("step")[-1] == first - 1:
            self.add(records)
            return
        if self._held and _last_step(self._held) + 1 != first:
            self._held = []
        self._held += records

    # -- drawing ------------------------------------------------------------------------
    def _plots(self) -> tuple[pg.PlotItem, pg.PlotItem, pg.PlotItem]:
        return self.loss_plot, self.val_plot, self.acc_plot

    def _curve_plots(self) -> tuple[pg.PlotItem, ...]:
        return self.loss_plot, self.loss_plot, self.val_plot, self.acc_plot

    def _weight(self) -> float:
        return self.smoothing.value() / 100

    def redraw_if_due(self) -> None:
        """A live run's turn to be drawn (its torch thread waits meanwhile): redraw if the
        pace allows, paint it now, and keep the timer from redrawing between turns, while
        torch trains."""
        if time.perf_counter() - self._last_redraw >= self.timer.interval() / 1000:
            self.redraw()
            self._paint_now()
        self.timer.start()

    def _paint_now(self) -> None:
        """Send the scene's updates and layouts that Qt queued after a redraw, and paint
        them, rather than over the next ~100 ms of event loop while torch trains: a few
        rounds, as new tick labels lay the axes out again."""
        for _ in range(PAINT_ROUNDS):
            painted = self.view.painting
            QCoreApplication.sendPostedEvents(self.view.scene(), QEvent.Type.MetaCall)
            QCoreApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
            QCoreApplication.sendPostedEvents(None, QEvent.Type.UpdateRequest)
            if self.view.painting == painted:
                return

    def redraw(self) -> None:
        if not self._dirty:
            return
        start = self._last_redraw = time.perf_counter()
        self._draw_all()
        spent = time.perf_counter() - start + self.view.painting  # the last redraw's paints
        self.view.painting = 0.0
        self.timer.setInterval(int(min(SLOWEST_REDRAW_MS, max(REDRAW_MS, 1000 * spent / DUTY))))

    def _draw_all(self) -> None:
        self._dirty = False
        axis = self.x_axis.currentText()
        for run in self._runs.values():
            if run.dirty:  # untouched runs are not repainted
                run.dirty = False
                self._draw(run, axis)
        if self._refit:
            self._refit = False
            for plot in self._plots():
                plot.setRange(xRange=(0, 1e-9), yRange=(0, 1e-9), padding=0)
        visible = [run for run in self._runs.values() if run.visible]
        log, floor = self.log.isChecked(), 10.0 if axis == "step" else 1.0
        _fit(self.loss_plot, [r.shown[0] for r in visible] + [r.shown[1] for r in visible],
             log, floor)
        _fit(self.val_plot, [r.shown[2] for r in visible], log, floor)
        _fit(self.acc_plot, [r.shown[3] for r in visible], False, floor, fixed_y=(0.0, 1.02))

    def _draw(self, run: RunData, axis: str) -> None:
        train = run.train_series()
        raw = train.column("value")
        weight = self._weight() if train is run.loss else 0.0
        smooth = run.smoother(raw, weight) if weight > 0 else raw
        x = run.x(train, axis)
        known = np.isfinite(x)  # seconds are unknown before a live run's first epoch ends
        shown = [(x, raw), (x, smooth)] if known.all() else \
            [(x[known], raw[known]), (x[known], smooth[known])]
        shown += [_points(run, run.val_loss, axis), _points(run, run.val_acc, axis)]
        for curve, (xs, ys) in zip(run.curves, shown, strict=True):
            curve.setData(xs, ys)
        run.shown = shown

    def _changed_view(self) -> None:
        for run in self._runs.values():
            run.dirty = True
            self._restyle(run)
        self.hover.hide()
        self._dirty = True

    def _axis_changed(self) -> None:
        for plot in self._plots():
            plot.setLabel("bottom", AXES[self.x_axis.currentText()])
        self._refit = True
        self._changed_view()

    def _smoothing_changed(self, value: int) -> None:
        self.smoothing_label.setText(f"s&moothing {value / 100:.2f}")
        self._changed_view()

    def _set_log(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        self.val_plot.setLogMode(y=on)
        self._refit = self._dirty = True
        self.redraw()

    def _ticked(self, item: QListWidgetItem) -> None:
        self.set_run_visible(item.data(Qt.ItemDataRole.UserRole),
                             item.checkState() == Qt.CheckState.Checked)

    def _legend_clicked(self, curve: pg.PlotDataItem) -> None:
        """A legend sample toggles its curve; the run's other curves follow."""
        run = next((r for r in self._runs.values() if r.curves[1] is curve), None)
        if run is not None:
            self.set_run_visible(run.key, curve.isVisible())

    def hover_text(self) -> str:
        """What the pointer shows now ("" when it points at nothing)."""
        return self.hover.text()

    # -- export -------------------------------------------------------------------------
    def export(self, path: Path) -> None:
        """The three plots and the legend as one picture: an SVG drawing for a .svg path,
        else a PNG at twice the on-screen size. OSError when the file cannot be written."""
        self.redraw()
        self.hover.hide()
        path.write_bytes(plot_export.svg(self.view, "LayerLab training curves")
                         if path.suffix.lower() == ".svg" else plot_export.png(self.view))

    def _export_clicked(self) -> None:
        name, chosen = QFileDialog.getSaveFileName(
            self, "Export plots", str(Path.home() / "training curves.png"),
            "PNG image (*.png);;SVG drawing (*.svg)")
        if not name:
            return
        path = Path(name)
        if path.suffix.lower() not in (".png", ".svg"):
            path = path.with_suffix(".svg" if "svg" in chosen.lower() else ".png")
        try:
            self.export(path)
        except OSError as error:
            QMessageBox.warning(self, "Export plots",
                                f"Could not write {path}: {error.strerror or error}.")
