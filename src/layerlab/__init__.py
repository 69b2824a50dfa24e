"""LayerLab: design, train and understand neural networks visually.

The public API of product.md §4, importable without Qt.
"""

from layerlab.core.compiler import build_model
from layerlab.core.errors import GraphError, ProjectFileError
from layerlab.core.project import Project, load_project
from layerlab.core.shapes import infer_shapes
from layerlab.core.tracer import StepTrace, trace_step
from layerlab.core.update_rule import UpdateExplanation, explain_update

__all__ = ["GraphError", "Project", "ProjectFileError", "StepTrace", "UpdateExplanation",
           "build_model", "explain_update", "infer_shapes", "load_project", "trace_step"]
__version__ = "0.1.0"
