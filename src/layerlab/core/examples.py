"""The bundled example projects (assets/examples, shipped as layerlab.assets)."""

from __future__ import annotations

import importlib.resources
import json
from importlib.resources.abc import Traversable

DEFAULT_EXAMPLE = "spiral"
SUFFIX = ".layerlab.json"


def _folder() -> Traversable:
    return importlib.resources.files("layerlab.assets") / "examples"


def example_names() -> list[str]:
    """Names of the bundled examples, the default first."""
    names = sorted(p.name[: -len(SUFFIX)] for p in _folder().iterdir()
                   if p.name.endswith(SUFFIX))
    return sorted(names, key=lambda n: n != DEFAULT_EXAMPLE)


def example_text(name: str) -> str:
    """The JSON text of one example; KeyError names the valid ones."""
    if name not in example_names():
        raise KeyError(f"no example named {name!r}; choose one of {', '.join(example_names())}")
    return (_folder() / f"{name}{SUFFIX}").read_text(encoding="utf-8")


def example_title(name: str) -> str:
    return json.loads(example_text(name)).get("name", name)
