"""Redraw cost of the training curves comparing 10 runs of 5,000 steps each, smoothed:
a live redraw (one run grew) and a full one (every run redrawn, as after moving the smoothing
slider or changing the x axis). Run: QT_QPA_PLATFORM=offscreen python benchmarks/bench_plots.py"""

from __future__ import annotations

import statistics
import time

import numpy as np
from PySide6.QtWidgets import QApplication

from layerlab.app.application import make_application
from layerlab.app.plots import RunPlots, run_colour
from layerlab.core.records import EpochRecord, StepRecord

RUNS, STEPS, PER_EPOCH = 10, 5_000, 100


def records(rng: np.random.Generator, run: int) -> list[object]:
    out: list[object] = []
    losses = np.exp(-np.linspace(0, 3 + run / 5, STEPS)) + 0.1 * rng.random(STEPS)
    for i, loss in enumerate(losses):
        epoch, batch = divmod(i, PER_EPOCH)
        out.append(StepRecord(epoch + 1, i + 1, batch + 1, PER_EPOCH, float(loss), 0.0, 0.1))
        if batch == PER_EPOCH - 1:
            out.append(EpochRecord(epoch + 1, i + 1, float(loss), float(loss) + 0.05,
                                   0.9, 0.5, None, 3200))
    return out


def timed(plots: RunPlots, change) -> float:
    """CPU milliseconds from a change to the curves painted (CPU time: the machine is shared)."""
    change()
    start = time.process_time()
    plots.redraw()
    plots.repaint()
    QApplication.processEvents()
    return 1000 * (time.process_time() - start)


def main() -> None:
    make_application()
    plots = RunPlots()
    plots.timer.stop()
    plots.resize(1400, 450)
    plots.show()
    rng = np.random.default_rng(0)
    for run in range(RUNS):
        plots.add_run(f"run{run}", f"run {run}", run_colour(run))
        plots.add(records(rng, run))
    timed(plots, lambda: None)
    step = [STEPS]

    def grow() -> None:
        step[0] += 1
        plots.add([StepRecord(51, step[0], 1, PER_EPOCH, 0.05, 0.0, 0.1)])

    for name, axis in (("step", "step"), ("seconds", "seconds")):
        plots.x_axis.setCurrentText(axis)
        timed(plots, lambda: None)
        live = [timed(plots, grow) for _ in range(20)]
        full = [timed(plots, lambda k=k: plots.smoothing.setValue(90 + k % 9)) for k in range(10)]
        print(f"{RUNS} runs × {STEPS} steps, x by {name}, smoothing on: live redraw median "
              f"{statistics.median(live):.1f} ms (worst {max(live):.1f}); every run redrawn "
              f"median {statistics.median(full):.1f} ms (worst {max(full):.1f})")
    plots.smoothing.setValue(0)
    full = [timed(plots, lambda k=k: plots.x_axis.setCurrentIndex(k % 2)) for k in range(10)]
    print(f"smoothing off, every run redrawn: median {statistics.median(full):.1f} ms")
    plots.close()


if __name__ == "__main__":
    main()
