"""The vocabulary every layer declaration is written in.

A layer is declared once, as data (`LayerSpec`): its parameters with types, defaults and
ranges, how many inputs it takes, how it infers its output shape, and how it builds its torch
module. Shape inference, the compiler, the window's palette and inspector all read these
declarations, so nothing about a layer is said twice.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]

REQUIRED: Any = object()  # sentinel default: the parameter must be given



class ShapeError(Exception):
    """Raised by a layer's shape rule; the message is written for a person."""


def fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def fmt_output(shape: Sequence[int] | None) -> str:
    """A node's output as shown to a person: [500], scalar (a loss), or ? (not inferred)."""
    if shape is None:
        return "?"
    return "scalar" if len(shape) == 0 else fmt_shape(shape)


@dataclass(frozen=True)
class Param:
    """One constructor argument of a layer, by its torch name.

    kinds: int, float, bool, choice (one of `choices`), shape (list of ints), size (an int
    or a list of `length` ints, torch's `_size_n_t`), padding (a size or 'same'/'valid'),
    dims (an int or a list of ints: tensor dimensions, batch included as torch counts them),
    text (a string: paths, column names), json (any JSON value `validate` accepts: an Op
    node's arguments). `validate`, when given, says why a value is not acceptable.
    """

    name: str
    kind: str
    default: Any = REQUIRED
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    length: int = 1
    suggest: Any = None  # value a new node starts with when the parameter is required
    validate: Callable[[Any], str | None] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def initial(self) -> Any:
        """The value a freshly added node shows: the default, or a sensible suggestion."""
        return self.suggest if self.required else self.default

    def check(self, value: Any) -> str | None:
        """Return why `value` is not acceptable, or None when it is."""
        if value is None:
            return None if self.nullable else "must not be empty"
        if self.validate is not None:
            return self.validate(value)
        kind = self.kind
        if kind == "bool":
            return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
        if kind == "text":
            return None if isinstance(value, str) else f"must be text, not {value!r}"
        if kind == "choice":
            if value in self.choices:
                return None
            return f"must be one of {', '.join(self.choices)}, not {value!r}"
        if kind == "int":
            return self._check_number(value, integer=True)
        if kind == "float":
            return self._check_number(value, integer=False)
        if kind == "padding" and isinstance(value, str):
            return None if value in ("same", "valid") else (
                f"must be a number, a list of {self.length} numbers, 'same' or 'valid'")
        if kind in ("size", "padding"):
            return self._check_ints(value, allow_scalar=True, length=self.length)
        if kind == "dims":
            return self._check_ints(value, allow_scalar=True, length=None, signed=True)
        if kind == "shape":
            return self._check_ints(value, allow_scalar=False, length=None, signed=True)
        raise AssertionError(f"unknown parameter kind {kind}")

    def _check_number(self, value: Any, integer: bool) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, not {value!r}"
        if integer and not isinstance(value, int):
            return f"must be a whole number, not {value!r}"
        if not math.isfinite(value):
            return f"must be finite, not {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {_num(self.minimum)}, not {_num(value)}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {_num(self.maximum)}, not {_num(value)}"
        return None

    def _check_ints(self, value: Any, allow_scalar: bool, length: int | None,
                    signed: bool = False) -> str | None:
        items = [value] if allow_scalar and not isinstance(value, list) else value
        what = "a whole number or a list of them" if allow_scalar else "a list of whole numbers"
        if not isinstance(items, list) or not items:
            return f"must be {what}, not {value!r}"
        if any(isinstance(v, bool) or not isinstance(v, int) for v in items):
            return f"must be {what}, not {value!r}"
        if isinstance(value, list) and length is not None and len(value) != length:
            return f"must have {length} entries, not {len(value)}"
        low = self.minimum
        if low is not None and not signed and any(v < low for v in items):
            return f"entries must be at least {_num(low)}, not {value!r}"
        return None


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


@dataclass(frozen=True)
class Ctx:
    """What a layer's rules see: its id, its resolved parameters, its inputs."""

    node_id: str
    params: dict[str, Any]
    in_shapes: tuple[Shape, ...]
    in_ids: tuple[str, ...]
    in_dtypes: tuple[str, ...] = ()

    @property
    def shape(self) -> Shape:
        return self.in_shapes[0]

    def src(self, k: int = 0) -> str:
        return f"{fmt_shape(self.in_shapes[k])} from {self.in_ids[k]}"

    def size(self, name: str, n: int) -> tuple[int, ...]:
        value = self.params[name]
        return tuple(value) if isinstance(value, list) else (value,) * n


@dataclass(frozen=True)
class Ctor:
    """How to construct a layer's torch module: the class and its arguments, as data, so that
    the same declaration builds the module and writes it out as code (the Python export)."""

    cls: type
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def make(self) -> Any:
        return self.cls(*self.args, **self.kwargs)

    def source(self, namespace: str = "nn") -> str:
        """`nn.Linear(784, 500)`: arguments equal to torch's defaults are left out."""
        signature = list(inspect.signature(self.cls).parameters.values())
        defaults = {p.name: p.default for p in signature}
        order = {p.name: i for i, p in enumerate(signature)}
        parts = [repr(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in sorted(self.kwargs.items(),
                                                   key=lambda kv: order.get(kv[0], 99))
                  if k not in defaults or defaults[k] != v or type(defaults[k]) is not type(v)]
        return f"{namespace}.{self.cls.__name__}({', '.join(parts)})"


def ctor(cls: type, *args: Any, **kwargs: Any) -> Ctor:
    return Ctor(cls, args, kwargs)


@dataclass(frozen=True)
class LayerSpec:
    """Everything LayerLab knows about one layer type."""

    type: str
    group: str
    description: str
    formula: str
    params: tuple[Param, ...]
    infer: Callable[[Ctx], Shape | tuple[Shape, ...]]  # a tuple per port with `outputs`
    build: Callable[[Ctx], Ctor] | None = None  # how to construct the torch module
    emit: Callable[..., Any] | None = None  # custom fx emission; None: call the module
    # several output ports (Split, Chunk): how many, from the resolved parameters; `infer`
    # then gives one shape per port and `emit` a tuple of tensors
    outputs: Callable[[dict[str, Any]], int] | None = None
    min_inputs: int = 1
    max_inputs: int | None = 1
    input_dtype: str = "float32"  # "float32", "int64" or "any"
    is_loss: bool = False
    key_params: tuple[str, ...] = ()  # shown on the canvas node
    caption: Callable[[dict[str, Any], int], str] | None = None  # the canvas lines instead
    #                  (one per \n), from the node's params and number of inputs
    keywords: tuple[str, ...] = ()  # more words the palette's search finds the layer by

    @property
    def has_init(self) -> bool:
        """Whether the layer takes the shared weight initialisers (layers.common.INIT); a
        layer whose `init` has choices of its own (Parameter) initialises itself."""
        return any(p.name == "init" and "default" in p.choices for p in self.params)

    def output_count(self, params: dict[str, Any]) -> int:
        """Output ports of a node with these resolved parameters: 0 for a loss."""
        if self.is_loss:
            return 0
        return 1 if self.outputs is None else self.outputs(params)

    @property
    def is_merge(self) -> bool:
        return self.max_inputs is None or self.max_inputs > 1

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """The given parameters with torch's defaults filled in."""
        out = {p.name: p.default for p in self.params if not p.required}
        out.update(given)
        return out


def batch_dim(ctx: Ctx, dim: int, name: str = "dim") -> int:
    """Normalise a torch dimension (batch included) to an index into the batchless shape."""
    rank = len(ctx.shape) + 1
    if not -rank <= dim < rank:
        raise ShapeError(f"{name}={dim} is out of range for a {rank}-dimensional tensor "
                         f"(batch included) {ctx.src()}")
    norm = dim % rank
    if norm == 0:
        raise ShapeError(f"{name}={dim} is the batch dimension; use 1 or more")
    return norm - 1


def need_rank(ctx: Ctx, ranks: Sequence[int], layout: str) -> None:
    if len(ctx.shape) not in ranks:
        raise ShapeError(f"{ctx.node_id} expects a {layout} input but receives {ctx.src()}")


def conv_out(length: int, kernel: int, stride: int, padding: int, dilation: int,
             ceil_mode: bool = False) -> int:
    """torch's output length of a convolution or pooling window along one dimension."""
    span = length + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= length + padding:
            out -= 1
        return out
    return span // stride + 1
