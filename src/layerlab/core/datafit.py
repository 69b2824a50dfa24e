"""Where a graph and the user's data disagree, and the edits that make the graph fit: the
Input's shape to the features, the output's width to the classes (or targets), and the loss
to the task. The window lists them before Train and applies them as one undoable step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx

from layerlab.core.datasets import Dataset
from layerlab.core.objective import CLASS_LOSSES
from layerlab.core.shapes import Analysis
from layerlab.core.spec import fmt_shape

REGRESSION_LOSSES = ("MSELoss", "L1Loss")


@dataclass(frozen=True)
class Change:
    """One node attribute to set (`params` as a whole, or `type`), and why, for a person."""

    node: str
    key: str
    old: Any
    new: Any
    reason: str


def graph_changes(graph: nx.DiGraph, analysis: Analysis, data: Dataset) -> list[Change]:
    """The edits that make `graph` take `data`: none when it already does."""
    changes: list[Change] = []
    node = analysis.input_node
    if node is None:
        return changes
    shape = analysis.shapes.get(node)
    if shape is not None and shape != data.sample_shape and shape not in data.shapes:
        params = graph.nodes[node].get("params", {})
        changes.append(Change(node, "params", params,
                              {**params, "shape": list(data.sample_shape)},
                              f"the data gives samples of shape {fmt_shape(data.sample_shape)}"
                              f", but Input node {node} expects {fmt_shape(shape)}"))
    changes += _loss_change(graph, analysis, data)
    changes += _head_change(graph, analysis, data)
    return changes


def _loss_change(graph: nx.DiGraph, analysis: Analysis, data: Dataset) -> list[Change]:
    loss = analysis.loss_node
    if loss is None:
        return []
    kind = graph.nodes[loss]["type"]
    if data.task == "classification" and kind in REGRESSION_LOSSES:
        return [Change(loss, "type", kind, "CrossEntropyLoss",
                       f"the data has {len(data.classes)} classes, but {loss} is {kind}, a "
                       "regression loss")]
    if data.task == "regression" and kind in CLASS_LOSSES:
        return [Change(loss, "type", kind, "MSELoss",
                       f"the data has numeric targets, but {loss} is {kind}, a "
                       "classification loss")]
    return []


def _head_change(graph: nx.DiGraph, analysis: Analysis, data: Dataset) -> list[Change]:
    """The last Linear's width: one score per class, or one output per target."""
    out = analysis.output_node
    if out is None or graph.nodes[out].get("type") != "Linear":
        return []
    width = len(data.classes) if data.task == "classification" else int(data.y.shape[1])
    params = graph.nodes[out].get("params", {})
    loss = analysis.loss_node
    binary = loss is not None and graph.nodes[loss]["type"] == "BCEWithLogitsLoss" and \
        width == 2 and params.get("out_features") == 1  # one logit for two classes
    if params.get("out_features") == width or binary:
        return []
    what = f"{width} classes" if data.task == "classification" else f"{width} target(s)"
    return [Change(out, "params", params, {**params, "out_features": width},
                   f"the data has {what}, but {out} gives {params.get('out_features')} "
                   "outputs")]
