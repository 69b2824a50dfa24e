"""The window while it trains the MNIST MLP (one epoch on 60,000 MNIST-format images):
how long the GUI goes unresponsive (a 10 ms QTimer's intervals; bar: worst ≤ 50 ms, median
≤ 12 ms) and the training throughput against the same epoch headless (bar ≥ 0.85)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from layerlab.app.application import make_application
from layerlab.app.main_window import MainWindow
from layerlab.core.trainer import EpochRecord

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import write_mnist

ROOT = Path(__file__).resolve().parents[1]


def project_file(folder: Path) -> Path:
    write_mnist(folder)
    data = json.loads((ROOT / "assets/examples/mnist-mlp.layerlab.json").read_text())
    data["training"]["dataset"]["options"] = {"root": str(folder), "download": False}
    data["training"]["epochs"] = 1
    path = folder / "mnist.layerlab.json"
    path.write_text(json.dumps(data))
    return path


HEADLESS = (
    "import sys, layerlab; from layerlab.core.trainer import Trainer; "
    "t = Trainer(layerlab.load_project(sys.argv[1])); t.run(); print(t.history[-1].seconds)")


def headless_epoch(path: Path) -> float:
    """In a process of its own, as `layerlab train` runs: torch in this process's main
    thread would leave an OpenMP pool that competes with the window's training thread."""
    out = subprocess.run([sys.executable, "-c", HEADLESS, str(path)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def window_epoch(path: Path) -> tuple[float, list[float]]:
    make_application()
    window = MainWindow(offer_recovery=False)
    window.show()
    window.open_path(path, confirmed=True)
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
    return epochs[-1].seconds, intervals


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


if __name__ == "__main__":
    million_points()
    with tempfile.TemporaryDirectory() as tmp:
        path = project_file(Path(tmp))
        headless = statistics.median(headless_epoch(path) for _ in range(2))
        in_window, intervals = window_epoch(path)
    ms = sorted(1000 * i for i in intervals[1:])  # the first tick includes the start
    print(f"GUI timer (10 ms) while training: median {statistics.median(ms):.1f} ms, worst "
          f"{ms[-1]:.1f} ms over {len(ms)} ticks (bar: median ≤ 12, worst ≤ 50)")
    print(f"training epoch: headless {headless:.2f} s, in the window {in_window:.2f} s; "
          f"throughput ratio {headless / in_window:.2f} (bar ≥ 0.85)")
