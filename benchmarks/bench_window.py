"""The window while it trains: how long the GUI goes unresponsive (a 10 ms QTimer's
intervals while it trains the MNIST MLP, one epoch on 60,000 MNIST-format images; bar: worst
≤ 50 ms, median ≤ 12 ms), and the training throughput against the same run headless on the
spiral, digits and the MNIST MLP (bar ≥ 0.9): the epochs' training seconds (metrics.csv's
`seconds`: without evaluation), summed.

Rounds of three runs of one to two seconds each, one right after the other in rotating
order: headless in a process of its own (`layerlab train FILE --out OUT`: the same run
folder, health checks and step records as the window's, with its progress bar), the
window's Train, and a bare Trainer (no run folder, no listener) on a plain thread of the
window's process while the window sits idle. On these shared 2-core machines the speed
changes by up to 2× from one second to the next, even on a pinned core, so only runs close
in time compare; and one process keeps its speed relative to an identical one by 5-10% for
minutes, so both sides take turns among three kept processes each (three headless, three
windows): over nine rounds every window process meets every headless one. Each round gives
two ratios (headless / window, bare thread / window); the figures are their medians over
--repeat rounds (every process trains once before them to warm up, not counted). Each
window keeps every run it trained, as a person comparing runs does.

Train is pressed once the window has settled (painted, its dataset preview shown, and half a
second of idle event loop before each run), as a person presses it. Run it under
`nice -n -5` on a quiet machine.
Usage: bench_window.py [--cases spiral,digits,mnist] [--repeat N] [--epochs N]
(`--serve-window PATH`: one window process of the rounds, driven through stdin)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
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
from layerlab.core.project import load_project
from layerlab.core.trainer import EpochRecord, Trainer

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import write_mnist

ROOT = Path(__file__).resolve().parents[1]


# Runs of one to two seconds, many of them: this machine's speed changes by up to 2× from one
# second to the next (even pinned to one core), so only runs close in time compare; a run
# much shorter than a person's would weigh the window's work as a run begins and ends.
CASES = {"spiral": ("spiral", "spiral", 150), "digits": ("digits MLP", "digits-mlp", 50),
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


PROCESSES = 3  # per side, taking turns (see above)
SERVE = (  # `layerlab train FILE --out OUT` over and over: the product's headless training
    "import contextlib, json, os, sys\n"
    "from layerlab.cli import main\n"
    "out = sys.argv[1]\n"
    "for line in sys.stdin:\n"
    "    with open(os.devnull, 'w') as quiet, contextlib.redirect_stdout(quiet), \\\n"
    "            contextlib.redirect_stderr(quiet):\n"
    "        code = main(['train', line.strip(), '--out', out, '--force'])\n"
    "    if code:\n"
    "        sys.exit(f'layerlab train exited with {code}')\n"
    "    with open(os.path.join(out, 'run.json')) as run:\n"
    "        print(json.load(run)['seconds'], flush=True)\n")


class Kept:
    """A process kept between runs, so that each run is measured next to the other side's
    in time: a line in (what to run), a run's training seconds out. Headless, it trains as
    `layerlab train` does (it is `layerlab train`, torch in its main thread); a window
    process trains with its window's Train or on a plain thread (--serve-window)."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def seconds(self, command: str) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"a kept process ended ({self.process.wait()})")
        return float(line)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


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


def open_window(path: Path) -> MainWindow:
    make_application()
    window = MainWindow(offer_recovery=False)
    window.show()
    window.open_path(path, confirmed=True)
    settle(window)
    return window


def close_window(window: MainWindow) -> None:
    window.doc.undo_stack.setClean()
    window.close()
    window.deleteLater()
    QApplication.processEvents()


def window_seconds(window: MainWindow, ticks: bool = False) -> tuple[float, list[float]]:
    """Train once with the window's Train (a fresh run); its training seconds and, with
    `ticks`, a 10 ms GUI timer's intervals meanwhile (not while throughput is measured: the
    timer's own calls into Python take turns at the interpreter lock from the training)."""
    window.training.controller.worker.reset()
    epochs: list[EpochRecord] = []
    worker = window.training.controller.worker

    def collect(records: list[object]) -> None:
        epochs.extend(r for r in records if isinstance(r, EpochRecord))

    worker.records.connect(collect)
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

    def ended(state: str) -> None:
        if state == "idle":
            loop.quit()

    window.training.controller.stateChanged.connect(ended)
    last[0] = time.perf_counter()
    if ticks:
        timer.start()
    window.actions["actionTrain"].trigger()
    loop.exec()
    timer.stop()
    window.training.controller.stateChanged.disconnect(ended)
    worker.records.disconnect(collect)
    return sum(r.seconds for r in epochs), intervals


def thread_seconds(path: Path) -> float:
    """The same run on a plain thread of the window's process while the window sits idle
    (its event loop runs, nothing is sent to it)."""
    seconds: list[float] = []

    def run() -> None:
        trainer = Trainer(load_project(path))
        trainer.run()
        seconds.append(sum(r.seconds for r in trainer.history))

    thread = threading.Thread(target=run)
    thread.start()
    loop = QEventLoop()
    poll = QTimer()
    poll.timeout.connect(lambda: None if thread.is_alive() else loop.quit())
    poll.start(20)
    loop.exec()
    poll.stop()
    thread.join()
    return seconds[0]


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


def idle(seconds: float) -> None:
    """Let the window's event loop run with nothing to do, as between a person's clicks."""
    loop = QEventLoop()
    QTimer.singleShot(int(1000 * seconds), loop.quit)
    loop.exec()


def serve_window(path: Path) -> None:
    """One window process of the rounds: for each line of stdin, `window` (its Train) or
    `thread` (a plain thread beside it) trains `path` once, and its training seconds go to
    stdout (the window trains its own file; the thread, a bare Trainer without a run folder)."""
    window = open_window(path)
    for line in sys.stdin:
        idle(0.5)
        print(window_seconds(window)[0] if line.strip() == "window" else thread_seconds(path),
              flush=True)
    close_window(window)


def throughput(name: str, repeat: int, epochs: int | None) -> list[float]:
    """Rounds of three runs each, one right after the other and in rotating order: headless
    (a process of its own), a window's Train, and the same Trainer on a plain thread of that
    window's process. Both sides take turns among their kept processes, so that over nine
    rounds each headless process meets each window process and each comes first, second and
    third. The ratios per round (headless / window, thread / window); their medians."""
    label, example, default_epochs = CASES[name]
    epochs = epochs or default_epochs
    ratios, own = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = project_file(Path(tmp), example, epochs)
        servers = [Kept("-c", SERVE, str(Path(tmp) / f"headless-{k}"))
                   for k in range(PROCESSES)]
        windows = []
        for k in range(PROCESSES):  # each window its own project file, and so its own runs
            (Path(tmp) / f"window-{k}").mkdir()
            its_file = project_file(Path(tmp) / f"window-{k}", example, epochs)
            windows.append(Kept(__file__, "--serve-window", str(its_file)))
        try:
            for server in servers:  # warming up
                server.seconds(str(path))
            for window in windows:
                window.seconds("window")
                window.seconds("thread")
            for k in range(repeat):
                headless = servers[k % PROCESSES]
                window = windows[(k + k // PROCESSES) % PROCESSES]
                measure = [("headless", lambda h=headless: h.seconds(str(path))),
                           ("window", lambda w=window: w.seconds("window")),
                           ("thread", lambda w=window: w.seconds("thread"))]
                first = k // PROCESSES % len(measure)
                seconds = {what: run() for what, run in measure[first:] + measure[:first]}
                ratios.append(seconds["headless"] / seconds["window"])
                own.append(seconds["thread"] / seconds["window"])
                print(f"{label}, {epochs} epoch(s), round {k + 1}: headless "
                      f"{seconds['headless']:.2f} s, window {seconds['window']:.2f} s, thread "
                      f"{seconds['thread']:.2f} s: ratios {ratios[-1]:.2f}, {own[-1]:.2f}",
                      flush=True)
        finally:
            for server in servers + windows:
                server.close()
    print(f"{label}: throughput ratio against a process of its own: median "
          f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}–{max(ratios):.2f}); "
          f"in the same process: median {statistics.median(own):.2f} (range "
          f"{min(own):.2f}–{max(own):.2f}); over {repeat} rounds; bar ≥ 0.9", flush=True)
    return ratios


def responsiveness() -> None:
    """The GUI timer's intervals while the window trains one epoch of the MNIST MLP."""
    with tempfile.TemporaryDirectory() as tmp:
        window = open_window(project_file(Path(tmp), "mnist-mlp", 1))
        _, intervals = window_seconds(window, ticks=True)
        close_window(window)
    ms = sorted(1000 * i for i in intervals[1:])  # the first tick includes the start
    print(f"GUI timer (10 ms) while training the MNIST MLP: median "
          f"{statistics.median(ms):.1f} ms, worst {ms[-1]:.1f} ms over {len(ms)} ticks "
          "(bar: median ≤ 12, worst ≤ 50)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="spiral,digits,mnist")
    parser.add_argument("--repeat", type=int, default=9,
                        help="rounds per case (9: each headless process meets each window)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: per case)")
    parser.add_argument("--serve-window", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_window:
        serve_window(args.serve_window)
        sys.exit()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    cases = args.cases.split(",")
    if "mnist" in cases:
        million_points()
        responsiveness()
    for case in cases:
        throughput(case, args.repeat, args.epochs)
