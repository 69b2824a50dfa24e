"""Small builders shared by the tests."""

from __future__ import annotations

from typing import Any

import networkx as nx
import torch


def chain_graph(input_shape: list[int], *layers: tuple[str, dict[str, Any]],
                dtype: str = "float32", loss: str | None = None) -> nx.DiGraph:
    """Input → layers… (→ loss), ids n0, n1, …"""
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": list(input_shape), "dtype": dtype},
               pos=[0, 0])
    prev = "x"
    for i, (typ, params) in enumerate(layers):
        node = f"n{i}"
        g.add_node(node, type=typ, params=dict(params), pos=[100 * (i + 1), 0])
        g.add_edge(prev, node)
        prev = node
    if loss:
        g.add_node("loss", type=loss, params={}, pos=[0, 100])
        g.add_edge(prev, "loss")
    return g


def sample_input(shape: tuple[int, ...], dtype: str = "float32", batch: int = 3,
                 vocab: int = 10) -> torch.Tensor:
    if dtype == "int64":
        return torch.randint(0, vocab, (batch, *shape))
    return torch.randn(batch, *shape)
