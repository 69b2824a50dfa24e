"""What the run plots draw, kept apart from the widget: one colour per run, TensorBoard's
smoothing, and a run's series placed by step, epoch or training time."""

from __future__ import annotations

import colorsys
from collections.abc import Mapping

import numpy as np
import pyqtgraph as pg

from layerlab.core.records import EpochRecord, StepRecord

# Tableau 10 (matplotlib's default cycle): ten hues told apart on white and on dark grey.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
EMPTY = np.empty(0)
AXES = {"step": "step", "epoch": "epoch", "seconds": "seconds of training"}


def run_colour(index: int) -> str:
    """The colour of the run shown `index`-th (0-based): the palette, then hues a golden
    ratio apart, dark enough to read on white."""
    if index < len(PALETTE):
        return PALETTE[index]
    red, green, blue = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.8, 0.7)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (red, green, blue)))


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average from zero, divided by
    1 − weight**n so the curve starts at the data; non-finite values stay as they are and
    do not feed the average."""
    return Smoother()(np.asarray(values, dtype=float), weight)


class Smoother:
    """ema() of a growing series, carried on from where the last call left it, so a live
    run of a million steps costs each redraw only its new steps."""

    def __init__(self) -> None:
        self.weight, self.last, self.count = -1.0, 0.0, 0
        self.out = np.empty(0)

    def __call__(self, values: np.ndarray, weight: float) -> np.ndarray:
        if weight != self.weight or len(values) < len(self.out):
            self.weight, self.last, self.count = weight, 0.0, 0
            self.out = np.empty(0)
        new = np.array(values[len(self.out):], dtype=float)
        finite = np.isfinite(new)
        if weight > 0 and finite.any():
            kept = new[finite]
            average = _accumulate(kept, weight, self.last)
            n = self.count + np.arange(1, len(kept) + 1)
            # past 1e-17, 1 − weight**n is 1: powers left to underflow would crawl
            # through subnormals
            early = int(np.searchsorted(n, np.ceil(17 / -np.log10(weight)), side="right"))
            debias = np.ones(len(kept))
            debias[:early] = 1 - weight ** n[:early]
            new[finite] = average / debias
            self.last, self.count = float(average[-1]), int(n[-1])
        self.out = np.concatenate([self.out, new])
        return self.out


def _accumulate(v: np.ndarray, w: float, last: float) -> np.ndarray:
    """a_t = w·a_{t−1} + (1−w)·v_t from a = `last`, vectorised: within a chunk
    a_t = w**(t+1)·a + (1−w)·w**t·Σ_{k≤t} v_k·w**−k, chunks short enough that w**−k < 1e200."""
    chunk = int(min(4096, max(1, 200 / -np.log10(w))))
    out = np.empty_like(v)
    for start in range(0, len(v), chunk):
        part = v[start:start + chunk]
        powers = w ** np.arange(len(part))
        out[start:start + len(part)] = powers * (w * last + (1 - w) * np.cumsum(part / powers))
        last = out[start + len(part) - 1]
    return out


class Series:
    """Points (step, epoch, value) in a growing array, doubled in place so appending stays
    cheap; `natural` names the x that data() gives."""

    def __init__(self, natural: str = "step") -> None:
        self.natural = natural
        self._a = np.empty((3, 1024))
        self.n = 0

    def append(self, step: float, epoch: float, value: float) -> None:
        if self.n == self._a.shape[1]:
            self._a = np.concatenate([self._a, np.empty_like(self._a)], axis=1)
        self._a[:, self.n] = step, epoch, value
        self.n += 1

    def extend(self, rows: np.ndarray) -> None:
        """Append (step, epoch, value) rows at once: one copy for a batch of live steps, where
        an append per step cost the GUI thread, holding the GIL, ~5% of a digits run."""
        end = self.n + len(rows)
        if end > self._a.shape[1]:
            grown = np.empty((3, max(end, 2 * self._a.shape[1])))
            grown[:, : self.n] = self._a[:, : self.n]
            self._a = grown
        self._a[:, self.n:end] = rows.T
        self.n = end

    def column(self, name: str) -> np.ndarray:
        return self._a[("step", "epoch", "value").index(name), : self.n]

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.column(self.natural), self.column("value")


def _number(row: Mapping[str, object], name: str) -> float | None:
    text = row.get(name)
    if text is None or text == "":
        return None
    try:
        return float(text)  # type: ignore[arg-type]
    except ValueError:
        return None


class RunData:
    """One run's numbers: loss per step (live runs), loss per epoch, validation loss and
    accuracy (or R²) per epoch, and the training time at each epoch's end; with the curves
    drawing it (raw and smoothed training loss, validation loss, score) and what each shows."""

    def __init__(self, key: str, label: str, colour: str, number: int) -> None:
        self.key, self.label, self.colour, self.number = key, label, colour, number
        self.visible, self.best, self.dirty = True, False, True
        self.loss = Series("step")
        self.epoch_loss, self.val_loss = Series("epoch"), Series("epoch")
        self.val_acc, self.clock = Series("epoch"), Series("step")
        self.smoother = Smoother()
        self.curves: list[pg.PlotDataItem] = []
        self.shown: list[tuple[np.ndarray, np.ndarray]] = [(EMPTY, EMPTY)] * 4

    def add(self, record: object) -> None:
        self.dirty = True
        if isinstance(record, StepRecord):
            self.loss.append(record.step, record.epoch - 1 + record.batch / record.batches,
                             record.loss)
        elif isinstance(record, EpochRecord):
            score = record.val_accuracy if record.val_accuracy is not None else record.val_r2
            self._epoch(record.step, record.epoch, record.train_loss, record.val_loss, score,
                        record.seconds)

    def add_steps(self, records: list[StepRecord]) -> None:
        """Live steps, appended at once (the window receives them in batches)."""
        self.dirty = True
        self.loss.extend(np.array([(r.step, r.epoch - 1 + r.batch / r.batches, r.loss)
                                   for r in records], dtype=float).reshape(-1, 3))

    def load(self, rows: list[Mapping[str, object]]) -> None:
        """metrics.csv rows, columns looked up by header; a missing column draws nothing.
        They replace the run's epochs (not its steps)."""
        self.dirty = True
        self.epoch_loss, self.val_loss = Series("epoch"), Series("epoch")
        self.val_acc, self.clock = Series("epoch"), Series("step")
        for index, row in enumerate(rows):
            score = _number(row, "val_accuracy")
            self._epoch(_number(row, "step"), _number(row, "epoch") or index + 1,
                        _number(row, "train_loss"), _number(row, "val_loss"),
                        score if score is not None else _number(row, "val_r2"),
                        _number(row, "seconds"))

    def _epoch(self, step: float | None, epoch: float, train: float | None,
               val: float | None, score: float | None, seconds: float | None) -> None:
        step = np.nan if step is None else step
        for series, value in ((self.epoch_loss, train), (self.val_loss, val),
                              (self.val_acc, score)):
            if value is not None:
                series.append(step, epoch, value)
        if seconds is not None:
            so_far = self.clock.column("value")[-1] if self.clock.n else 0.0
            self.clock.append(step, epoch, so_far + seconds)

    def train_series(self) -> Series:
        """Loss per step where the run was watched live, else the loss per epoch."""
        return self.loss if self.loss.n else self.epoch_loss

    def x(self, series: Series, axis: str) -> np.ndarray:
        """Where the points of `series` lie along `axis` (NaN where unknown)."""
        if axis != "seconds":
            return series.column(axis)
        return self.seconds_at(series.column("step"))

    def seconds_at(self, steps: np.ndarray) -> np.ndarray:
        """Training time at each step: linear between epoch ends (from 0 s at step 0), at the
        last epoch's pace after it, unknown before the first epoch ends."""
        ends, times = self.clock.column("step"), self.clock.column("value")
        known = np.isfinite(ends)
        if not known.any():
            return np.full(len(steps), np.nan)
        ends = np.concatenate(([0.0], ends[known]))
        times = np.concatenate(([0.0], times[known]))
        out = np.interp(steps, ends, times)
        after = steps > ends[-1]
        pace = (times[-1] - times[-2]) / max(ends[-1] - ends[-2], 1e-12)
        out[after] = times[-1] + (steps[after] - ends[-1]) * pace
        return out


def nearest(curves: list[tuple[np.ndarray, np.ndarray]], x: float, y: float,
            pixel: tuple[float, float]) -> tuple[int, int, float] | None:
    """The point of `curves` closest to (x, y) on screen, `pixel` being the view size of one
    pixel: (curve index, point index, distance in pixels), or None with no points."""
    best: tuple[int, int, float] | None = None
    for which, (xs, ys) in enumerate(curves):
        if not len(xs):
            continue
        with np.errstate(invalid="ignore"):
            far = np.hypot((xs - x) / pixel[0], (ys - y) / pixel[1])
        if not np.isfinite(far).any():
            continue
        index = int(np.nanargmin(far))
        if best is None or far[index] < best[2]:
            best = (which, index, float(far[index]))
    return best
