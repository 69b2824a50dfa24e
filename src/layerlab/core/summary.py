"""The model summary the inspector shows with nothing selected: sizes and cost."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch
from torch.utils.flop_counter import FlopCounterMode

from layerlab.core.compiler import build_model, param_counts
from layerlab.core.shapes import Analysis


@dataclass(frozen=True)
class Summary:
    parameters: int
    trainable: int
    weight_bytes: int
    flops: int | None  # per sample, forward; None while the graph has errors


def summarise(graph: nx.DiGraph, analysis: Analysis) -> Summary:
    total = sum(param_counts(graph, analysis).values())
    trainable = sum(param_counts(graph, analysis, trainable=True).values())
    return Summary(total, trainable, 4 * total, forward_flops(graph, analysis))


def forward_flops(graph: nx.DiGraph, analysis: Analysis) -> int | None:
    """FLOPs of one sample's forward pass, counted by torch on the meta device (no memory,
    no arithmetic)."""
    if analysis.errors or analysis.input_node is None:
        return None
    shape, dtype = analysis.shapes[analysis.input_node], analysis.dtypes[analysis.input_node]
    with torch.device("meta"):
        model = build_model(graph)
        x = torch.zeros(1, *shape, dtype=torch.int64 if dtype == "int64" else torch.float32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return int(counter.get_total_flops())
