"""The layer catalogue: every layer type of product.md §2, plus optimizers and regularisers.

The window's palette and inspector are generated from here, and `describe()` gives the
one-line description and formula that the app shows wherever a thing is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from layerlab.core.layers import (
    activation,
    conv,
    dense,
    extra,
    gpt,
    loss,
    merge,
    norm,
    op,
    plumbing,
    sequence,
)
from layerlab.core.layers.common import INITIALISERS
from layerlab.core.lora import is_adapter
from layerlab.core.spec import LayerSpec

GROUPS = ("input", "dense", "convolution", "normalization", "activation", "merge",
          "tensor", "sequence", "operation", "loss")

CATALOGUE: dict[str, LayerSpec] = {
    spec.type: spec
    for module in (dense, conv, norm, activation, merge, plumbing, sequence, gpt, extra, op,
                   loss)
    for spec in module.SPECS
}

def by_group() -> dict[str, list[LayerSpec]]:
    """The catalogue in product.md's order, grouped for the palette."""
    groups: dict[str, list[LayerSpec]] = {g: [] for g in GROUPS}
    for spec in CATALOGUE.values():
        groups[spec.group].append(spec)
    return groups


INIT_FORMULAS = {
    "default": "torch's own initialisation for the layer",
    "xavier_uniform": "W ~ U(-a, a), a = √(6 / (fan_in + fan_out))",
    "xavier_normal": "W ~ N(0, σ²), σ = √(2 / (fan_in + fan_out))",
    "kaiming_uniform": "W ~ U(-a, a), a = √(6 / fan_in)",
    "kaiming_normal": "W ~ N(0, σ²), σ = √(2 / fan_in)",
    "zeros": "W = 0 (every unit learns the same thing: a lesson in symmetry)",
    "normal": "W ~ N(0, 0.01²): small random numbers, the same at every layer's size "
              "(signals fade layer by layer in a deep net)",
}


def apply_init(module: nn.Module, scheme: str) -> None:
    """Initialise every weight matrix of `module` by `scheme` and zero its biases.

    Matrices are the parameters with two or more dimensions (Linear, Conv, Embedding,
    attention and recurrent weights); 1-D scale parameters such as LayerNorm's γ inside a
    transformer block keep their defaults, as torch's own modules do. LoRA adapters keep
    theirs (B = 0), so that a fresh adapter leaves the layer's output unchanged.
    """
    if scheme == "default":
        return
    if scheme not in INITIALISERS:
        raise ValueError(f"unknown initialiser {scheme!r}")
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if is_adapter(name):
                continue
            if param.dim() >= 2:
                _init_matrix(param, scheme)
            elif "bias" in leaf:
                param.zero_()


def _init_matrix(weight: torch.Tensor, scheme: str) -> None:
    if scheme == "zeros":
        nn.init.zeros_(weight)
    elif scheme == "xavier_uniform":
        nn.init.xavier_uniform_(weight)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(weight)
    elif scheme == "kaiming_uniform":
        nn.init.kaiming_uniform_(weight, nonlinearity="relu")
    elif scheme == "normal":
        nn.init.normal_(weight, std=0.01)
    else:
        nn.init.kaiming_normal_(weight, nonlinearity="relu")


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    title: str
    description: str
    rule: str
    defaults: dict[str, object]


OPTIMIZERS: dict[str, OptimizerSpec] = {o.name: o for o in (
    OptimizerSpec("sgd", "SGD", "Stochastic gradient descent: step against the gradient.",
                  "w ← w − η·g", {"lr": 0.01, "weight_decay": 0.0}),
    OptimizerSpec("momentum", "Momentum", "SGD with a velocity that accumulates past "
                  "gradients, rolling through small bumps and along ravines.",
                  "v ← μ·v + g;  w ← w − η·v", {"lr": 0.01, "momentum": 0.9,
                                               "weight_decay": 0.0}),
    OptimizerSpec("adagrad", "AdaGrad", "Per-weight step sizes that shrink with the sum of "
                  "all past squared gradients.", "G ← G + g²;  w ← w − η·g / (√G + ε)",
                  {"lr": 0.01, "eps": 1e-10, "weight_decay": 0.0}),
    OptimizerSpec("rmsprop", "RMSProp", "Per-weight step sizes from a moving average of "
                  "squared gradients.", "s ← α·s + (1 − α)·g²;  w ← w − η·g / (√s + ε)",
                  {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0}),
    OptimizerSpec("adam", "Adam", "Momentum and RMSProp together, with bias correction.",
                  "m ← β₁·m + (1 − β₁)·g;  v ← β₂·v + (1 − β₂)·g²;  m̂ = m / (1 − β₁ᵗ);  "
                  "v̂ = v / (1 − β₂ᵗ);  w ← w − η·m̂ / (√v̂ + ε)",
                  {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}),
    OptimizerSpec("adamw", "AdamW", "Adam with weight decay applied to the weights directly "
                  "instead of through the gradient.",
                  "Adam's step, then w ← w − η·λ·w", {"lr": 0.001, "betas": [0.9, 0.999],
                                                     "eps": 1e-8, "weight_decay": 0.01}),
)}

REGULARISERS = {
    "l1": "L1: adds λ·Σ|w| to the loss; its gradient λ·sign(w) pushes weights to exactly zero.",
    "l2": "L2: adds λ·Σw² to the loss; its gradient 2λ·w shrinks every weight towards zero.",
}


def describe(type_name: str) -> str:
    """One line for a person: what the layer does and its formula."""
    spec = CATALOGUE[type_name]
    return f"{spec.type}: {spec.formula} — {spec.description}"

