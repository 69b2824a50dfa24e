"""The PyTorch front end of `layerlab import`: a module traced with torch.fx, node by node
onto catalogue layers (core/import_ops.py holds the per-op rules).

Tracing runs the model once on a small random batch with every value kept, so that shapes
(`x.view(x.size(0), -1)`) are read from what the model actually computed; whatever the fx
graph does with sizes and asserts is left out, and the final comparison on fresh batches
catches anything that depended on the traced values. A model fx cannot trace, or that holds
what a graph of layers cannot, is refused with the source line the op came from.
"""

from __future__ import annotations

import contextlib
import io
import linecache
import logging
import os
import re
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.fx

from layerlab.core.importer import Imported, ImportRefused, Layer, node_id

TRACE_BATCH = 2
_TORCH_DIR = str(Path(torch.__file__).parent) + os.sep  # torch's own frames
_AUTOGRAD_FUNCTION = os.path.join("torch", "autograd", "function.py")
_EXPORTED_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
FRAMES = "layerlab_frames"  # node.meta: the Python stack the node was traced from


@dataclass(frozen=True)
class Place:
    """Where an op came from in the user's code: `model.py:12` and the line's text."""

    file: str
    line: int
    text: str

    def __str__(self) -> str:
        code = f" (`{self.text}`)" if self.text else ""
        return f"{Path(self.file).name}:{self.line}{code}"


def from_module(module: torch.nn.Module, input_shape: Sequence[int], name: str) -> Imported:
    """The module's layers; `module` is put in eval mode."""
    from layerlab.core.import_ops import Mapper

    module.eval()
    example = torch.randn(TRACE_BATCH, *input_shape)
    try:
        traced = trace(module, name)
    except ImportRefused as refused:  # torch.export where fx cannot, else fx's reason
        try:
            with _quiet():
                program = torch.export.export(module, (example,))
        except Exception:
            raise refused from None
        return from_exported(program, name)
    mapper = Mapper(traced, run(traced, example))
    output = mapper.map_all()
    return Imported(mapper.layers, tuple(input_shape), output, module, name)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.export prints and logs the graph it failed on, for torch's developers."""
    logging.disable(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def from_exported(program: torch.export.ExportedProgram, name: str) -> Imported:
    """A torch.export program's layers: `program.module()` holds the weights as attributes
    again and its ops (aten.conv2d, aten.batch_norm, …) go through the same rules; the
    program's own example shape (its batch too, when fixed) is the input's."""
    from layerlab.core.import_ops import Mapper

    module = program.module()
    placeholder = next(n for n in module.graph.nodes if n.op == "placeholder")
    shape = tuple(int(d) for d in placeholder.meta["val"].shape)
    example = torch.randn(*shape)
    mapper = Mapper(module, run(module, example))
    output = mapper.map_all()
    return Imported(mapper.layers, shape[1:], output, module, name, batch_size=shape[0])


def trace(module: torch.nn.Module, name: str) -> torch.fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(module)
    except torch.fx.proxy.TraceError as exc:
        raise ImportRefused(_control_flow(exc, name)) from None
    except ImportRefused:
        raise
    except Exception as exc:
        place = _user_place_of_traceback(exc)
        at = f" at {place}" if place else ""
        raise ImportRefused(f"torch.fx cannot trace {name}{at}: {exc}") from None
    return torch.fx.GraphModule(tracer.root, graph, class_name=name)


def _control_flow(exc: Exception, name: str) -> str:
    place = _user_place_of_traceback(exc)
    at = f"{place}" if place else f"{name}'s forward"
    return (f"{at} branches or loops on a tensor's value, which a graph of layers cannot "
            "hold; compute both branches and pick with torch.where, or move the decision "
            "out of the model")


def _user_place_of_traceback(exc: BaseException) -> Place | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_TORCH_DIR)]
    if not frames:
        return None
    last = frames[-1]
    return Place(last.filename, last.lineno or 0, (last.line or "").strip())


def place_of(node: torch.fx.Node) -> Place | None:
    """The user's line a traced node came from: the last frame of its stack that is not
    torch's own."""
    frames = [f for f in node.meta.get(FRAMES, ()) or _exported_frames(node)
              if not f[0].startswith(_TORCH_DIR)]
    return _place(frames[-1]) if frames else None


def _exported_frames(node: torch.fx.Node) -> list[tuple[str, int, str]]:
    """The frames of an exported program's node, from the stack trace text it keeps."""
    return [(m["file"], int(m["line"]), m["func"])
            for m in _EXPORTED_FRAME.finditer(node.meta.get("stack_trace") or "")]


def custom_function_caller(node: torch.fx.Node) -> Place | None:
    """Where a node traced from inside a custom torch.autograd.Function was called, or None.
    fx traces straight through `Function.apply`, losing the hand-written backward."""
    frames = node.meta.get(FRAMES, ())
    for k, (file, _, func) in enumerate(frames):
        if file.endswith(_AUTOGRAD_FUNCTION) and func == "apply":
            users = [f for f in frames[:k] if not f[0].startswith(_TORCH_DIR)]
            return _place(users[-1]) if users else None
    return None


def _place(frame: tuple[str, int, str]) -> Place:
    file, line, _ = frame
    return Place(file, line, linecache.getline(file, line).strip())


class _Tracer(torch.fx.Tracer):
    """fx's tracer, keeping each node's Python stack as (file, line, function) triples:
    fx's own record_stack_traces symbolises C++ frames too, and its first use imports
    torch._inductor (seconds)."""

    def create_node(self, *args: Any, **kwargs: Any) -> torch.fx.Node:
        node = super().create_node(*args, **kwargs)
        node.meta[FRAMES] = [(f.f_code.co_filename, line, f.f_code.co_name)
                             for f, line in traceback.walk_stack(None)][::-1]
        return node


class _Keeper(torch.fx.Interpreter):
    """Runs the traced graph and keeps every node's value."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module, garbage_collect_values=False)
        self.values: dict[torch.fx.Node, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        value = super().run_node(n)
        self.values[n] = value
        return value


def run(traced: torch.fx.GraphModule, example: torch.Tensor) -> dict[torch.fx.Node, Any]:
    keeper = _Keeper(traced)
    with torch.no_grad():
        keeper.run(example)
    return keeper.values


def _is_layer(kind: Any) -> bool:
    """A class on an exported program's module stack that is one of torch's layers (whose
    path names the op), not a container or the user's own module."""
    name = kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"
    return name.startswith("torch.nn.modules.") and ".container." not in name


def new_layer(taken: set[str], node: torch.fx.Node, type_name: str, params: dict[str, Any],
              inputs: list[str], path: str | None = None,
              weights: dict[str, torch.Tensor] | None = None) -> Layer:
    """A layer for an fx node: its id from the module path (`layer1.0.conv1`), or for a
    function from the module it was called in and the op (`layer1.0` + `add`)."""
    stack = node.meta.get("nn_module_stack") or {}
    scope_path, kind = next(reversed(stack.values())) if stack else ("", "")
    if path is None and _is_layer(kind):  # an exported op inside its own nn layer
        path = scope_path
    if path is None:
        path = f"{scope_path}.{node.name}" if scope_path else node.name
        scope = tuple(scope_path.split(".")) if scope_path else ()
    else:
        scope = tuple(path.split(".")[:-1])
    place = place_of(node)
    return Layer(node_id(path, taken), type_name, params, inputs, scope, weights or {},
                 str(place) if place else "")

