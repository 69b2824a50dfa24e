"""Normalisation layers: BatchNorm1d, BatchNorm2d, LayerNorm, Standardize."""

from __future__ import annotations

import torch
from torch import nn

from layerlab.core.spec import Ctor, Ctx, LayerSpec, Param, Shape, ShapeError, ctor, need_rank

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
    dims = ctx.params["normalized_dims"]
    if dims > len(ctx.shape):
        raise ShapeError(f"{ctx.node_id} normalises over its last {dims} dimensions but "
                         f"receives {ctx.src()}, which has {len(ctx.shape)}")
    return ctx.shape


def _layer_norm(ctx: Ctx) -> Ctor:
    """nn.LayerNorm over the last `normalized_dims` sizes (one size is written as an int)."""
    p = dict(ctx.params)
    dims = p.pop("normalized_dims")
    shape = ctx.shape[-1] if dims == 1 else list(ctx.shape[-dims:])
    return ctor(nn.LayerNorm, shape, **p)


def _bn(cls: type[nn.Module]):
    return lambda c: ctor(cls, c.shape[0], **c.params)


class Standardize(nn.Module):  # pragma: no mutate block (exports copy its source)
    """Scales each feature (or channel) by fixed statistics of the training data, held as
    buffers so that they travel with the weights and every export: like Keras's
    Normalization layer after adapt()."""

    def __init__(self, num_features: int, rank: int = 1) -> None:
        super().__init__()
        shape = (num_features, *(1,) * (rank - 1))
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))  # 0: not adapted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _standardize_shape(ctx: Ctx) -> Shape:
    need_rank(ctx, (1, 2, 3, 4), "[F] or [C, ...]")
    return ctx.shape


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
        "LayerNorm", "normalization", "Normalises each sample over its last dimension(s), "
        "then rescales it; the transformer's normaliser, and ConvNeXt's over the channels "
        "of an [H, W, C] map.",
        "y = γ·(x - mean(x)) / √(var(x) + ε) + β",
        params=(
            Param("normalized_dims", "int", 1, minimum=1, maximum=4,
                  help="How many trailing dimensions are normalised together: 1 = the last "
                       "(features, or C of [H, W, C]); 3 = a whole [C, H, W] sample. "
                       "torch's normalized_shape is their sizes."),
            EPS,
            Param("elementwise_affine", "bool", True, help="Learn a scale γ and shift β."),
            Param("bias", "bool", True, help="Learn the shift β."),
        ),
        infer=_ln_shape,
        build=_layer_norm,
    ),
    LayerSpec(
        "Standardize", "normalization", "Subtracts each feature's mean and divides by its "
        "standard deviation, both measured on the training rows when a run starts on fresh "
        "weights (or with Adapt to data); they are kept with the weights and exports.",
        "y = (x - mean_train) / std_train",
        params=(), infer=_standardize_shape,
        build=lambda c: ctor(Standardize, c.shape[0], len(c.shape)) if len(c.shape) > 1
        else ctor(Standardize, c.shape[0]),
    ),
]
