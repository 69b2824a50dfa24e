"""Normalisation layers: BatchNorm1d, BatchNorm2d, LayerNorm."""

from __future__ import annotations

from torch import nn

from layerlab.core.spec import Ctx, LayerSpec, Param, Shape, ctor, need_rank

EPS = Param("eps", "float", 1e-5, minimum=0.0, help="Added to the variance for stability.")
MOMENTUM = Param("momentum", "float", 0.1, minimum=0.0, maximum=1.0,
                 help="Weight of the current batch in the running mean and variance.")
AFFINE = Param("affine", "bool", True, help="Learn a scale γ and shift β per channel.")
TRACK = Param("track_running_stats", "bool", True,
              help="Keep running statistics to use at evaluation.")


def _bn1d_shape(ctx: Ctx) -> Shape:
    need_rank(ctx, (1, 2), "[C] or [C, L]")
    return ctx.shape


def _bn2d_shape(ctx: Ctx) -> Shape:
    need_rank(ctx, (3,), "[C, H, W]")
    return ctx.shape


def _ln_shape(ctx: Ctx) -> Shape:
    need_rank(ctx, (1, 2, 3, 4), "[..., D]")
    return ctx.shape


def _bn(cls: type[nn.Module]):
    return lambda c: ctor(cls, c.shape[0], **c.params)


BN_FORMULA = "y = γ·(x - mean_batch) / √(var_batch + ε) + β"

SPECS = [
    LayerSpec(
        "BatchNorm1d", "normalization", "Normalises each feature over the batch, then "
        "rescales it; speeds up and steadies training.", BN_FORMULA,
        params=(EPS, MOMENTUM, AFFINE, TRACK), infer=_bn1d_shape, build=_bn(nn.BatchNorm1d),
    ),
    LayerSpec(
        "BatchNorm2d", "normalization", "Normalises each channel over the batch and the "
        "image, then rescales it.", BN_FORMULA,
        params=(EPS, MOMENTUM, AFFINE, TRACK), infer=_bn2d_shape, build=_bn(nn.BatchNorm2d),
    ),
    LayerSpec(
        "LayerNorm", "normalization", "Normalises each sample over its last dimension, then "
        "rescales it; the transformer's normaliser.",
        "y = γ·(x - mean(x)) / √(var(x) + ε) + β",
        params=(
            EPS,
            Param("elementwise_affine", "bool", True, help="Learn a scale γ and shift β."),
            Param("bias", "bool", True, help="Learn the shift β."),
        ),
        infer=_ln_shape,
        build=lambda c: ctor(nn.LayerNorm, c.shape[-1], **c.params),
    ),
]
