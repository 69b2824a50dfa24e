"""What `layerlab import` reads: `file.py:Name`, `package.module:factory`, `.pt2`, `.onnx`.

A Python source is the user's own code, run as the user asked (as `python file.py` would);
a `.pt2` is read with torch.export.load and an `.onnx` with onnx, neither of which runs
Python code from the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from layerlab.core.importer import Imported, ImportRefused

DEFAULT_SHAPE = (3, 224, 224)


def read(source: str, input_shape: Sequence[int] | None,
         args: dict[str, Any]) -> Imported:
    """The source's model, as the layers a front end finds in it."""
    suffix = Path(source).suffix.lower()
    if suffix == ".pt2":
        from layerlab.core import import_fx

        return import_fx.from_exported(_load_pt2(Path(source)), Path(source).stem)
    if suffix == ".onnx":
        from layerlab.core import import_onnx

        return import_onnx.read(Path(source), input_shape)
    module, name = build(source, args)
    from layerlab.core import import_fx

    shape = tuple(input_shape) if input_shape else DEFAULT_SHAPE
    _runs_on(module, shape, source, given=bool(input_shape))
    return import_fx.from_module(module, shape, name)


def _runs_on(module: torch.nn.Module, shape: tuple[int, ...], source: str,
             given: bool) -> None:
    """Run the model once on a batch of that shape, so that an input shape that does not
    fit (a 1-channel network fed the default 3×224×224) is one sentence, not torch's trace."""
    try:
        with torch.no_grad():
            module(torch.zeros(2, *shape))
    except Exception as exc:  # the model's own code: anything may go wrong in it
        first = next(iter(str(exc).splitlines()), type(exc).__name__)
        what = f"the input shape {list(shape)}" if given else \
            f"the default input shape {list(shape)}"
        raise ImportRefused(f"{source}: the model cannot run on {what} ({first}); give the "
                            "shape of one sample with --input-shape, e.g. 1,28,28") from None


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """`3,224,224` → (3, 224, 224); empty → None (the default, or the file's own)."""
    if text is None or not text.strip():
        return None
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ImportRefused(f"the input shape {text!r} must be positive whole numbers "
                            "separated by commas, e.g. 3,224,224")
    return shape


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """The class's or factory's keyword arguments, as a JSON object."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportRefused(f"the arguments are not valid JSON ({exc.msg} at column "
                            f"{exc.colno})") from None
    if not isinstance(value, dict):
        raise ImportRefused('the arguments must be a JSON object of keyword arguments, e.g. '
                            '{"num_classes": 10}')
    return value


def build(source: str, args: dict[str, Any]) -> tuple[torch.nn.Module, str]:
    """The module SOURCE names, built with `args`, in eval mode."""
    where, sep, attr = source.rpartition(":")
    if not sep or not where or not attr:
        raise ImportRefused(f"{source}: name the model as file.py:Name or "
                            "package.module:factory (or give an .onnx or .pt2 file)")
    holder = _load_file(Path(where)) if where.endswith(".py") else _load_package(where)
    factory = getattr(holder, attr, None)
    if factory is None or not callable(factory):
        raise ImportRefused(f"{source}: {where} has no class or function named {attr}")
    try:
        model = factory(**args)
    except TypeError as exc:
        raise ImportRefused(f"{source}: calling {attr} with {args or 'no arguments'} "
                            f"failed ({exc}); pass its arguments with --args") from None
    except Exception as exc:  # the model's own code raised while it was being built
        raise ImportRefused(f"{source}: building {attr} with {args or 'no arguments'} "
                            f"failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, torch.nn.Module):
        raise ImportRefused(f"{source}: {attr} returned a {type(model).__name__}, not a "
                            "torch.nn.Module")
    return model.eval(), attr


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ImportRefused(f"{path}: no such file")
    name = f"layerlab_import_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    sys.path.insert(0, str(path.parent.resolve()))  # the file's own sibling imports
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ImportRefused(f"{path}: running it failed ({type(exc).__name__}: {exc})") \
            from None
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return module


def _load_package(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ImportRefused(f"{name}: cannot be imported ({type(exc).__name__}: {exc})") \
            from None


def _load_pt2(path: Path) -> torch.export.ExportedProgram:
    if not path.is_file():
        raise ImportRefused(f"{path}: no such file")
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        raise ImportRefused(f"{path}: not a torch.export program ({type(exc).__name__})") \
            from None
