"""Merge layers: combine several tensors, in port order, into one."""

from __future__ import annotations

import operator
from collections.abc import Callable
from itertools import zip_longest
from typing import Any

import torch
import torch.fx

from layerlab.core.spec import Ctx, LayerSpec, Param, Shape, ShapeError, batch_dim


def broadcast(a: Shape, b: Shape) -> Shape | None:
    """torch's broadcasting rule, or None when the shapes do not broadcast."""
    out = []
    for x, y in zip_longest(reversed(a), reversed(b), fillvalue=1):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 1 in (x, y) else x)
    return tuple(reversed(out))


def _broadcast(ctx: Ctx) -> Shape:
    """Broadcasting over the batchless shapes (the batch dimensions always agree). Shapes
    of different ranks are refused: with the batch first in both tensors, torch lines them
    up from the right, so [C] would meet the W of [H, W, C] through the batch."""
    out: Shape = ctx.in_shapes[0]
    for k in range(1, len(ctx.in_shapes)):
        if len(ctx.in_shapes[k]) != len(out):
            raise ShapeError(f"{ctx.node_id} cannot combine {ctx.src(0)} with {ctx.src(k)}: "
                             "they have different numbers of dimensions (give the smaller "
                             "one size-1 dimensions with a Reshape, e.g. [1, 1, C])")
        joined = broadcast(out, ctx.in_shapes[k])
        if joined is None:
            raise ShapeError(f"{ctx.node_id} cannot combine {ctx.src(0)} with "
                             f"{ctx.src(k)}: the shapes differ")
        out = joined
    return out


def _concat_shape(ctx: Ctx) -> Shape:
    first = ctx.in_shapes[0]
    for k, shape in enumerate(ctx.in_shapes[1:], start=1):
        if len(shape) != len(first):
            raise ShapeError(f"{ctx.node_id} cannot join {ctx.src(0)} with {ctx.src(k)}: "
                             "they have different numbers of dimensions")
    axis = batch_dim(ctx, ctx.params["dim"])
    for k, shape in enumerate(ctx.in_shapes[1:], start=1):
        if any(a != b for i, (a, b) in enumerate(zip(first, shape, strict=True)) if i != axis):
            raise ShapeError(f"{ctx.node_id} cannot join {ctx.src(0)} with {ctx.src(k)} "
                             f"along dim {ctx.params['dim']}: the other sizes differ")
    size = sum(shape[axis] for shape in ctx.in_shapes)
    return (*first[:axis], size, *first[axis + 1:])


def _chain(op: Callable[[Any, Any], Any]):
    """Emit `a op b op c ...` as binary fx nodes, the last named after the layer."""
    def emit(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
        node = args[0]
        for arg in args[1:]:
            node = g.call_function(op, (node, arg))
        return node
    return emit


def _emit_concat(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
    return g.call_function(torch.cat, (list(args),), {"dim": ctx.params["dim"]})


SPECS = [
    LayerSpec(
        "Add", "merge", "Adds its inputs element by element (a residual connection); shapes "
        "must match or broadcast.", "y = x₀ + x₁ + …",
        params=(), infer=_broadcast, emit=_chain(operator.add), min_inputs=2, max_inputs=None,
    ),
    LayerSpec(
        "Multiply", "merge", "Multiplies its inputs element by element (gating); shapes must "
        "match or broadcast.", "y = x₀ ⊙ x₁ ⊙ …",
        params=(), infer=_broadcast, emit=_chain(operator.mul), min_inputs=2, max_inputs=None,
    ),
    LayerSpec(
        "Concat", "merge", "Joins its inputs along one dimension, in port order.",
        "y = [x₀, x₁, …] along dim",
        params=(Param("dim", "int", 1, help="Dimension to join along (batch is 0, features "
                      "or channels are 1)."),),
        infer=_concat_shape, emit=_emit_concat, min_inputs=2, max_inputs=None,
        key_params=("dim",),
    ),
]
