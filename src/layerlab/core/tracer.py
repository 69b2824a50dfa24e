"""One real training step recorded node by node (an fx Interpreter that keeps every value).

The recorder runs the same modules and functions in the same order as the compiled model,
so the traced step computes bit-for-bit what an untraced step would; tensor hooks on each
node's output record dL/d(output) in the order autograd produces them. What is kept is
bounded: full-batch statistics for every tensor, values only for the first `keep` samples
and for parameters within a budget (StepTrace.kept says which).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx
import torch
import torch.fx

from layerlab.core.compiler import NODE_META

HIST_BINS = 32
DEFAULT_KEEP = 8
DEFAULT_PARAM_BUDGET = 4_000_000  # elements of parameter values kept, per kind


@dataclass(frozen=True)
class Stats:
    """Full-batch statistics of one tensor."""

    shape: tuple[int, ...]
    mean: float
    std: float
    min: float
    max: float
    norm: float
    zeros: float  # fraction of exact zeros
    finite: bool
    hist: tuple[int, ...]  # HIST_BINS counts over [min, max]
    dead: float | None = None  # ReLU: fraction of units at zero for every sample
    saturated: float | None = None  # Sigmoid/Tanh: fraction of values within 1% of a bound

    @staticmethod
    def of(t: torch.Tensor, layer: str = "") -> Stats:
        x = t.detach().float()
        dead = saturated = None
        if layer == "ReLU" and x.dim() > 1:
            dead = float((x == 0).all(dim=0).float().mean())
        elif layer == "Sigmoid":
            saturated = float(((x < 0.01) | (x > 0.99)).float().mean())
        elif layer == "Tanh":
            saturated = float((x.abs() > 0.99).float().mean())
        finite = bool(torch.isfinite(x).all())
        flat = x.reshape(-1)
        if flat.numel() == 0:
            return Stats(tuple(t.shape), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, True, (0,) * HIST_BINS)
        good = flat[torch.isfinite(flat)] if not finite else flat
        lo, hi = (float(good.min()), float(good.max())) if good.numel() else (0.0, 0.0)
        hist = torch.histc(good, HIST_BINS, lo, hi) if good.numel() and hi > lo else \
            torch.zeros(HIST_BINS).index_fill_(0, torch.tensor([HIST_BINS // 2]), good.numel())
        return Stats(
            tuple(t.shape), float(flat.mean()), float(flat.std()) if flat.numel() > 1 else 0.0,
            float(flat.min()), float(flat.max()), float(torch.linalg.vector_norm(flat)),
            float((flat == 0).float().mean()), finite, tuple(int(c) for c in hist.tolist()),
            dead, saturated)


@dataclass
class StepTrace:
    """One training step. `forward` and `backward` hold the first `kept['samples']` samples of
    each value (the whole batch when it is smaller); `stats` and `grad_stats` cover the
    whole batch."""

    forward: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    backward: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    loss: torch.Tensor | None = None
    param_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    updates: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # before the update
    inputs: dict[str, list[str]] = field(default_factory=dict)  # node → its sources, in order
    stats: dict[str, Stats] = field(default_factory=dict)
    grad_stats: dict[str, Stats] = field(default_factory=dict)
    param_stats: dict[str, dict[str, Stats]] = field(default_factory=dict)  # key → kind → stats
    targets: torch.Tensor | None = None
    kept: dict[str, object] = field(default_factory=dict)

    def output(self, node: str) -> torch.Tensor:
        return dict(self.forward)[node]

    def grad(self, node: str) -> torch.Tensor:
        return dict(self.backward)[node]


class StepRecorder(torch.fx.Interpreter):
    """Records one step; the caller drives it: forward(), watch(loss), after_backward(),
    before_update(), after_update(), then .trace."""

    def __init__(self, model: torch.fx.GraphModule, graph: nx.DiGraph,
                 keep: int = DEFAULT_KEEP, param_budget: int = DEFAULT_PARAM_BUDGET) -> None:
        super().__init__(model)
        self.model = model
        self.keep = keep
        self.param_budget = param_budget
        self.trace = StepTrace()
        self.trace.inputs = {n: [e[0] for e in sorted(graph.in_edges(n, data=True),
                                                      key=lambda e: e[2].get("port", 0))]
                             for n in graph}
        self._types = {n: d.get("type", "") for n, d in graph.nodes(data=True)}
        self._live: dict[str, torch.Tensor] = {}
        self._before: dict[str, torch.Tensor] = {}
        self._kept_params: list[str] = []

    def _first(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach()[: self.keep].clone().cpu()

    def run_node(self, n: torch.fx.Node) -> object:
        out = super().run_node(n)
        node = n.meta.get(NODE_META)
        if node is not None and isinstance(out, torch.Tensor):
            self.trace.forward.append((node, self._first(out)))
            self.trace.stats[node] = Stats.of(out, self._types.get(node, ""))
            if out.requires_grad:
                self._live[node] = out
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def watch(self, loss: torch.Tensor, targets: torch.Tensor) -> None:
        """Hook every node's output before backward, so gradients arrive in autograd's order."""
        self.trace.loss = loss.detach().clone().cpu()
        self.trace.targets = self._first(targets)
        for node, out in self._live.items():
            out.register_hook(self._grad_hook(node))

    def _grad_hook(self, node: str) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            self.trace.backward.append((node, self._first(grad)))
            self.trace.grad_stats[node] = Stats.of(grad)
        return hook

    def after_backward(self) -> None:
        budget = self.param_budget
        for key, param in self.model.named_parameters():
            stats = {"weight": Stats.of(param)}
            if param.grad is not None:
                stats["grad"] = Stats.of(param.grad)
            self.trace.param_stats[key] = stats
            if param.grad is None or param.numel() > budget:
                continue
            budget -= param.numel()
            self._kept_params.append(key)
            self.trace.param_grads[key] = param.grad.detach().clone().cpu()
            self.trace.weights[key] = param.detach().clone().cpu()

    def before_update(self) -> None:
        params = dict(self.model.named_parameters())
        self._before = {k: params[k].detach().clone() for k in self._kept_params}

    def after_update(self) -> None:
        params = dict(self.model.named_parameters())
        for key, before in self._before.items():
            delta = params[key].detach() - before
            self.trace.updates[key] = delta.cpu()
            self.trace.param_stats[key]["update"] = Stats.of(delta)
        self._before = {}

    def finish(self, batch: int) -> StepTrace:
        self._live = {}
        summarised = [k for k in self.trace.param_stats if k not in self.trace.param_grads]
        self.trace.kept = {
            "samples": min(self.keep, batch), "batch": batch,
            "params_kept": list(self.trace.param_grads), "params_summarised": summarised,
            "note": f"values of the first {min(self.keep, batch)} of {batch} samples; "
                    f"full statistics for all; parameter values up to {self.param_budget:,} "
                    "elements",
        }
        return self.trace


def trace_step(graph: nx.DiGraph, model: torch.fx.GraphModule, inputs: torch.Tensor,
               targets: torch.Tensor, optimizer: torch.optim.Optimizer | None = None, *,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
               keep: int = DEFAULT_KEEP,
               param_budget: int = DEFAULT_PARAM_BUDGET) -> StepTrace:
    """Record one training step of `model` (compiled from `graph`) on one batch.

    The loss is the graph's loss node applied to the model's output and `targets` (or
    `loss_fn` when given, e.g. the trainer's own with its target encoding). With an
    optimizer, the step is taken and `.updates` holds each parameter's change.
    """
    if loss_fn is None:
        from layerlab.core.compiler import build_loss

        module = build_loss(graph)
        if module is None:
            raise ValueError("the graph has no loss node, so there is no step to trace")
        loss_fn = module
    recorder = StepRecorder(model, graph, keep=keep, param_budget=param_budget)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    output = recorder.forward(inputs)
    loss = loss_fn(output, targets)
    recorder.watch(loss, targets)
    loss.backward()
    recorder.after_backward()
    if optimizer is not None:
        recorder.before_update()
        optimizer.step()
        recorder.after_update()
        optimizer.zero_grad(set_to_none=True)
    return recorder.finish(len(inputs))
