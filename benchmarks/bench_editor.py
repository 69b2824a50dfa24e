"""The editor on big graphs: opening a 1,000-node graph, and one edit (shape inference +
scene refresh + repaint) on 1,000 and on 200 nodes. Bar: an edit on 200 nodes < 50 ms."""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import networkx as nx
from PySide6.QtWidgets import QApplication

from layerlab.app.application import make_application
from layerlab.app.commands import set_param
from layerlab.app.main_window import MainWindow
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


def measure(window: MainWindow, nodes: int) -> None:
    start = time.perf_counter()
    window.set_project(Project(graph=big_graph(nodes), name=f"{nodes} nodes"))
    window.view.fit()
    settle(window)
    opened = time.perf_counter() - start
    times = []
    for k in range(20):
        start = time.perf_counter()
        window.doc.undo_stack.push(set_param(window.doc, "fc3", "out_features", 32 + k % 2 + 1))
        settle(window)
        times.append(time.perf_counter() - start)
    print(f"{window.doc.graph.number_of_nodes()} nodes: open {1000 * opened:.0f} ms; "
          f"one edit (inference + refresh + repaint) median {1000 * statistics.median(times):.1f}"
          f" ms, worst {1000 * max(times):.1f} ms")


if __name__ == "__main__":
    make_application()
    window = MainWindow(offer_recovery=False)
    window.resize(1400, 860)
    window.show()
    measure(window, 1000)
    measure(window, 200)
    print("bar: an edit on 200 nodes under 50 ms")
    window.doc.undo_stack.setClean()
    window.close()
