"""A traced training step against a plain one (MNIST MLP, batch 100; bar ≤ 2.5× the time,
goal ≤ 2×), and the memory a trace of a 10-million-parameter model holds against its stated
bound. One torch thread on both sides, as bench_vs_plain: on a busy 2-core machine two
OpenMP threads make either side's time mostly a matter of the neighbours' load."""

from __future__ import annotations

import statistics
import time

import networkx as nx
import torch

import layerlab
from layerlab.core.compiler import build_loss
from layerlab.core.runtime import tune_allocator
from layerlab.core.tracer import DEFAULT_KEEP, DEFAULT_PARAM_BUDGET, StepTrace


def mlp(widths: list[int]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node("input", type="Input", params={"shape": [widths[0]]})
    prev = "input"
    for i, width in enumerate(widths[1:]):
        g.add_node(f"fc{i}", type="Linear", params={"out_features": width})
        g.add_edge(prev, f"fc{i}")
        prev = f"fc{i}"
        if i < len(widths) - 2:
            g.add_node(f"relu{i}", type="ReLU", params={})
            g.add_edge(prev, f"relu{i}")
            prev = f"relu{i}"
    g.add_node("loss", type="CrossEntropyLoss", params={})
    g.add_edge(prev, "loss")
    return g


def step_time() -> None:
    g = mlp([784, 500, 10])
    model = layerlab.build_model(g)
    loss_fn = build_loss(g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(100, 784), torch.randint(0, 10, (100,))

    def plain() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    def traced() -> None:
        layerlab.trace_step(g, model, x, y, opt)

    ratios = []
    for _ in range(60):
        times = []
        for fn in (plain, traced):
            start = time.perf_counter()
            for _ in range(3):
                fn()
            times.append(time.perf_counter() - start)
        ratios.append(times[1] / times[0])
    print(f"traced / plain step time, MNIST MLP batch 100: {statistics.median(ratios):.2f}× "
          f"(median of 60 paired blocks; bar ≤ 2.5×, goal ≤ 2×)")


def tensor_bytes(trace: StepTrace) -> int:
    tensors = [t for _, t in trace.forward] + [t for _, t in trace.backward]
    tensors += [*trace.param_grads.values(), *trace.updates.values(), *trace.weights.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def memory() -> None:
    g = mlp([784, 3000, 2500, 10])
    model = layerlab.build_model(g)
    params = sum(p.numel() for p in model.parameters())
    batch = 256
    trace = layerlab.trace_step(g, model, torch.rand(batch, 784),
                                torch.randint(0, 10, (batch,)),
                                torch.optim.SGD(model.parameters(), lr=0.01))
    per_sample = sum(s.shape[1:].numel() if hasattr(s.shape, "numel") else
                     int(torch.Size(s.shape[1:]).numel()) for s in trace.stats.values())
    bound = 2 * DEFAULT_KEEP * per_sample * 4 + 3 * DEFAULT_PARAM_BUDGET * 4
    full = 2 * batch * per_sample * 4 + 3 * params * 4
    print(f"trace of a {params / 1e6:.1f}M-parameter model, batch {batch}: "
          f"{tensor_bytes(trace) / 2**20:.1f} MiB of tensors kept; stated bound "
          f"{bound / 2**20:.1f} MiB (2 × {DEFAULT_KEEP} samples of every node + 3 × "
          f"{DEFAULT_PARAM_BUDGET:,} parameter values); keeping everything would take "
          f"{full / 2**20:.1f} MiB")


if __name__ == "__main__":
    torch.set_num_threads(1)
    tune_allocator()
    torch.manual_seed(0)
    step_time()
    memory()
