"""Tensor plumbing that real models use between their layers: Split and Chunk (several
output ports), Permute, Transpose, Expand, Select, Slice, and a learned Parameter.

Dimensions (`dim`, `dims`, `dim0`) count the batch as torch does (x.permute(0, 2, 3, 1),
x[:, 0] is Select dim=1) and may not move or pick from it; sizes (`sizes` of Expand, `shape`
of Parameter) exclude it, as every shape in LayerLab does.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx
from torch import nn

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

DIM = Param("dim", "int", 1, help="Dimension, batch counted as 0 (1 is features or channels).")


def _split_shapes(ctx: Ctx) -> tuple[Shape, ...]:
    axis = batch_dim(ctx, ctx.params["dim"])
    sizes, length = ctx.params["sizes"], ctx.shape[axis]
    if any(s < 1 for s in sizes):
        raise ShapeError(f"{ctx.node_id}'s sizes {fmt_shape(sizes)} must all be positive")
    if sum(sizes) != length:
        raise ShapeError(f"{ctx.node_id}'s sizes {fmt_shape(sizes)} add up to {sum(sizes)}, "
                         f"but dim {ctx.params['dim']} of {ctx.src()} is {length} long")
    return tuple((*ctx.shape[:axis], s, *ctx.shape[axis + 1:]) for s in sizes)


def _chunk_shapes(ctx: Ctx) -> tuple[Shape, ...]:
    """torch.chunk: pieces of ⌈n / chunks⌉, the last smaller; it may give fewer pieces."""
    axis = batch_dim(ctx, ctx.params["dim"])
    chunks, length = ctx.params["chunks"], ctx.shape[axis]
    step = -(-length // chunks)
    sizes = [min(step, length - start) for start in range(0, length, step)]
    if len(sizes) != chunks:
        raise ShapeError(f"{ctx.node_id} cannot cut dim {ctx.params['dim']} of {ctx.src()} "
                         f"into {chunks} chunks (torch gives {len(sizes)} of {step}); "
                         "use Split with the sizes you want")
    return tuple((*ctx.shape[:axis], s, *ctx.shape[axis + 1:]) for s in sizes)


def _emit_pieces(method: str, first: str):
    def emit(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
        return g.call_method(method, (args[0], ctx.params[first], ctx.params["dim"]))
    return emit


def permutation(ctx: Ctx) -> tuple[int, ...]:
    """`dims` as non-negative torch dimensions (batch included), checked."""
    rank = len(ctx.shape) + 1
    dims = ctx.params["dims"]
    if len(dims) != rank:
        raise ShapeError(f"{ctx.node_id}'s dims {fmt_shape(dims)} must name all {rank} "
                         f"dimensions of {ctx.src()} (batch included)")
    if any(not -rank <= d < rank for d in dims):
        raise ShapeError(f"{ctx.node_id}'s dims {fmt_shape(dims)} are out of range for a "
                         f"{rank}-dimensional tensor (batch included)")
    norm = tuple(d % rank for d in dims)
    if sorted(norm) != list(range(rank)):
        raise ShapeError(f"{ctx.node_id}'s dims {fmt_shape(dims)} must name each dimension "
                         "once")
    if norm[0] != 0:
        raise ShapeError(f"{ctx.node_id}'s dims {fmt_shape(dims)} must keep the batch first "
                         "(start with 0)")
    return norm


def _permute_shape(ctx: Ctx) -> Shape:
    full = (0, *ctx.shape)
    return tuple(full[d] for d in permutation(ctx)[1:])


def _transpose_shape(ctx: Ctx) -> Shape:
    a = batch_dim(ctx, ctx.params["dim0"], "dim0")
    b = batch_dim(ctx, ctx.params["dim1"], "dim1")
    shape = list(ctx.shape)
    shape[a], shape[b] = shape[b], shape[a]
    return tuple(shape)


def _expand_shape(ctx: Ctx) -> Shape:
    sizes = ctx.params["sizes"]
    if len(sizes) != len(ctx.shape):
        raise ShapeError(f"{ctx.node_id}'s sizes {fmt_shape(sizes)} must give one size per "
                         f"dimension of {ctx.src()}, batch excluded ({len(ctx.shape)})")
    out = []
    for i, (size, have) in enumerate(zip(sizes, ctx.shape, strict=True)):
        if size == -1 or size == have:
            out.append(have)
        elif have == 1 and size >= 1:
            out.append(size)
        else:
            raise ShapeError(f"{ctx.node_id} cannot expand size {have} of dimension {i + 1} "
                             f"of {ctx.src()} to {size}: only a size 1 grows (-1 keeps it)")
    return tuple(out)


def _select_shape(ctx: Ctx) -> Shape:
    axis = batch_dim(ctx, ctx.params["dim"])
    index, length = ctx.params["index"], ctx.shape[axis]
    if not -length <= index < length:
        raise ShapeError(f"{ctx.node_id}'s index {index} is out of range for dim "
                         f"{ctx.params['dim']} of {ctx.src()} ({length} long)")
    return (*ctx.shape[:axis], *ctx.shape[axis + 1:])


def slice_range(ctx: Ctx) -> range:
    """The positions Slice keeps along its dim, as Python's slicing picks them."""
    axis = batch_dim(ctx, ctx.params["dim"])
    p = ctx.params
    return range(ctx.shape[axis])[slice(p["start"], p["end"], p["step"])]


def _slice_shape(ctx: Ctx) -> Shape:
    axis = batch_dim(ctx, ctx.params["dim"])
    kept = len(slice_range(ctx))
    if kept == 0:
        p = ctx.params
        raise ShapeError(f"{ctx.node_id} keeps nothing of dim {p['dim']} of {ctx.src()} "
                         f"(start {p['start']}, end {p['end']}, step {p['step']})")
    return (*ctx.shape[:axis], kept, *ctx.shape[axis + 1:])


def index_tuple(ctx: Ctx, item: Any) -> tuple[Any, ...]:
    """x[:, …, item] with `item` at the layer's dim: the index a person would write."""
    axis = batch_dim(ctx, ctx.params["dim"])
    return (*(slice(None),) * (axis + 1), item)


def _emit_select(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
    return g.call_function(operator.getitem, (args[0], index_tuple(ctx, ctx.params["index"])))


def _emit_slice(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
    p = ctx.params
    step = None if p["step"] == 1 else p["step"]
    item = slice(p["start"], p["end"], step)
    return g.call_function(operator.getitem, (args[0], index_tuple(ctx, item)))


class LearnedTensor(nn.Module):
    """A learned tensor that takes no input — a class token, a positional embedding, a layer
    scale. Stored as `shape` under the key `param`; the same for every sample, it comes out
    expanded over the batch of `like` (a view: nothing is copied)."""

    def __init__(self, shape: tuple[int, ...], init: str = "zeros", std: float = 0.02) -> None:
        super().__init__()
        self.param = nn.Parameter(torch.empty(shape))
        self.init, self.std = init, std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.init == "normal":
                nn.init.normal_(self.param, std=self.std)
            elif self.init == "trunc_normal":
                nn.init.trunc_normal_(self.param, std=self.std, a=-2 * self.std, b=2 * self.std)
            else:
                nn.init.zeros_(self.param)

    def forward(self, like: torch.Tensor) -> torch.Tensor:
        return self.param.expand(like.shape[0], *self.param.shape)


def _parameter_shape(ctx: Ctx) -> Shape:
    shape = tuple(ctx.params["shape"])
    if any(d < 1 for d in shape):
        raise ShapeError(f"{ctx.node_id}'s shape {fmt_shape(shape)} must hold positive sizes "
                         "only")
    return shape


def _parameter(ctx: Ctx) -> Ctor:
    p = ctx.params
    return ctor(LearnedTensor, tuple(p["shape"]), init=p["init"], std=p["std"])


def _emit_parameter(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
    """self.<node>(x): the model's input gives only the batch size."""
    data = next(n for n in g.nodes if n.op == "placeholder")
    return g.call_module(ctx.node_id, (data,))


def _call(method: str, *names: str):
    def emit(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
        values = [ctx.params[n] for n in names]
        flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
        return g.call_method(method, (args[0], *flat))
    return emit


def _emit_expand(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
    return g.call_method("expand", (args[0], -1, *ctx.params["sizes"]))


SPECS = [
    LayerSpec(
        "Split", "tensor", "Cuts its input along one dimension into pieces of the given "
        "sizes, one output port each (torch.split).", "y₀, y₁, … = x[…, :s₀], x[…, s₀:s₀+s₁], …",
        params=(Param("sizes", "shape", help="Size of each piece, in port order; they add up "
                      "to the dimension's size.", suggest=[1, 1]), DIM),
        infer=_split_shapes, emit=_emit_pieces("split", "sizes"),
        outputs=lambda p: len(p["sizes"]), input_dtype="any", key_params=("sizes", "dim"),
    ),
    LayerSpec(
        "Chunk", "tensor", "Cuts its input along one dimension into equal pieces (the last "
        "may be smaller), one output port each (torch.chunk).",
        "y₀, y₁, … = x cut into chunks along dim",
        params=(Param("chunks", "int", help="Number of pieces (output ports).", minimum=1,
                      maximum=64, suggest=2), DIM),
        infer=_chunk_shapes, emit=_emit_pieces("chunk", "chunks"),
        outputs=lambda p: p["chunks"], input_dtype="any", key_params=("chunks", "dim"),
    ),
    LayerSpec(
        "Permute", "tensor", "Reorders the dimensions of each sample; the batch stays first "
        "(x.permute, e.g. [C, H, W] → [H, W, C] with dims 0, 2, 3, 1).", "y = x.permute(dims)",
        params=(Param("dims", "shape", help="Every dimension once, batch included and first: "
                      "[0, 2, 3, 1] makes channels last.", suggest=[0, 1]),),
        infer=_permute_shape, emit=_call("permute", "dims"), input_dtype="any",
        key_params=("dims",),
    ),
    LayerSpec(
        "Transpose", "tensor", "Swaps two dimensions of each sample (x.transpose).",
        "y = x.transpose(dim0, dim1)",
        params=(Param("dim0", "int", 1, help="First dimension (batch is 0, not allowed)."),
                Param("dim1", "int", 2, help="Second dimension.")),
        infer=_transpose_shape, emit=_call("transpose", "dim0", "dim1"), input_dtype="any",
        key_params=("dim0", "dim1"),
    ),
    LayerSpec(
        "Expand", "tensor", "Repeats dimensions of size 1 without copying (x.expand); -1 "
        "keeps a size. The batch is always kept.", "y = x.expand(N, *sizes)",
        params=(Param("sizes", "shape", help="New size per dimension, batch excluded; -1 keeps "
                      "it, a size 1 may grow.", suggest=[-1]),),
        infer=_expand_shape, emit=_emit_expand, input_dtype="any", key_params=("sizes",),
    ),
    LayerSpec(
        "Select", "tensor", "Picks one position along a dimension and drops that dimension: "
        "x[:, 0] is dim 1, index 0 (a class token).", "y = x.select(dim, index)",
        params=(DIM, Param("index", "int", 0, help="Position to pick; negative counts from the "
                           "end.")),
        infer=_select_shape, emit=_emit_select, input_dtype="any", key_params=("dim", "index"),
    ),
    LayerSpec(
        "Slice", "tensor", "Keeps a range of positions along a dimension, as Python slicing "
        "does: x[:, start:end:step].", "y = x[:, start:end:step] along dim",
        params=(DIM, Param("start", "int", None, nullable=True, help="First position kept "
                           "(empty: from the start; negative counts from the end)."),
                Param("end", "int", None, nullable=True, help="Position to stop before "
                      "(empty: to the end)."),
                Param("step", "int", 1, minimum=1, help="Keep every step-th position.")),
        infer=_slice_shape, emit=_emit_slice, input_dtype="any",
        key_params=("dim", "start", "end", "step"),
    ),
    LayerSpec(
        "Parameter", "tensor", "A learned tensor with no input — class token, positional "
        "embedding, layer scale — the same for every sample of the batch.",
        "y = θ for every sample (θ learned, shape as given)",
        params=(Param("shape", "shape", help="Shape of the learned tensor, batch excluded: "
                      "[1, 768] for a class token.", suggest=[1, 8]),
                Param("init", "choice", "zeros", choices=("zeros", "normal", "trunc_normal"),
                      help="How θ starts: zeros, N(0, std²), or N(0, std²) cut at ±2·std."),
                Param("std", "float", 0.02, minimum=0.0, help="Standard deviation of the "
                      "normal initialisers.")),
        infer=_parameter_shape, build=_parameter, emit=_emit_parameter, min_inputs=0,
        max_inputs=0, key_params=("shape",),
    ),
]
