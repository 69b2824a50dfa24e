"""Input and dense layers: Input, Linear, Flatten, Reshape, Dropout, Identity."""

from __future__ import annotations

import math
from typing import Any

import torch.fx
from torch import nn

from layerlab.core.layers.common import BIAS, INIT, same_shape
from layerlab.core.lora import LORA_ALPHA, LORA_RANK, LoRALinear, caption
from layerlab.core.spec import (
    Ctor,
    Ctx,
    LayerSpec,
    Param,
    Shape,
    ShapeError,
    batch_dim,
    ctor,
    fmt_shape,
)
from layerlab.core.tying import TIE


def _input_shape(ctx: Ctx) -> Shape:
    shape = tuple(ctx.params["shape"])
    if any(d < 1 for d in shape):
        raise ShapeError(f"shape {fmt_shape(shape)} must hold positive sizes only")
    return shape


def _linear_shape(ctx: Ctx) -> Shape:
    if not ctx.shape:
        raise ShapeError(f"{ctx.node_id} needs at least one feature dimension but receives "
                         f"a scalar from {ctx.in_ids[0]}")
    return (*ctx.shape[:-1], ctx.params["out_features"])


def _linear(ctx: Ctx) -> Ctor:
    p = ctx.params
    if p["lora_rank"]:  # frozen W and b plus trainable adapters (core/lora.py)
        return ctor(LoRALinear, ctx.shape[-1], p["out_features"], bias=p["bias"],
                    rank=p["lora_rank"], alpha=p["lora_alpha"])
    return ctor(nn.Linear, ctx.shape[-1], p["out_features"], bias=p["bias"])


def _linear_caption(params: dict[str, Any], inputs: int) -> str:
    """Its canvas lines: out_features and any LoRA adapter, then whose table it reuses."""
    text = caption(("out_features",))(params, inputs)
    tied = params.get("tie_weight")
    return text + (f"\nW = {tied}'s table (tied)" if tied else "")


def _flatten_shape(ctx: Ctx) -> Shape:
    start = batch_dim(ctx, ctx.params["start_dim"], "start_dim")
    end = batch_dim(ctx, ctx.params["end_dim"], "end_dim")
    if start > end:
        raise ShapeError(f"start_dim={ctx.params['start_dim']} comes after "
                         f"end_dim={ctx.params['end_dim']} for {ctx.src()}")
    shape = ctx.shape
    return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])


def _reshape_shape(ctx: Ctx) -> Shape:
    target = list(ctx.params["shape"])
    total = math.prod(ctx.shape)
    if target.count(-1) > 1 or any(d == 0 or d < -1 for d in target):
        raise ShapeError(f"shape {fmt_shape(target)} may hold positive sizes and one -1 only")
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if total % known:
            raise ShapeError(f"cannot reshape {ctx.src()} ({total} values) into "
                             f"{fmt_shape(target)}")
        target[target.index(-1)] = total // known
    elif known != total:
        raise ShapeError(f"cannot reshape {ctx.src()} ({total} values) into "
                         f"{fmt_shape(target)} ({known} values)")
    return tuple(target)


def _emit_reshape(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
    """`x.reshape(-1, *shape)` with the -1 of `shape` resolved: only the batch is inferred."""
    return g.call_method("reshape", (args[0], -1, *_reshape_shape(ctx)))


SPECS = [
    LayerSpec(
        "Input", "input", "The network's input: one sample, without the batch dimension.",
        "x", min_inputs=0, max_inputs=0, input_dtype="any", infer=_input_shape,
        params=(
            Param("shape", "shape", help="Shape of one sample, batch excluded: [784], "
                  "[1, 28, 28], [32] token ids.", suggest=[2]),
            Param("dtype", "choice", "float32", choices=("float32", "int64"),
                  help="float32 for measurements and pixels, int64 for token ids."),
        ), key_params=("shape",),
    ),
    LayerSpec(
        "Linear", "dense", "Fully connected layer: every output is a weighted sum of all "
        "inputs plus a bias.", "y = x·Wᵀ + b",
        params=(
            Param("out_features", "int", help="Number of outputs (neurons).", minimum=1,
                  suggest=16),
            BIAS, INIT, LORA_RANK, LORA_ALPHA, TIE,
        ), infer=_linear_shape, build=_linear, key_params=("out_features",),
        caption=_linear_caption, keywords=("lora", "adapter", "fine-tuning", "tie", "tied"),
    ),
    LayerSpec(
        "Flatten", "dense", "Merges dimensions into one, e.g. feature maps into a vector.",
        "y = reshape(x, [N, C·H·W])",
        params=(
            Param("start_dim", "int", 1, help="First dimension to merge (batch is 0)."),
            Param("end_dim", "int", -1, help="Last dimension to merge."),
        ), infer=_flatten_shape, build=lambda c: ctor(nn.Flatten, c.params["start_dim"],
                                                             c.params["end_dim"]),
        input_dtype="any",
    ),
    LayerSpec(
        "Reshape", "dense", "Rearranges the values of each sample into a new shape.",
        "y = reshape(x, [N, *shape])",
        params=(Param("shape", "shape", help="New shape, batch excluded; one entry may be -1.",
                      suggest=[-1]),),
        infer=_reshape_shape, emit=_emit_reshape, input_dtype="any", key_params=("shape",),
    ),
    LayerSpec(
        "Dropout", "dense", "During training, zeroes each value with probability p and "
        "scales the rest by 1/(1-p); does nothing at evaluation.",
        "y = x·m / (1 - p), m ~ Bernoulli(1 - p)",
        params=(Param("p", "float", 0.5, help="Probability of zeroing a value.",
                      minimum=0.0, maximum=1.0),),
        infer=same_shape, build=lambda c: ctor(nn.Dropout, c.params["p"]), key_params=("p",),
    ),
    LayerSpec(
        "Identity", "dense", "Passes its input through unchanged.", "y = x",
        params=(), infer=same_shape, build=lambda c: ctor(nn.Identity), input_dtype="any",
    ),
]
