"""The window while it trains: how long the GUI goes unresponsive (a 10 ms QTimer's
intervals while it trains the MNIST MLP, one epoch on 60,000 MNIST-format images; bar: worst
≤ 50 ms, median ≤ 12 ms), and the training throughput against the same run headless on the
spiral, digits and the MNIST MLP (bar ≥ 0.9): the epochs' training seconds (metrics.csv's
`seconds`: without evaluation), summed, in the window against in a process of its own.

Train is pressed once the window has settled (painted, its dataset preview shown), as a
person presses it. Each repetition measures headless and window back to back; the ratios'
median and range are printed (the machine is shared: run it under `nice -n -10`).
Usage: bench_window.py [--cases spiral,digits,mnist] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# one torch thread on both sides (as bench_vs_plain): on a busy 2-core machine two OpenMP
# threads per process make either side's time mostly a matter of the neighbours' load
os.environ.setdefault("OMP_NUM_THREADS", "1")

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from layerlab.app.application import make_application
from layerlab.app.main_window import MainWindow
from layerlab.core.insight import PreviewRecord
from layerlab.core.trainer import EpochRecord

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import write_mnist

ROOT = Path(__file__).resolve().parents[1]


# Runs of a few seconds: a sub-second run's ratio swings 0.3–1.7 with the machine's load.
CASES = {"spiral": ("spiral", "spiral", 200), "digits": ("digits MLP", "digits-mlp", 40),
         "mnist": ("MNIST MLP", "mnist-mlp", 1)}  # name: (label, example, epochs)


def project_file(folder: Path, example: str, epochs: int) -> Path:
    data = json.loads((ROOT / f"assets/examples/{example}.layerlab.json").read_text())
    if data["training"]["dataset"]["name"] == "mnist":
        write_mnist(folder)
        data["training"]["dataset"]["options"] = {"root": str(folder), "download": False}
    data["training"]["epochs"] = epochs
    path = folder / f"{example}.layerlab.json"
    path.write_text(json.dumps(data))
    return path


HEADLESS = (
    "import sys, layerlab; from layerlab.core.trainer import Trainer; "
    "t = Trainer(layerlab.load_project(sys.argv[1])); t.run(); "
    "print(sum(r.seconds for r in t.history))")


def headless_seconds(path: Path) -> float:
    """In a process of its own, as `layerlab train` runs: torch in this process's main
    thread would leave an OpenMP pool that competes with the window's training thread."""
    out = subprocess.run([sys.executable, "-c", HEADLESS, str(path)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def settle(window: MainWindow, after_s: float = 0.5) -> None:
    """Wait as a person would before pressing Train: until the dataset preview is shown
    (the torch thread has loaded what it loads first), then `after_s` more."""
    loop = QEventLoop()

    def previewed(records: list[object]) -> None:
        if any(isinstance(r, PreviewRecord) for r in records):
            QTimer.singleShot(int(1000 * after_s), loop.quit)

    worker = window.training.controller.worker
    worker.records.connect(previewed)
    QTimer.singleShot(30_000, loop.quit)  # never forever
    loop.exec()
    worker.records.disconnect(previewed)


def window_seconds(path: Path) -> tuple[float, list[float]]:
    make_application()
    window = MainWindow(offer_recovery=False)
    window.show()
    window.open_path(path, confirmed=True)
    settle(window)
    epochs: list[EpochRecord] = []
    window.training.controller.worker.records.connect(
        lambda rs: epochs.extend(r for r in rs if isinstance(r, EpochRecord)))
    intervals: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        intervals.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    loop = QEventLoop()  # wait as the application does: idle until an event comes
    window.training.controller.stateChanged.connect(
        lambda state: loop.quit() if state == "idle" else None)
    last[0] = time.perf_counter()
    timer.start()
    window.actions["actionTrain"].trigger()
    loop.exec()
    timer.stop()
    window.doc.undo_stack.setClean()
    window.close()
    QApplication.processEvents()
    return sum(r.seconds for r in epochs), intervals


def million_points() -> None:
    """Redraw cost of the loss plot holding a million steps (downsampling, clip to view)."""
    import numpy as np

    from layerlab.app.plots import RunPlots
    from layerlab.core.trainer import StepRecord

    make_application()
    plots = RunPlots()
    plots.resize(1200, 400)
    plots.show()
    rng = np.random.default_rng(0)
    losses = np.exp(-np.linspace(0, 5, 1_000_000)) + 0.05 * rng.random(1_000_000)
    plots.add([StepRecord(1, i + 1, 1, 1, float(v), 0.0, 0.0) for i, v in enumerate(losses)])
    times = []
    for k in range(10):
        plots.add([StepRecord(1, 1_000_001 + k, 1, 1, 0.01, 0.0, 0.0)])
        start = time.perf_counter()
        plots.redraw()
        plots.repaint()
        QApplication.processEvents()
        times.append(time.perf_counter() - start)
    print(f"loss plot with 1,000,000 steps: redraw + repaint median "
          f"{1000 * statistics.median(times):.1f} ms, worst {1000 * max(times):.1f} ms")
    plots.timer.stop()
    plots.close()


def throughput(name: str, repeat: int) -> list[float]:
    """Headless and window seconds back to back, `repeat` times; the ratios."""
    label, example, epochs = CASES[name]
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        path = project_file(Path(tmp), example, epochs)
        for _ in range(repeat):
            headless = headless_seconds(path)
            in_window, intervals = window_seconds(path)
            ratios.append(headless / in_window)
            print(f"{label}, {epochs} epoch(s) of training: headless {headless:.2f} s, in the "
                  f"window {in_window:.2f} s; ratio {ratios[-1]:.2f}", flush=True)
    print(f"{label}: throughput ratio median {statistics.median(ratios):.2f} (range "
          f"{min(ratios):.2f}–{max(ratios):.2f} over {repeat}; bar ≥ 0.9)", flush=True)
    if name == "mnist":
        ms = sorted(1000 * i for i in intervals[1:])  # the first tick includes the start
        print(f"GUI timer (10 ms) while training the MNIST MLP: median "
              f"{statistics.median(ms):.1f} ms, worst {ms[-1]:.1f} ms over {len(ms)} ticks "
              "(bar: median ≤ 12, worst ≤ 50)")
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="spiral,digits,mnist")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cases = args.cases.split(",")
    if "mnist" in cases:
        million_points()
    for case in cases:
        throughput(case, args.repeat)
