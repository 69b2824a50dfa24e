"""Checking a node's chain rule against torch autograd on a hand-written twin.

A twin is a plain torch function of the node's inputs and, as `w`, its parameters by name
(fresh leaf tensors that require grad). Autograd of ⟨twin(inputs), dL/dy⟩ — dL/dy being
what flowed into the node in the traced step — gives dL/d(inputs) and dL/dθ, which the
rule computed from the trace must equal; for a loss, autograd of the twin's loss itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import networkx as nx
import torch

import layerlab
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.explain import explain_node

Twin = Callable[..., torch.Tensor]


def traced(g: nx.DiGraph, x: torch.Tensor, t: torch.Tensor, seed: int = 0,
           keep: int | None = None) -> tuple[torch.fx.GraphModule, layerlab.StepTrace]:
    """A fresh model of g and one traced step on (x, t), torch seeded just before it."""
    model = layerlab.build_model(g)
    torch.manual_seed(seed)
    trace = layerlab.trace_step(g, model, x, t, keep=len(x) if keep is None else keep)
    return model, trace


def twin_grads(g: nx.DiGraph, model: torch.fx.GraphModule, trace: layerlab.StepTrace,
               node: str, twin: Twin, seed: int | None = None
               ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
    """Autograd's dL/d(inputs) and dL/dθ (state-dict keys) for the node, from its twin."""
    xs = [trace.output(src).clone() for src in trace.inputs[node]]
    for x in xs:
        x.requires_grad_(x.is_floating_point())
    module = getattr(model, node, None)
    params = {name: p.detach().clone().requires_grad_()
              for name, p in (module.named_parameters() if module is not None else [])}
    if seed is not None:
        torch.manual_seed(seed)  # the twin draws the same dropout masks as the step did
    out = twin(*xs, w=params)
    spec = CATALOGUE[g.nodes[node]["type"]]
    total = out if spec.is_loss else (out * trace.grad(node)).sum()
    total.backward()
    return ([x.grad if x.requires_grad else None for x in xs],
            {f"{node}.{k}": p.grad for k, p in params.items()})


def check(g: nx.DiGraph, x: torch.Tensor, t: torch.Tensor, node: str, twin: Twin, *,
          seed: int | None = None, samples: Sequence[int] = (0, 1, -1),
          atol: float = 2e-6) -> Any:
    """The rule at `node` agrees with autograd on the twin, for several samples, and with
    what autograd recorded in the step. Returns the first sample's explanation."""
    model, trace = traced(g, x, t, seed=0 if seed is None else seed)
    inputs, params = twin_grads(g, model, trace, node, twin, seed)
    first = None
    for s in samples:
        s %= len(x)
        e = explain_node(trace, g, node, sample=s)
        first = first or e
        assert len(e.grad_inputs) == len(inputs)
        for mine, theirs in zip(e.grad_inputs, inputs, strict=True):
            if theirs is None:
                assert mine is None
            else:
                torch.testing.assert_close(mine, theirs[s], atol=atol, rtol=1e-4)
        assert e.param_grads is not None or not params
        for key, grad in params.items():
            torch.testing.assert_close(e.param_grads[key], grad, atol=atol, rtol=1e-4)
        assert e.max_diff is None or e.matches, (e.max_diff, e.scale)
    return first
