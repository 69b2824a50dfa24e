"""build_model against a hand-written module: training steps per second, same weights, same
process, alternating rounds. Also the time of infer_shapes + build_model on 1,000 nodes.

Prints ratios (layerlab / hand-written steps per second); ≥ 0.97 is the bar.
"""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict

import networkx as nx
import torch
from torch import nn

import layerlab
from layerlab.core.runtime import tune_allocator


def chain(input_size: int, widths: list[int]) -> tuple[nx.DiGraph, nn.Module]:
    g = nx.DiGraph()
    g.add_node("input", type="Input", params={"shape": [input_size]})
    layers: list[tuple[str, nn.Module]] = []
    prev, size = "input", input_size
    for i, width in enumerate(widths):
        fc = f"fc{i}"
        g.add_node(fc, type="Linear", params={"out_features": width})
        g.add_edge(prev, fc)
        layers.append((fc, nn.Linear(size, width)))
        prev, size = fc, width
        if i < len(widths) - 1:
            act = f"relu{i}"
            g.add_node(act, type="ReLU", params={})
            g.add_edge(prev, act)
            layers.append((act, nn.ReLU()))
            prev = act
    return g, nn.Sequential(OrderedDict(layers))


class Stepper:
    """One model with its own optimizer, timed a few steps at a time."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y = model, x, y
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.loss_fn = nn.CrossEntropyLoss()

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=True)
            self.loss_fn(self.model(self.x), self.y).backward()
            self.opt.step()
        return time.perf_counter() - start


def compare(name: str, input_size: int, widths: list[int], batch: int, block: int,
            blocks: int) -> float:
    """Alternate short blocks of steps so that drift in machine speed hits both alike."""
    g, hand = chain(input_size, widths)
    fx_model = layerlab.build_model(g)
    fx_model.load_state_dict(dict(zip(fx_model.state_dict(), hand.state_dict().values(),
                                      strict=True)))
    x, y = torch.randn(batch, input_size), torch.randint(0, widths[-1], (batch,))
    a, b = Stepper(hand, x, y), Stepper(fx_model, x, y)
    a.run(block * 3)
    b.run(block * 3)
    pairs = []
    for i in range(blocks):
        if i % 2:
            tb, ta = b.run(block), a.run(block)
        else:
            ta, tb = a.run(block), b.run(block)
        pairs.append(ta / tb)
    ratio = statistics.median(pairs)
    q = statistics.quantiles(pairs, n=4)
    print(f"{name}: layerlab/hand-written steps per second = {ratio:.3f} "
          f"(median of {blocks} paired blocks, quartiles {q[0]:.3f}–{q[2]:.3f}; bar ≥ 0.97)")
    return ratio


def large_graph_time(nodes: int = 1000) -> None:
    g, _ = chain(64, [64] * (nodes // 2))
    start = time.perf_counter()
    layerlab.infer_shapes(g)
    mid = time.perf_counter()
    layerlab.build_model(g)
    end = time.perf_counter()
    print(f"{g.number_of_nodes()}-node graph: infer_shapes {1000 * (mid - start):.1f} ms, "
          f"build_model {1000 * (end - mid):.1f} ms (bar: well under 1 s)")


if __name__ == "__main__":
    tune_allocator()  # as the trainer does; without it page faults swamp the comparison
    torch.manual_seed(0)
    compare("MNIST MLP 784-500-10, batch 100", 784, [500, 10], batch=100, block=5,
            blocks=200)
    compare("30-layer narrow MLP (width 32), batch 32", 32, [32] * 29 + [10], batch=32,
            block=5, blocks=200)
    large_graph_time()
