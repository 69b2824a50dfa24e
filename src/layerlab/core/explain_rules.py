"""The vocabulary of the chain-rule rules: what a rule sees, what it gives back, and the
small backward steps several rules share (a linear map, a softmax, a LayerNorm).

A rule works on the kept samples at once (dimension 0 of every value), from the recorded
forward values, the recorded dL/d(output) and the weights as they were before the update;
it never asks autograd. Its gradients for the inputs keep that sample dimension, its
parameter gradients are summed over the kept samples (the whole batch when all were kept).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Local:
    """What one node's rule sees. `xs` and `dy` hold the kept samples (dimension 0)."""

    node: str
    params: dict[str, Any]  # the layer's parameters, torch's defaults filled in
    xs: tuple[Tensor, ...]  # the inputs, in port order
    y: Tensor | None  # the output (None for a loss: its value is the batch's loss)
    dy: Tensor  # dL/dy (for a loss: 1)
    weights: dict[str, Tensor]  # the layer's parameters by their name inside it
    extras: dict[str, Any]  # trace.extras of the node
    batch: int  # samples in the whole batch
    sample: int  # the sample whose terms are shown
    targets: Tensor | None = None  # the kept targets, as the loss saw them
    # a layer with several outputs (Split, Chunk): each port's value and dL/d(value);
    # `y` and `dy` are then port 0's
    ys: tuple[Tensor, ...] = ()
    dys: tuple[Tensor, ...] = ()

    def weight(self, name: str) -> Tensor | None:
        return self.weights.get(name)


@dataclass(frozen=True)
class Part:
    """One named piece inside a composite layer, for one sample: its value and dL/d(it)."""

    name: str
    formula: str
    value: Tensor
    grad: Tensor


@dataclass
class Rule:
    """What a rule gives back: see Local for the sample dimension."""

    formula: str
    grads: list[Tensor | None]  # dL/d(input) per port, kept samples; None: no gradient
    params: dict[str, Tensor] = field(default_factory=dict)  # name inside the layer → dL/dθ
    terms: dict[str, Tensor] = field(default_factory=dict)  # for the sample
    parts: list[Part] = field(default_factory=list)


RuleFn = Callable[[Local], Rule]


class Unexplained(ValueError):
    """A rule cannot be evaluated from what this trace recorded; the message says why."""


def need(v: Local, name: str) -> Tensor:
    """A parameter of the layer, or Unexplained naming it."""
    w = v.weights.get(name)
    if w is None:
        raise Unexplained(f"{v.node}.{name} was too large to keep in this trace, so "
                          "its rule cannot be evaluated")
    return w


def floating(t: Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def sample_dim(dim: int, rank: int) -> int:
    """A torch dimension (batch counted) as an index into the batched tensor."""
    return dim % rank


def linear_back(x: Tensor, w: Tensor, dy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """y = x·Wᵀ + b over any leading dimensions → (dx, dW, db)."""
    dx = dy @ w
    flat_dy, flat_x = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
    return dx, flat_dy.T @ flat_x, flat_dy.sum(0)


def softmax_back(y: Tensor, dy: Tensor, dim: int) -> Tensor:
    """y = softmax(x) → dx = y ⊙ (dy − Σ dy ⊙ y)."""
    return y * (dy - (dy * y).sum(dim, keepdim=True))


def layer_norm(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(x̂, 1/σ) over the last dimension, σ² the biased variance."""
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, unbiased=False)
    inv = (var + eps).rsqrt()
    return (x - mean) * inv, inv


def layer_norm_back(x: Tensor, gamma: Tensor | None, eps: float,
                    dy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """y = γ·x̂ + β over the last dimension → (dx, dγ, dβ):
    dx = (1/σ)·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)) with ĝ = γ ⊙ dy."""
    x_hat, inv = layer_norm(x, eps)
    g = dy * gamma if gamma is not None else dy
    dx = inv * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
    flat = dy.reshape(-1, dy.shape[-1])
    return dx, (flat * x_hat.reshape(flat.shape)).sum(0), flat.sum(0)


def gelu_slope(x: Tensor, approximate: str) -> Tensor:
    """d/dx of x·Φ(x), or of its tanh approximation."""
    if approximate == "tanh":
        k = (2 / torch.pi) ** 0.5
        inner = k * (x + 0.044715 * x ** 3)
        t = torch.tanh(inner)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
    cdf = 0.5 * (1 + torch.erf(x / 2 ** 0.5))
    pdf = torch.exp(-0.5 * x * x) / (2 * torch.pi) ** 0.5
    return cdf + x * pdf
