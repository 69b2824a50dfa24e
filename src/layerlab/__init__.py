"""LayerLab: design, train and understand neural networks visually.

The public API of product.md §4, importable without Qt.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# name → its module, imported on first use: `layerlab --help` (which imports this package)
# must not wait for torch
_API = {"build_model": "compiler", "GraphError": "errors", "ProjectFileError": "errors",
        "Project": "project", "load_project": "project", "infer_shapes": "shapes",
        "StepTrace": "tracer", "trace_step": "tracer", "UpdateExplanation": "update_rule",
        "explain_update": "update_rule", "NodeExplanation": "explain",
        "explain_node": "explain"}

if TYPE_CHECKING:
    from layerlab.core.compiler import build_model
    from layerlab.core.errors import GraphError, ProjectFileError
    from layerlab.core.explain import NodeExplanation, explain_node
    from layerlab.core.project import Project, load_project
    from layerlab.core.shapes import infer_shapes
    from layerlab.core.tracer import StepTrace, trace_step
    from layerlab.core.update_rule import UpdateExplanation, explain_update


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'layerlab' has no attribute {name!r}")
    value = getattr(import_module(f"layerlab.core.{_API[name]}"), name)
    globals()[name] = value
    return value

__all__ = ["GraphError", "NodeExplanation", "Project", "ProjectFileError", "StepTrace",
           "UpdateExplanation", "build_model", "explain_node", "explain_update",
           "infer_shapes", "load_project", "trace_step"]
__version__ = "0.1.0"
