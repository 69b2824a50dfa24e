"""Adapting Standardize nodes: each one's mean and standard deviation, measured on what
reaches it when the training rows go through the model — never the validation rows, whose
scores would otherwise have been seen before the model is judged on them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import networkx as nx
import torch
from torch import nn

from layerlab.core.layers.norm import Standardize

CHUNK = 4096
TINY = 1e-8  # a feature that does not vary is left unscaled (std 1), not divided by zero


class _Reached(Exception):
    """Stops the forward pass once the node being adapted has seen its input."""


@dataclass(frozen=True)
class Statistics:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    count: int


@dataclass(frozen=True)
class StatisticsRecord:
    """The Standardize nodes' statistics in a model, for the window's inspector."""

    stats: dict[str, Statistics]
    features: tuple[str, ...] = ()  # the table's feature names, where the data has them


def standardize_nodes(graph: nx.DiGraph) -> list[str]:
    """The Standardize nodes, in the order the data reaches them."""
    return [n for n in nx.topological_sort(graph) if graph.nodes[n].get("type") == "Standardize"]


def statistics(model: nn.Module) -> dict[str, Statistics]:
    """Each Standardize module's statistics (count 0: not yet adapted)."""
    return {name: Statistics(tuple(m.mean.flatten().tolist()), tuple(m.std.flatten().tolist()),
                             int(m.count))
            for name, m in model.named_children() if isinstance(m, Standardize)}


@torch.no_grad()
def adapt(model: nn.Module, graph: nx.DiGraph, x_train: torch.Tensor,
          only_fresh: bool = True) -> list[str]:
    """Set each Standardize node's statistics from `x_train` (the training rows), in the
    order the data reaches them, so that a later node sees an earlier one's output as
    adapted. With `only_fresh`, nodes that hold statistics already (loaded weights, a run
    continued) keep them. Returns the nodes adapted."""
    done = []
    for node in standardize_nodes(graph):
        module = getattr(model, node, None)
        if not isinstance(module, Standardize) or (only_fresh and int(module.count) > 0):
            continue
        _adapt_one(model, module, x_train)
        done.append(node)
    return done


def _adapt_one(model: nn.Module, module: Standardize, x_train: torch.Tensor) -> None:
    total = total_sq = None
    seen: list[torch.Tensor] = []

    def catch(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0])
        raise _Reached

    handle = module.register_forward_pre_hook(catch)
    was_training = model.training
    model.eval()
    count = 0
    try:
        for start in range(0, len(x_train), CHUNK):
            seen.clear()
            with contextlib.suppress(_Reached):
                model(x_train[start:start + CHUNK])
            value = seen[0].double().transpose(0, 1).reshape(module.mean.shape[0], -1)
            part, part_sq = value.sum(1), value.pow(2).sum(1)
            total = part if total is None else total + part
            total_sq = part_sq if total_sq is None else total_sq + part_sq
            count += value.shape[1]
    finally:
        handle.remove()
        model.train(was_training)
    assert total is not None and total_sq is not None
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp_min(0).sqrt()
    std = torch.where(std < TINY, torch.ones_like(std), std)
    module.mean.copy_(mean.reshape(module.mean.shape).to(module.mean.dtype))
    module.std.copy_(std.reshape(module.std.shape).to(module.std.dtype))
    module.count.fill_(len(x_train))
