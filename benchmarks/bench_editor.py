"""The editor on big graphs: opening a 1,000-node graph, and one edit (shape inference +
scene refresh + repaint) on 1,000 and on 200 nodes; opening a 1,000-node graph that has no
positions (laid out on the way) and Auto-Layout on it. Bars: an edit on 200 nodes < 50 ms;
opening and laying out 1,000 nodes < 1 s. Times are wall clock and, in brackets, CPU time of
this process (steadier on a busy machine)."""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import networkx as nx
from PySide6.QtWidgets import QApplication

from layerlab.app.application import make_application
from layerlab.app.commands import set_param
from layerlab.app.layout_ops import auto_layout
from layerlab.app.main_window import MainWindow
from layerlab.core.layout import layered
from layerlab.core.project import Project


def big_graph(nodes: int) -> nx.DiGraph:
    """Residual blocks of Linear → ReLU → Linear → Add, laid out in rows."""
    g = nx.DiGraph()
    g.add_node("input", type="Input", params={"shape": [32]}, pos=[0, 0])
    prev, i = "input", 0
    while g.number_of_nodes() < nodes - 4:
        a, r, b, s = f"fc{i}", f"relu{i}", f"fcb{i}", f"add{i}"
        x = 240 * (4 * i % 40)
        y = 300 * (4 * i // 40)
        g.add_node(a, type="Linear", params={"out_features": 32}, pos=[x + 240, y])
        g.add_node(r, type="ReLU", params={}, pos=[x + 480, y])
        g.add_node(b, type="Linear", params={"out_features": 32}, pos=[x + 720, y])
        g.add_node(s, type="Add", params={}, pos=[x + 960, y])
        g.add_edge(prev, a)
        g.add_edge(a, r)
        g.add_edge(r, b)
        g.add_edge(prev, s, port=0)
        g.add_edge(b, s, port=1)
        prev, i = s, i + 1
    g.add_node("head", type="Linear", params={"out_features": 10}, pos=[0, -300])
    g.add_node("loss", type="CrossEntropyLoss", params={}, pos=[240, -300])
    g.add_edge(prev, "head")
    g.add_edge("head", "loss")
    return g


def settle(window: MainWindow) -> None:
    QApplication.processEvents()
    window.view.viewport().repaint()


def timed(action) -> tuple[float, float]:
    """Milliseconds of wall clock and of this process's CPU time that `action` takes."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return 1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu)


def fmt(times: tuple[float, float]) -> str:
    return f"{times[0]:.0f} ms ({times[1]:.0f} ms CPU)"


def measure_layout(window: MainWindow, nodes: int) -> None:
    """A graph without positions opened (laid out on the way, drawn at its opening view),
    then Auto-Layout (one undo step) and its repaint; the model summary (FLOPs), which the
    inspector computes a moment after opening, apart."""
    graph = big_graph(nodes)
    for node in graph:
        del graph.nodes[node]["pos"]
    print(f"{nodes} nodes: layered layout alone (igraph Sugiyama + bends) "
          f"{fmt(timed(lambda: layered(graph, 'TB')))}")

    def open_unplaced() -> None:
        window.set_project(Project(graph=graph, name=f"{nodes} nodes, no positions"))
        window.view.show_opening()
        window.view.viewport().repaint()

    opened = timed(open_unplaced)
    window.inspector.summary_timer.stop()
    print(f"{nodes} nodes without positions: open, lay out and draw {fmt(opened)}; "
          f"{opened[0] / 1000:.2f}× the 1 s bar")
    relaid = timed(lambda: (auto_layout(window.doc, "LR"), settle(window)))
    window.inspector.summary_timer.stop()
    print(f"{nodes} nodes: Auto-Layout left to right (one undo step) + repaint {fmt(relaid)}")
    print(f"{nodes} nodes: model summary with FLOPs (inspector, after opening) "
          f"{fmt(timed(window.doc.summary))}")


def measure(window: MainWindow, nodes: int) -> None:
    """Open (until the canvas is drawn; the inspector's model summary, which follows a
    moment later, is measured apart), then 20 edits."""
    graph = big_graph(nodes)

    def open_graph() -> None:
        window.set_project(Project(graph=graph, name=f"{nodes} nodes"))
        window.view.show_opening()
        window.view.viewport().repaint()

    opened = timed(open_graph)
    window.inspector.summary_timer.stop()
    settle(window)
    times = []
    for k in range(20):
        start = time.perf_counter()
        window.doc.undo_stack.push(set_param(window.doc, "fc3", "out_features", 32 + k % 2 + 1))
        settle(window)
        times.append(time.perf_counter() - start)
    print(f"{window.doc.graph.number_of_nodes()} nodes: open {fmt(opened)}; "
          f"one edit (inference + refresh + repaint) median {1000 * statistics.median(times):.1f}"
          f" ms, worst {1000 * max(times):.1f} ms")


if __name__ == "__main__":
    make_application()
    window = MainWindow(offer_recovery=False)
    window.resize(1400, 860)
    window.show()
    time.sleep(1)  # the window's own start (the default example's dataset preview in the
    settle(window)  # torch thread) is not what is measured
    measure(window, 1000)
    measure(window, 200)
    print("bar: an edit on 200 nodes under 50 ms")
    measure_layout(window, 1000)
    print("bar: opening and laying out 1,000 nodes under 1 s")
    window.doc.undo_stack.setClean()
    window.close()
