"""Small builders shared by the tests."""

from __future__ import annotations

from pathlib import Path
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


def assert_merged_onnx_equals(project: Any, model: torch.nn.Module, x: torch.Tensor,
                              path: Path) -> None:
    """`model` (with LoRA adapters) exported to ONNX at `path` holds no adapter, and
    onnxruntime gives what the unmerged model gives on `x`."""
    import numpy as np
    import onnx
    import onnxruntime

    from layerlab.core.export import export

    with torch.no_grad():
        want = model(x).numpy()
    report = export(project, model, "onnx", path)
    assert "LoRA adapters merged" in report.detail
    assert not [i.name for i in onnx.load(path).graph.initializer if "lora" in i.name]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
