"""Activation functions: the non-linearities between layers."""

from __future__ import annotations

from torch import nn

from layerlab.core.layers.common import same_shape
from layerlab.core.spec import Ctx, LayerSpec, Param, Shape, batch_dim, ctor


def _dim_shape(ctx: Ctx) -> Shape:
    batch_dim(ctx, ctx.params["dim"])
    return ctx.shape


def _simple(name: str, description: str, formula: str, module: type[nn.Module]) -> LayerSpec:
    return LayerSpec(name, "activation", description, formula, params=(), infer=same_shape,
                     build=lambda c: ctor(module))


DIM = Param("dim", "int", -1, help="Dimension the probabilities sum to 1 over (batch is 0); "
            "torch requires it, LayerLab defaults to the last.")

SPECS = [
    _simple("ReLU", "Rectified linear unit: keeps positive values, zeroes negative ones.",
            "f(x) = max(0, x)", nn.ReLU),
    LayerSpec(
        "LeakyReLU", "activation", "Like ReLU, but lets a small slope α through for negative "
        "inputs so units cannot die.", "f(x) = max(αx, x)",
        params=(Param("negative_slope", "float", 0.01, help="Slope α for negative inputs.",
                      minimum=0.0),),
        infer=same_shape, build=lambda c: ctor(nn.LeakyReLU, c.params["negative_slope"]),
        key_params=("negative_slope",),
    ),
    _simple("Sigmoid", "Squashes any value into (0, 1); saturates, so gradients vanish for "
            "large |x|.", "f(x) = 1 / (1 + e^-x)", nn.Sigmoid),
    _simple("Tanh", "Squashes any value into (-1, 1), centred on zero.",
            "f(x) = (e^x - e^-x) / (e^x + e^-x)", nn.Tanh),
    LayerSpec(
        "GELU", "activation", "Gaussian error linear unit: x weighted by the chance a standard "
        "normal is below x; used in transformers.", "f(x) = x·Φ(x)",
        params=(Param("approximate", "choice", "none", choices=("none", "tanh"),
                      help="'tanh' uses the faster tanh approximation of Φ."),),
        infer=same_shape, build=lambda c: ctor(nn.GELU, approximate=c.params["approximate"]),
    ),
    _simple("SiLU", "Sigmoid linear unit (swish): x gated by its own sigmoid.",
            "f(x) = x·σ(x)", nn.SiLU),
    LayerSpec(
        "ELU", "activation", "Exponential linear unit: identity for positive x, a smooth "
        "curve towards -α for negative x.", "f(x) = x if x > 0 else α(e^x - 1)",
        params=(Param("alpha", "float", 1.0, help="Value α approached for very negative x.",
                      minimum=0.0),),
        infer=same_shape, build=lambda c: ctor(nn.ELU, alpha=c.params["alpha"]),
    ),
    LayerSpec(
        "Softmax", "activation", "Turns scores into probabilities that sum to 1.",
        "f(x)_i = e^x_i / Σ_j e^x_j", params=(DIM,), infer=_dim_shape,
        build=lambda c: ctor(nn.Softmax, dim=c.params["dim"]),
    ),
    LayerSpec(
        "LogSoftmax", "activation", "The logarithm of Softmax, computed stably; pairs with "
        "NLLLoss.", "f(x)_i = x_i - log Σ_j e^x_j", params=(DIM,), infer=_dim_shape,
        build=lambda c: ctor(nn.LogSoftmax, dim=c.params["dim"]),
    ),
]
