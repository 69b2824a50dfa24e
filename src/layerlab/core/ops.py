"""The operations an `Op` node may call: an explicit allow-list, and its argument notation.

A project file is data. An `Op` node names its function by a key of `ALLOWED` ("torch.einsum",
"Tensor.view", "operator.add"); nothing else is ever looked up: no getattr on a name from a
file, no eval, no import by name. The table below is built from this module's own literals
when it is imported; a file's string is only ever used as a key into it.

Argument notation (`params.args`, a JSON list, and `params.kwargs`, a JSON object): numbers,
strings, true/false, null and lists of them are passed as they are; the object
`{"input": k}` stands for the tensor arriving on input port k. When no argument is such an
object, the inputs come first, in port order, followed by `args`: `Tensor.view` with
args `[-1, 4, 8]` is `x0.view(-1, 4, 8)`, `torch.roll` with `[1, 2]` is `torch.roll(x0, 1, 2)`;
`torch.einsum` writes its operands where they go: `["bij,bjk->bik", {"input": 0},
{"input": 1}]`. Dimensions and sizes are torch's, batch included (dim 0 is the batch).
A Tensor method's first argument is the tensor it is called on.
"""

from __future__ import annotations

import keyword
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F

INPUT = "input"  # {"input": k}: the tensor on input port k
MAX_DEPTH = 4  # lists inside lists: deeper than any torch argument needs


class OpError(ValueError):
    """An operation or argument LayerLab will not call; the message is one sentence."""


@dataclass(frozen=True)
class Allowed:
    """One allowed operation: its name in files, what is called, and how code writes it."""

    name: str  # "torch.einsum", "torch.nn.functional.pad", "Tensor.view", "operator.add"
    fn: Callable[..., Any]  # the function, or the Tensor's unbound method
    method: str | None = None  # Tensor methods: the name fx calls (call_method)
    symbol: str | None = None  # operator.*: the Python operator the exported code writes


# Written out as references, not names: nothing here is looked up by a string.
_TORCH = (
    torch.einsum, torch.matmul, torch.bmm, torch.flatten, torch.roll, torch.clamp,
    torch.softmax, torch.log_softmax, torch.sigmoid, torch.tanh, torch.relu, torch.exp,
    torch.log, torch.sqrt, torch.rsqrt, torch.abs, torch.neg, torch.square, torch.pow,
    torch.erf, torch.cat, torch.stack, torch.transpose, torch.permute, torch.reshape,
    torch.squeeze, torch.unsqueeze, torch.mean, torch.sum, torch.amax, torch.amin,
    torch.cumsum, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
    torch.flip, torch.narrow, torch.movedim, torch.swapaxes, torch.channel_shuffle,
    torch.pixel_shuffle, torch.pixel_unshuffle, torch.layer_norm, torch.baddbmm, torch.addmm,
    torch.outer, torch.tril, torch.triu,
)
_FUNCTIONAL = (
    F.gelu, F.relu, F.relu6, F.silu, F.hardswish, F.hardsigmoid, F.hardtanh, F.leaky_relu,
    F.elu, F.mish, F.softplus, F.sigmoid, F.tanh, F.softmax, F.log_softmax, F.glu, F.pad,
    F.interpolate, F.normalize, F.scaled_dot_product_attention, F.layer_norm,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool1d,
    F.avg_pool2d, F.max_pool1d, F.max_pool2d, F.unfold, F.fold, F.pixel_shuffle,
    F.pixel_unshuffle, F.linear,
)
_METHODS = (
    torch.Tensor.view, torch.Tensor.reshape, torch.Tensor.transpose, torch.Tensor.permute,
    torch.Tensor.contiguous, torch.Tensor.flatten, torch.Tensor.squeeze,
    torch.Tensor.unsqueeze, torch.Tensor.expand, torch.Tensor.expand_as, torch.Tensor.repeat,
    torch.Tensor.mean, torch.Tensor.sum, torch.Tensor.amax, torch.Tensor.amin,
    torch.Tensor.softmax, torch.Tensor.log_softmax, torch.Tensor.sigmoid, torch.Tensor.tanh,
    torch.Tensor.relu, torch.Tensor.exp, torch.Tensor.pow, torch.Tensor.clamp,
    torch.Tensor.flip, torch.Tensor.roll, torch.Tensor.add, torch.Tensor.sub, torch.Tensor.mul,
    torch.Tensor.div, torch.Tensor.matmul, torch.Tensor.neg, torch.Tensor.abs,
    torch.Tensor.sqrt, torch.Tensor.rsqrt, torch.Tensor.square, torch.Tensor.narrow,
    torch.Tensor.movedim, torch.Tensor.swapaxes, torch.Tensor.unflatten,
    torch.Tensor.reshape_as, torch.Tensor.view_as, torch.Tensor.cumsum, torch.Tensor.tril,
    torch.Tensor.triu,
)
_OPERATORS = (("add", operator.add, "+"), ("sub", operator.sub, "-"),
              ("mul", operator.mul, "*"), ("truediv", operator.truediv, "/"),
              ("matmul", operator.matmul, "@"), ("pow", operator.pow, "**"),
              ("neg", operator.neg, "-"))


def _table() -> dict[str, Allowed]:
    table = [Allowed(f"torch.{f.__name__}", f) for f in _TORCH]
    table += [Allowed(f"torch.nn.functional.{f.__name__}", f) for f in _FUNCTIONAL]
    table += [Allowed(f"Tensor.{f.__name__}", f, method=f.__name__) for f in _METHODS]
    table += [Allowed(f"operator.{n}", fn, symbol=s) for n, fn, s in _OPERATORS]
    assert len({a.name for a in table}) == len(table), "two allowed operations share a name"
    return {a.name: a for a in table}


ALLOWED: dict[str, Allowed] = _table()
NAMES: tuple[str, ...] = tuple(sorted(ALLOWED))
# a function listed under two names (F.pixel_shuffle is torch.pixel_shuffle) keeps the first
_BY_FUNCTION: dict[Any, str] = {a.fn: a.name for a in reversed(ALLOWED.values())
                                if a.method is None}


def allowed_name(target: Any) -> str | None:
    """The allow-list name of an fx target, or None when it is not allowed.

    `target` is a call_function's callable (`torch.einsum`, `F.gelu`, `operator.add`) or a
    call_method's method name (`"view"` → "Tensor.view").
    """
    if isinstance(target, str):
        name = f"Tensor.{target}"
        return name if name in ALLOWED and ALLOWED[name].method == target else None
    try:
        return _BY_FUNCTION.get(target)
    except TypeError:  # an unhashable target is no function of ours
        return None


def ref(port: int) -> dict[str, int]:
    """The argument notation for the tensor on input port `port`."""
    return {INPUT: port}


def name_problem(fn: Any) -> str | None:
    """Why `fn` cannot be called, or None when it is on the allow-list."""
    if isinstance(fn, str) and fn in ALLOWED:
        return None
    return (f"calls {fn!r}, which is not on LayerLab's list of allowed operations "
            "(see the Op entry in the palette)")


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and list(value) == [INPUT] and _is_index(value[INPUT])


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def value_problem(value: Any, path: str = "", depth: int = 0) -> str | None:
    """Why `value` is not a literal argument (numbers, strings, true/false, null, lists of
    them, {"input": k}), or None when it is; `path` says where it sits ("[1]")."""
    if value is None or isinstance(value, (bool, int, str)) or is_ref(value):
        return None
    where = f" at {path}" if path else ""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"holds a number that is not finite{where}"
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return f"holds lists nested more than {MAX_DEPTH} deep{where}"
        for i, item in enumerate(value):
            problem = value_problem(item, f"{path}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        return (f"holds the object {_short(value)}{where}; the only object an argument may "
                'be is {"input": k}, the tensor on input port k')
    return f"holds {_short(value)}{where}, which is not a number, text, list or null"


def args_problem(args: Any) -> str | None:
    """Why `args` is not a list of literal arguments, or None."""
    if not isinstance(args, list):
        return f"must be a list, not {_short(args)}"
    return value_problem(args)


def kwargs_problem(kwargs: Any) -> str | None:
    """Why `kwargs` is not an object of literal keyword arguments, or None."""
    if not isinstance(kwargs, dict):
        return f"must be an object, not {_short(kwargs)}"
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key) \
                or key.startswith("_"):
            return f"has the key {key!r}, which is not an argument name"
        problem = value_problem(value, f"[{key!r}]")
        if problem:
            return problem
    return None


def params_problem(params: dict[str, Any]) -> str | None:
    """Why an Op node's params cannot be called, or None: the one check a file passes before
    anything in it is resolved (project loading refuses a file that fails it). The sentence
    follows the node's id: "op1 calls 'os.system', which is not …"."""
    problem = name_problem(params.get("fn"))
    if problem:
        return problem
    for key, check, empty in (("args", args_problem, []), ("kwargs", kwargs_problem, {})):
        problem = check(params.get(key, empty))
        if problem:
            return f"{key} {problem}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def references(args: list[Any], kwargs: dict[str, Any]) -> set[int]:
    """The input ports the arguments name."""
    found: set[int] = set()

    def walk(value: Any) -> None:
        if is_ref(value):
            found.add(value[INPUT])
        elif isinstance(value, list):
            for item in value:
                walk(item)
    walk(args)
    walk(list(kwargs.values()))
    return found


def call_arguments(params: dict[str, Any], inputs: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """The call's positional and keyword arguments with `inputs` (tensors, or fx nodes) put
    where the notation says; raises OpError naming a port that does not exist."""
    args, kwargs = list(params.get("args", [])), dict(params.get("kwargs", {}))
    if not references(args, kwargs):
        args = [ref(k) for k in range(len(inputs))] + args

    def fill(value: Any) -> Any:
        if is_ref(value):
            port = value[INPUT]
            if port >= len(inputs):
                raise OpError(f"the arguments use input {port}, but the node has "
                              f"{len(inputs)} input(s)")
            return inputs[port]
        return [fill(v) for v in value] if isinstance(value, list) else value
    return [fill(a) for a in args], {k: fill(v) for k, v in kwargs.items()}


def call(params: dict[str, Any], inputs: list[torch.Tensor]) -> Any:
    """Run the node's operation on `inputs`; only an allow-listed function is ever called."""
    problem = params_problem(params)
    if problem:
        raise OpError(problem)
    args, kwargs = call_arguments(params, inputs)
    return ALLOWED[params["fn"]].fn(*args, **kwargs)


def emit(g: torch.fx.Graph, params: dict[str, Any], inputs: list[torch.fx.Node]) -> torch.fx.Node:
    """The fx node of the call: call_method for a Tensor method, call_function otherwise."""
    allowed = ALLOWED[params["fn"]]
    args, kwargs = call_arguments(params, inputs)
    if allowed.method is not None:
        return g.call_method(allowed.method, tuple(args), kwargs)
    return g.call_function(allowed.fn, tuple(args), kwargs)


def python_call(name: str, args: list[str], kwargs: dict[str, str]) -> str:
    """An allow-listed function's call as Python source, its arguments already written:
    `torch.einsum('bij,bjk->bik', a, b)`, `(a - b)`. (Tensor methods are fx call_method
    nodes, which the export writes as `a.view(-1, 4)` for any layer.)"""
    allowed = ALLOWED[name]
    if allowed.symbol is not None:
        return (f"{allowed.symbol}{args[0]}" if len(args) == 1 else
                f"({args[0]} {allowed.symbol} {args[1]})")
    return f"{name}({', '.join([*args, *(f'{k}={v}' for k, v in kwargs.items())])})"


def node_title(data: dict[str, Any]) -> str:
    """What the window calls a node: an Op node by its function ("torch.einsum"), any other
    by its type."""
    params = data.get("params")
    fn = params.get("fn") if isinstance(params, dict) else None
    if data.get("type") == "Op" and isinstance(fn, str) and fn in ALLOWED:
        return fn
    return str(data.get("type", "?"))


def caption(params: dict[str, Any], n_inputs: int) -> str:
    """An Op node's arguments as the canvas shows them, the inputs named x0, x1, … by port:
    `('bij,bjk->bik', x0, x1)`, `(x0, 1, dims=-1)`."""
    args, kwargs = params.get("args", []), params.get("kwargs", {})
    if args_problem(args) or kwargs_problem(kwargs):
        return "(arguments not valid)"
    if not references(args, kwargs):
        args = [ref(k) for k in range(n_inputs)] + args
    parts = [_source(a) for a in args] + [f"{k}={_source(v)}" for k, v in kwargs.items()]
    return f"({', '.join(parts)})"


def _source(value: Any) -> str:
    if is_ref(value):
        return f"x{value[INPUT]}"
    if isinstance(value, list):
        return f"[{', '.join(_source(v) for v in value)}]"
    return repr(value)


def op_params(fn: str, args: list[Any] | tuple[Any, ...] = (),
              kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """An Op node's params for a call of `fn` (tuples become lists); raises OpError when the
    name is not allowed or an argument is not a literal."""
    if name_problem(fn):
        raise OpError(f"{fn!r} is not on LayerLab's list of allowed operations")
    params = {"fn": fn, "args": _lists(list(args)), "kwargs": _lists(dict(kwargs or {}))}
    problem = params_problem(params)
    if problem:
        raise OpError(f"{fn}: {problem}")
    return params


def _lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, dict) and not is_ref(value):
        return {k: _lists(v) for k, v in value.items()}
    return value


def from_fx(node: torch.fx.Node) -> tuple[dict[str, Any], list[torch.fx.Node]]:
    """An fx call_function/call_method node as an Op node's params and the fx nodes that feed
    its input ports, in port order (a node used twice feeds one port). Raises OpError in one
    sentence when the target is not allowed or an argument is neither a literal nor a node."""
    target = node.target
    name = allowed_name(target) if node.op in ("call_function", "call_method") else None
    if name is None:
        shown = getattr(target, "__name__", target)
        raise OpError(f"{shown} is not on LayerLab's list of allowed operations")
    sources: list[torch.fx.Node] = []

    def convert(value: Any) -> Any:
        if isinstance(value, torch.fx.Node):
            if value not in sources:
                sources.append(value)
            return ref(sources.index(value))
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value
    args = [convert(a) for a in node.args]
    kwargs = {k: convert(v) for k, v in node.kwargs.items()}
    if args[:len(sources)] == [ref(k) for k in range(len(sources))] and \
            references(args[len(sources):], kwargs) == set():
        args = args[len(sources):]  # the inputs come first: the short form
    return op_params(name, args, kwargs), sources
