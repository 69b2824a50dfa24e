"""The generic operation node: one call of an allow-listed torch function or Tensor method
(core/ops.py), for what the catalogue has no layer for: `torch.einsum`, `Tensor.view`,
`torch.nn.functional.pad`, … Its output shape is found by running the call on meta tensors
(no memory, no arithmetic) at two batch sizes, so an operation that would mix up the batch
dimension is caught here, named by its node, before anything is compiled."""

from __future__ import annotations

import json

import torch
import torch.fx

from layerlab.core import ops
from layerlab.core.spec import Ctx, LayerSpec, Param, Shape, ShapeError, fmt_shape

DTYPES = {"float32": torch.float32, "int64": torch.int64}
PROBE_BATCHES = (2, 3)  # two batch sizes: the output must keep the batch, whatever it is


def _inputs(ctx: Ctx) -> str:
    return ", ".join(ctx.src(k) for k in range(len(ctx.in_shapes)))


def _run(ctx: Ctx, batch: int) -> torch.Tensor:
    """The call on meta tensors of the inputs' shapes, with a batch of `batch`."""
    fn = ctx.params["fn"]
    inputs = [torch.empty((batch, *shape), dtype=DTYPES.get(dtype, torch.float32),
                          device="meta")
              for shape, dtype in zip(ctx.in_shapes, ctx.in_dtypes or ("float32",) *
                                      len(ctx.in_shapes), strict=True)]
    try:
        out = ops.call(ctx.params, inputs)
    except Exception as exc:  # whatever torch says about a call a person wrote
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShapeError(f"{ctx.node_id} ({fn}) fails on {_inputs(ctx)}: {first}") from None
    if not isinstance(out, torch.Tensor):
        raise ShapeError(f"{ctx.node_id} ({fn}) returns {type(out).__name__}, not one "
                         "tensor; an Op node gives one tensor")
    if out.dim() == 0 or out.shape[0] != batch:
        raise ShapeError(f"{ctx.node_id} ({fn}) must keep the batch as the first dimension, "
                         f"but a batch of {batch} gives {fmt_shape(out.shape)}")
    if out.dtype != inputs[0].dtype:
        raise ShapeError(f"{ctx.node_id} ({fn}) turns {str(inputs[0].dtype)[6:]} into "
                         f"{str(out.dtype)[6:]}; an Op node keeps its input's dtype")
    return out


def _unused(ctx: Ctx) -> None:
    named = ops.references(ctx.params["args"], ctx.params["kwargs"])
    if not named:
        return  # the inputs come first, all of them
    for port, source in enumerate(ctx.in_ids):
        if port not in named:
            raise ShapeError(f"{ctx.node_id} ({ctx.params['fn']}) does not use input {port} "
                             f"(from {source}); name it in args as {{\"input\": {port}}}")


_KNOWN: dict[str, Shape | str] = {}  # what each call gave: its shape, or why it fails
_KNOWN_LIMIT = 4096


def _infer(ctx: Ctx) -> Shape:
    """Remembered by node, inputs and params: the window infers after every edit, and a
    meta call costs about a millisecond, too much for an imported model's hundred Ops."""
    key = json.dumps([ctx.node_id, ctx.in_ids, ctx.in_shapes, ctx.in_dtypes, ctx.params],
                     sort_keys=True)
    if key not in _KNOWN:
        if len(_KNOWN) >= _KNOWN_LIMIT:
            _KNOWN.clear()
        try:
            _KNOWN[key] = _probe(ctx)
        except ShapeError as exc:
            _KNOWN[key] = str(exc)
    known = _KNOWN[key]
    if isinstance(known, str):
        raise ShapeError(known)
    return known


def _probe(ctx: Ctx) -> Shape:
    _unused(ctx)
    shapes = [tuple(_run(ctx, batch).shape[1:]) for batch in PROBE_BATCHES]
    if shapes[0] != shapes[1]:
        raise ShapeError(f"{ctx.node_id} ({ctx.params['fn']}) gives {fmt_shape(shapes[0])} "
                         f"per sample for a batch of 2 but {fmt_shape(shapes[1])} for 3; "
                         "its arguments must not fix the batch size")
    return shapes[0]


def _emit(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
    return ops.emit(g, ctx.params, args)


SPECS = [
    LayerSpec(
        "Op", "operation", "One call of an allowed torch function or tensor method, for what "
        "the catalogue has no layer for. Its inputs, in port order, come first, or where "
        'args names them: {"input": k} is the tensor on port k. Dimensions count the batch '
        "(dim 0), as torch does.",
        "y = fn(x₀, x₁, …, *args, **kwargs)",
        params=(
            Param("fn", "choice", choices=ops.NAMES, suggest="torch.nn.functional.gelu",
                  validate=ops.name_problem,
                  help="The function or Tensor method called (the allow-list: nothing "
                       "else can be named)."),
            Param("args", "json", [], validate=ops.args_problem,
                  help='Positional arguments, a JSON list: numbers, text, lists, null, and '
                       '{"input": k} for the tensor on input port k. Without any '
                       '{"input": k}, the inputs come first.'),
            Param("kwargs", "json", {}, validate=ops.kwargs_problem,
                  help='Keyword arguments, a JSON object: {"dim": -1}.'),
        ),
        infer=_infer, emit=_emit, min_inputs=1, max_inputs=None, input_dtype="any",
        caption=ops.caption, keywords=ops.NAMES,
    ),
]
