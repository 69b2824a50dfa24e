"""Ports: which value of which node an edge carries, and in which order a node takes them.

An edge carries `port` (the target's input, 0-based, the operand order of a merge) and
`out_port` (the source's output, 0-based; absent means 0). Most layers have one output, and
their value is named by the node id, as it always was. A layer with several outputs (Split,
Chunk) names each of its values `node:k`: that is the key of the value in the compiler, in
a traced step (StepTrace.forward and .backward) and in a Ctx's `in_ids`.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from layerlab.core.catalogue import CATALOGUE


def out_port(edge: dict[str, Any]) -> Any:
    """The source's output an edge leaves from, as the file has it (0 when absent)."""
    return edge.get("out_port", 0)


def drawn_port(edge: dict[str, Any]) -> int:
    """The output port to draw an edge from: out_port, or 0 while it is malformed (the
    analysis reports it)."""
    port = out_port(edge)
    return port if isinstance(port, int) and not isinstance(port, bool) and port >= 0 else 0


def has_ports(graph: nx.DiGraph, node: str) -> bool:
    """Whether the node's type has several output ports (its values are `node:k`)."""
    spec = CATALOGUE.get(graph.nodes[node].get("type", ""))
    return spec is not None and spec.outputs is not None


def value_key(node: str, port: int, several: bool) -> str:
    """The name of one output value: the node id, or `node:k` for a layer with several."""
    return f"{node}:{port}" if several else node


def owner(key: str) -> str:
    """The node a value key belongs to."""
    return key.split(":", 1)[0]


def port_of(key: str) -> int:
    """The output port a value key names (0 for a single-output node)."""
    return int(key.split(":", 1)[1]) if ":" in key else 0


def in_edges_in_port_order(graph: nx.DiGraph, node: str) -> list[tuple[str, dict[str, Any]]]:
    """(source, edge data) of the node's inputs in operand order."""
    edges = sorted(graph.in_edges(node, data=True), key=lambda e: _order(e[2].get("port", 0)))
    return [(src, data) for src, _, data in edges]


def input_keys(graph: nx.DiGraph, node: str) -> list[str]:
    """The value keys the node takes, in operand order."""
    return [value_key(src, out_port(data), has_ports(graph, src))
            for src, data in in_edges_in_port_order(graph, node)]


def output_count(graph: nx.DiGraph, node: str) -> int:
    """How many output ports the canvas draws for the node (1 for an unknown type, one
    whose parameters are broken, or a layer with several outputs whose count cannot be
    read yet)."""
    spec = CATALOGUE.get(graph.nodes[node].get("type", ""))
    if spec is None:
        return 1
    params = graph.nodes[node].get("params", {})
    try:
        count = spec.output_count(spec.resolve(params if isinstance(params, dict) else {}))
    except (KeyError, TypeError, ValueError):
        return 1
    return count if isinstance(count, int) and count >= 0 else 1


def _order(port: Any) -> int:
    return port if isinstance(port, int) and not isinstance(port, bool) else 0
