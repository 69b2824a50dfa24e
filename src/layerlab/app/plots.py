"""Live plots (pyqtgraph): every run overlaid in its own colour, redrawn on a timer at a
bounded rate, downsampled and clipped to view so a million points stay smooth."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from layerlab.core.trainer import EpochRecord, StepRecord

# Redraws cost the GUI thread Python time (pyqtgraph repaints axes in Python), and the
# training thread waits for the GIL meanwhile: 10 a second keeps curves live and training
# near full speed (benchmarks/bench_window.py).
REDRAW_MS = 200
COLOURS = ["#4c9be8", "#e8594c", "#2fa37a", "#c98b2a", "#8a63c9", "#2b9db3", "#d4a017",
           "#7a7a7a"]
SMOOTH = 0.95


class Series:
    """A growing array, doubled in place so appending stays cheap."""

    def __init__(self) -> None:
        self.x = np.empty(1024)
        self.y = np.empty(1024)
        self.n = 0
        self.dirty = False

    def append(self, x: float, y: float) -> None:
        self.dirty = True
        if self.n == len(self.x):
            self.x = np.resize(self.x, 2 * self.n)
            self.y = np.resize(self.y, 2 * self.n)
        self.x[self.n], self.y[self.n] = x, y
        self.n += 1

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x[: self.n], self.y[: self.n]


class Run:
    def __init__(self, number: int, colour: str) -> None:
        self.number, self.colour = number, colour
        self.loss, self.smooth = Series(), Series()
        self.val_loss, self.val_acc = Series(), Series()
        self._ema: float | None = None
        self.curves: list[pg.PlotDataItem] = []

    def add(self, record: object) -> None:
        if isinstance(record, StepRecord):
            self.loss.append(record.step, record.loss)
            self._ema = record.loss if self._ema is None else \
                SMOOTH * self._ema + (1 - SMOOTH) * record.loss
            self.smooth.append(record.step, self._ema)
        elif isinstance(record, EpochRecord):
            if record.val_loss is not None:
                self.val_loss.append(record.epoch, record.val_loss)
            score = record.val_accuracy if record.val_accuracy is not None else \
                record.val_r2  # a regression's R² where a classification has accuracy
            if score is not None:
                self.val_acc.append(record.epoch, score)


def _plot(title: str, left: str, bottom: str) -> pg.PlotWidget:
    plot = pg.PlotWidget(title=title)
    plot.setLabel("left", left)
    plot.setLabel("bottom", bottom)
    plot.showGrid(x=True, y=True, alpha=0.2)
    plot.setDownsampling(auto=True, mode="peak")
    plot.setClipToView(True)
    plot.addLegend(offset=(-10, 10))
    plot.disableAutoRange()  # ranges change in steps (see _grow): axes repaint rarely
    plot.getAxis("left").enableAutoSIPrefix(False)
    return plot


def _grow(plot: pg.PlotWidget, runs: list[Run], pick: int, log: bool,
          fixed_y: tuple[float, float] | None = None) -> None:
    """Widen the view only when the data leave it (doubling the x range, 10% headroom),
    so that most redraws repaint the curves but not the axes, which cost far more."""
    xs, ys = [], []
    for run in runs:
        x, y = (run.loss, run.smooth, run.val_loss, run.val_acc)[pick].data()
        if len(x):
            xs.append(x.max())
            finite = y[np.isfinite(y) & ((y > 0) if log else True)]
            if len(finite):
                ys += [finite.min(), finite.max()]
    if not xs or not ys:
        return
    (_x0, x1), (y0, y1) = plot.viewRange()
    top, low, high = max(xs), min(ys), max(ys)
    if log:
        low, high = np.log10(low), np.log10(high)
    if top > x1 or x1 > 8 * max(top, 1):
        plot.setXRange(0, max(8.0, 2 ** np.ceil(np.log2(max(top, 1) * 1.25))), padding=0)
    span = max(high - low, 1e-6)
    if fixed_y is not None:
        if (y0, y1) != fixed_y:
            plot.setYRange(*fixed_y, padding=0)
    elif low < y0 or high > y1 or span < 0.4 * (y1 - y0):
        plot.setYRange(low - 0.1 * span, high + 0.1 * span, padding=0)


def _first_step(records: list[object]) -> int | None:
    return next((r.step for r in records if isinstance(r, StepRecord)), None)


def _last_step(records: list[object]) -> int:
    return next((r.step for r in reversed(records) if isinstance(r, StepRecord)), -1)


class RunPlots(QWidget):
    """Training loss per step (raw and smoothed), validation loss and accuracy per epoch."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss_plot = _plot("training loss", "loss", "step")
        self.val_plot = _plot("validation loss", "loss", "epoch")
        self.acc_plot = _plot("validation accuracy or R²", "accuracy / R²",
                              "epoch")
        for name, plot in (("lossPlot", self.loss_plot), ("valLossPlot", self.val_plot),
                           ("accuracyPlot", self.acc_plot)):
            plot.setObjectName(name)
            plot.setAccessibleName(name)
        self.log = QCheckBox("log scale")
        self.log.setObjectName("logScale")
        self.log.setAccessibleName("Log scale")
        self.log.toggled.connect(self._set_log)
        self.run_list = QListWidget()
        self.run_list.setObjectName("runList")
        self.run_list.setAccessibleName("Runs")
        self.run_list.setMaximumWidth(130)
        self.run_list.itemChanged.connect(self._visibility)
        self.clear_button = QPushButton("Clear runs")
        self.clear_button.setObjectName("clearRuns")
        self.clear_button.setAccessibleName("Clear runs")
        self.clear_button.clicked.connect(self.clear)
        side = QVBoxLayout()
        side.addWidget(self.run_list)
        side.addWidget(self.log)
        side.addWidget(self.clear_button)
        layout = QHBoxLayout(self)
        layout.addLayout(side)
        for plot in (self.loss_plot, self.val_plot, self.acc_plot):
            layout.addWidget(plot, 2 if plot is self.loss_plot else 1)
        self.runs: list[Run] = []
        self._held: list[object] = []  # traced steps waiting for the run they begin
        self._dirty = False
        self.timer = QTimer(self)
        self.timer.setObjectName("plotTimer")
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()

    def new_run(self) -> Run:
        number = (self.runs[-1].number + 1) if self.runs else 1
        run = Run(number, COLOURS[(number - 1) % len(COLOURS)])
        pen = pg.mkPen(run.colour, width=1)
        faint = pg.mkPen(pg.mkColor(run.colour).lighter(160), width=1)
        run.curves = [
            self.loss_plot.plot(pen=faint),
            self.loss_plot.plot(pen=pg.mkPen(run.colour, width=2), name=f"run {number}"),
            self.val_plot.plot(pen=pen, symbol="o", symbolSize=5, name=f"run {number}"),
            self.acc_plot.plot(pen=pen, symbol="o", symbolSize=5, name=f"run {number}"),
        ]
        self.runs.append(run)
        item = QListWidgetItem(f"run {number}")
        item.setForeground(pg.mkColor(run.colour))
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked)
        self.run_list.addItem(item)
        return run

    def add(self, records: list[object]) -> None:
        if not self.runs:
            self.new_run()
        run = self.runs[-1]
        if self._held and run.loss.n == 0:  # the traced steps this run continues
            if _first_step(records) == _last_step(self._held) + 1:
                records = self._held + records
            self._held = []
        for record in records:
            run.add(record)
        self._dirty = True

    def add_between_runs(self, records: list[object]) -> None:
        """Steps trained outside a run (a traced step): they extend the last run's curve
        when they follow its last step, else they wait for the run that continues them, so
        a traced step never shows as a run of one point."""
        first = _first_step(records)
        if first is None:
            return
        loss = self.runs[-1].loss if self.runs else None
        if loss is not None and loss.n and loss.x[loss.n - 1] == first - 1:
            self.add(records)
            return
        if self._held and _last_step(self._held) + 1 != first:
            self._held = []
        self._held += records

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        for run in self.runs:
            series = (run.loss, run.smooth, run.val_loss, run.val_acc)
            for curve, s in zip(run.curves, series, strict=True):
                if s.dirty:  # untouched plots are not repainted
                    s.dirty = False
                    curve.setData(*s.data())
        log = self.log.isChecked()
        _grow(self.loss_plot, self.runs, 0, log)
        _grow(self.val_plot, self.runs, 2, log)
        _grow(self.acc_plot, self.runs, 3, False, fixed_y=(0.0, 1.02))

    def clear(self) -> None:
        for plot in (self.loss_plot, self.val_plot, self.acc_plot):
            plot.clear()
            plot.addLegend(offset=(-10, 10))
        self.runs.clear()
        self._held = []
        self.run_list.clear()

    def _visibility(self, item: QListWidgetItem) -> None:
        row = self.run_list.row(item)
        if 0 <= row < len(self.runs):
            visible = item.checkState() == Qt.CheckState.Checked
            for curve in self.runs[row].curves:
                curve.setVisible(visible)

    def _set_log(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        self.val_plot.setLogMode(y=on)
        for plot in (self.loss_plot, self.val_plot):
            plot.setYRange(0, 1e-9)  # force a refit on the next redraw
        self._dirty = True
        self.redraw()
