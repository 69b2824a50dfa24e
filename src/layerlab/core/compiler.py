"""Graph → torch.fx.GraphModule, with submodules named by node id.

The model is built with fx's Graph API, not traced, so `.code` reads like the forward a
person would write, and a GraphModule trains exactly as fast as a hand-written module
(shared/measurements.md). Every fx node that carries a layer's output is tagged with
`meta["layerlab_node"]`, which is how the step-through tracer maps values back to nodes.
"""

from __future__ import annotations

import operator

import networkx as nx
import torch
import torch.fx
from torch import nn

from layerlab.core.catalogue import CATALOGUE, apply_init
from layerlab.core.errors import GraphError
from layerlab.core.ports import value_key
from layerlab.core.shapes import Analysis, analyze
from layerlab.core.tying import shared_numel, tie_weights, ties

NODE_META = "layerlab_node"


def checked(graph: nx.DiGraph) -> Analysis:
    """The graph's analysis, or GraphError with every problem; compiling needs a valid graph."""
    analysis = analyze(graph)
    if analysis.errors:
        raise GraphError(analysis.errors)
    if analysis.output_node is None or analysis.input_node is None:
        raise GraphError([(None, "the graph has no output")])
    return analysis


def build_model(graph: nx.DiGraph) -> torch.fx.GraphModule:
    """The graph without its loss node as a trainable module: forward(x) feeds the loss.

    Weights are initialised by each node's `init` from torch's global random state, so
    seeding torch first makes the model reproducible.
    """
    analysis = checked(graph)
    modules = nn.Module()
    fx_graph = torch.fx.Graph()
    values: dict[str, torch.fx.Node] = {}  # by value key (core/ports.py)
    # the Input first: a Parameter, which has no input edge, takes its batch size from it
    for node in sorted(analysis.order, key=lambda n: n != analysis.input_node):
        if node == analysis.loss_node:
            continue
        ctx = analysis.contexts[node]
        spec = CATALOGUE[graph.nodes[node]["type"]]
        if spec.type == "Input":
            value = fx_graph.placeholder(node)
        else:
            if spec.build is not None:
                modules.add_module(node, _made(graph, analysis, node))
            args = [values[s] for s in ctx.in_ids]
            if spec.emit is None:
                value = fx_graph.call_module(node, tuple(args))
            else:
                value = spec.emit(fx_graph, ctx, args)
        if value.op != "placeholder":
            value._rename(node)  # the variable in .code reads as the node id
        value.meta[NODE_META] = node  # several outputs: the tuple of them, then each port
        if spec.outputs is None:
            values[node] = value
        else:
            values.update(_ports(fx_graph, node, value, len(analysis.port_shapes[node])))
    fx_graph.output(values[analysis.output_node])
    fx_graph.lint()
    tie_weights(graph, modules)  # one Parameter for a table and the head that reuses it
    model = torch.fx.GraphModule(modules, fx_graph, class_name="LayerLabModel")
    return model


def _ports(fx_graph: torch.fx.Graph, node: str, pieces: torch.fx.Node,
           count: int) -> dict[str, torch.fx.Node]:
    """One fx value per output port of a layer with several (`chunk_0 = chunk[0]`), each
    tagged with its value key, so that a traced step records every port."""
    out = {}
    for port in range(count):
        item = fx_graph.call_function(operator.getitem, (pieces, port))
        item._rename(f"{node}_{port}")
        item.meta[NODE_META] = key = value_key(node, port, True)
        out[key] = item
    return out


def build_loss(graph: nx.DiGraph) -> nn.Module | None:
    """The graph's loss node as a torch loss module, or None when it has none."""
    analysis = checked(graph)
    if analysis.loss_node is None:
        return None
    spec = CATALOGUE[graph.nodes[analysis.loss_node]["type"]]
    assert spec.build is not None
    return spec.build(analysis.contexts[analysis.loss_node]).make()


def _made(graph: nx.DiGraph, analysis: Analysis, node: str) -> nn.Module:
    """The node's layer with its weights initialised; GraphError naming the node when its
    weights do not fit in memory (a field typed with a few digits too many)."""
    ctx = analysis.contexts[node]
    spec = CATALOGUE[graph.nodes[node]["type"]]
    assert spec.build is not None
    try:
        module = spec.build(ctx).make()
    except RuntimeError as exc:  # torch's allocator: "… can't allocate memory …"
        if "allocate" not in str(exc):
            raise
        count = param_counts(graph, analysis)[node]
        raise GraphError([(node, f"its {count:,} parameters ({4 * count / 1e9:,.0f} GB) do "
                                 "not fit in memory; make it smaller")]) from None
    if spec.has_init:
        apply_init(module, ctx.params["init"])
    return module


def param_counts(graph: nx.DiGraph, analysis: Analysis | None = None, *,
                 trainable: bool = False) -> dict[str, int]:
    """Parameters per node, for every node whose shape is known; built on the meta device
    so that counting a huge layer allocates nothing. `trainable`: only those an optimizer
    updates: none of a frozen node's, only the adapters of a LoRA Linear."""
    analysis = analysis or analyze(graph)
    counts = {node: _count(graph.nodes[node]["type"], repr(sorted(ctx.params.items())),
                           ctx.in_shapes, ctx) for node, ctx in analysis.contexts.items()}
    shared = shared_numel(graph, analysis.contexts)  # a tied weight: counted with its table
    if not trainable:
        return {node: total - shared.get(node, 0) for node, (total, _) in counts.items()}
    free = {node: 0 if graph.nodes[node].get("frozen") else n - shared.get(node, 0)
            for node, (_, n) in counts.items()}
    for user, target in ties(graph).items():  # a frozen head keeps the table it shares
        if graph.nodes[user].get("frozen") and user in shared and target in free:
            free[target] = max(0, free[target] - shared[user])
    return free


_COUNTS: dict[tuple[str, str, tuple[tuple[int, ...], ...]], tuple[int, int]] = {}


def _count(type_name: str, params: str, in_shapes: tuple[tuple[int, ...], ...],
           ctx: object) -> tuple[int, int]:
    """(all, trainable) parameters of one layer, remembered by (type, parameters, input
    shapes): the window asks after every edit, and almost every layer is unchanged."""
    key = (type_name, params, in_shapes)
    if key not in _COUNTS:
        spec = CATALOGUE[type_name]
        if spec.build is None or spec.is_loss:
            _COUNTS[key] = (0, 0)
        else:
            with torch.device("meta"):
                module = spec.build(ctx).make()  # type: ignore[arg-type]
            tensors = list(module.parameters())
            _COUNTS[key] = (sum(p.numel() for p in tensors),
                            sum(p.numel() for p in tensors if p.requires_grad))
    return _COUNTS[key]
