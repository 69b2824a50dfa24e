"""Layers that real vision models use beyond the first catalogue: MobileNet's ReLU6,
Hardswish and Hardsigmoid, channel-wise and self-normalising dropout, and the stochastic
depth of EfficientNet, ConvNeXt and Swin (torchvision.ops.StochasticDepth, without needing
torchvision). Type and parameter names are torch's (torchvision's for StochasticDepth), so
an imported model maps onto them one to one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from layerlab.core.layers.common import same_shape
from layerlab.core.spec import REQUIRED, Ctx, LayerSpec, Param, Shape, ctor, need_rank


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: while training, zeroes a whole sample (mode 'row')
    or the whole batch ('batch') with probability p and scales what survives by 1/(1 - p);
    the identity at evaluation. It draws its noise exactly as torchvision does, so a seeded
    step matches torchvision's."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.dim() - 1) if self.mode == "row" else [1] * x.dim()
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"


# the layers whose backward needs the mask their step drew (core/trace_extras.py keeps it)
MASKED = (nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, StochasticDepth)

P = Param("p", "float", 0.5, minimum=0.0, maximum=1.0, help="Probability of zeroing.")


def _rank(ranks: tuple[int, ...], layout: str) -> Callable[[Ctx], Shape]:
    def infer(ctx: Ctx) -> Shape:
        need_rank(ctx, ranks, layout)
        return ctx.shape
    return infer


def _activation(name: str, description: str, formula: str,
                module: type[nn.Module]) -> LayerSpec:
    return LayerSpec(name, "activation", description, formula, params=(), infer=same_shape,
                     build=lambda c: ctor(module))


def _dropout(name: str, description: str, formula: str, module: type[nn.Module],
             infer: Callable[[Ctx], Shape] = same_shape) -> LayerSpec:
    return LayerSpec(name, "dense", description, formula, params=(P,), infer=infer,
                     build=lambda c: ctor(module, c.params["p"]), key_params=("p",))


SPECS = [
    _activation("ReLU6", "ReLU capped at 6, which keeps activations small enough for low "
                "precision; MobileNet v2's activation.", "f(x) = min(max(0, x), 6)",
                nn.ReLU6),
    _activation("Hardswish", "A cheap, piecewise approximation of SiLU (swish); MobileNet "
                "v3's activation.", "f(x) = x·min(max(0, x + 3), 6) / 6", nn.Hardswish),
    _activation("Hardsigmoid", "A cheap, piecewise-linear sigmoid; gates squeeze-and-"
                "excitation blocks in MobileNet v3.", "f(x) = min(max(0, x + 3), 6) / 6",
                nn.Hardsigmoid),
    _dropout("Dropout1d", "During training, zeroes whole channels of a signal with "
             "probability p and scales the rest by 1/(1-p); does nothing at evaluation.",
             "y[c] = x[c]·m[c] / (1 - p), m[c] ~ Bernoulli(1 - p)", nn.Dropout1d,
             _rank((2,), "[C, L]")),
    _dropout("Dropout2d", "During training, zeroes whole feature maps with probability p "
             "and scales the rest by 1/(1-p); does nothing at evaluation.",
             "y[c] = x[c]·m[c] / (1 - p), m[c] ~ Bernoulli(1 - p)", nn.Dropout2d,
             _rank((3,), "[C, H, W]")),
    _dropout("AlphaDropout", "Dropout for SELU networks: dropped values are set to SELU's "
             "negative limit and the result is rescaled so that the mean and variance are "
             "kept; does nothing at evaluation.",
             "y = a·(x·m + α′·(1 - m)) + b, α′ = -1.758, m ~ Bernoulli(1 - p)",
             nn.AlphaDropout),
    LayerSpec(
        "StochasticDepth", "dense", "During training, drops a whole residual branch for a "
        "sample ('row') or for the batch ('batch') with probability p and scales the rest "
        "by 1/(1-p); does nothing at evaluation (torchvision.ops.StochasticDepth).",
        "y = x·m / (1 - p), m ~ Bernoulli(1 - p) per sample (row) or per batch",
        params=(
            Param("p", "float", REQUIRED, minimum=0.0, maximum=1.0, suggest=0.1,
                  help="Probability of dropping the branch."),
            Param("mode", "choice", "row", choices=("row", "batch"),
                  help="'row' drops each sample on its own, 'batch' the whole batch at "
                       "once."),
        ),
        infer=same_shape,
        build=lambda c: ctor(StochasticDepth, c.params["p"], mode=c.params["mode"]),
        key_params=("p",),
    ),
]
