"""Frame time of the step-through animation on a 100-node graph, over a full play: the time
Qt takes to process one animation frame and repaint the canvas. Smooth: worst under 33 ms."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import torch
from PySide6.QtCore import QEventLoop

import layerlab
from layerlab.app.application import make_application
from layerlab.app.main_window import MainWindow
from layerlab.core.project import Project

sys.path.insert(0, str(Path(__file__).parent))
from bench_editor import big_graph


def main() -> None:
    make_application()
    window = MainWindow(offer_recovery=False)
    window.resize(1400, 900)
    window.show()
    graph = big_graph(100)
    window.set_project(Project(graph=graph, name="100 nodes"))
    window.view.fit()
    model = layerlab.build_model(graph)
    trace = layerlab.trace_step(graph, model, torch.randn(16, 32), torch.randint(0, 10, (16,)),
                                torch.optim.SGD(model.parameters(), lr=0.01))
    stepper = window.stepper
    stepper.load(trace, window.doc.graph)
    stepper.speed = "fast"
    frames: list[float] = []  # the cost of one animation frame: move the pulses, repaint
    gaps: list[float] = []  # the time between frames, as the animation saw it
    viewport = window.view.viewport()
    previous = [0.0]

    def frame(_: object) -> None:
        start = time.perf_counter()
        viewport.repaint()  # paint now, synchronously, so that it can be timed
        end = time.perf_counter()
        frames.append(end - start)
        if previous[0]:
            gaps.append(start - previous[0])
        previous[0] = end

    ticks: list[float] = []
    last = [time.perf_counter()]

    def tick(_: int) -> None:
        now = time.perf_counter()
        ticks.append(now - last[0])
        last[0] = now
        previous[0] = 0.0
        if stepper.animations:
            stepper.animations[-1].valueChanged.connect(frame)

    stepper.eventChanged.connect(tick)
    loop = QEventLoop()
    stepper.finished.connect(loop.quit)
    stepper.play()
    loop.exec()
    ms = sorted(1000 * f for f in frames)
    gap = sorted(1000 * g for g in gaps)
    print(f"{len(stepper.events)} events on {graph.number_of_nodes()} nodes, {len(ms)} "
          f"animation frames: repaint median {statistics.median(ms):.1f} ms, worst "
          f"{ms[-1]:.1f} ms; frame to frame median {statistics.median(gap):.1f} ms, worst "
          f"{gap[-1]:.1f} ms (smooth: worst under 33 ms)")
    step_ms = sorted(1000 * t for t in ticks[1:])
    print(f"event interval at 'fast' (150 ms): median {statistics.median(step_ms):.0f} ms, "
          f"worst {step_ms[-1]:.0f} ms")
    stepper.leave()
    window.doc.undo_stack.setClean()
    window.close()


if __name__ == "__main__":
    main()
