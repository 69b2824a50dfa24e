"""Parameters and rules that several layer groups share."""

from __future__ import annotations

from layerlab.core.spec import Ctx, Param, Shape

INITIALISERS = (
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "zeros",
    "normal",
)

INIT = Param(
    "init", "choice", "default", choices=INITIALISERS,
    help="How the weights start: torch's default, Xavier/Glorot (fan-in + fan-out), "
         "Kaiming/He (fan-in, for ReLU), zeros, or plain normal N(0, 0.01²). Biases start at "
         "zero unless 'default'.",
)
BIAS = Param("bias", "bool", True, help="Learn an additive bias b.")


def same_shape(ctx: Ctx) -> Shape:
    return ctx.shape
