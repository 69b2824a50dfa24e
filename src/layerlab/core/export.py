"""Exports: safetensors, ONNX (checked in onnxruntime), torch.export (.pt2), standalone Python.

Every export is written atomically and checked where it can be: the ONNX file is run once in
onnxruntime and compared with torch, the .pt2 is loaded back and compared. A layer a format
cannot express is refused with the node named, never silently dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import torch
import torch.fx

from layerlab.core.atomic import atomic_path, atomic_write_text
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.compiler import build_model, checked
from layerlab.core.lora import merge_adapters, merge_check
from layerlab.core.project import Project
from layerlab.core.pycode import python_source
from layerlab.core.shapes import Analysis
from layerlab.core.weights import save_weights, shared_keys

FORMATS = ("onnx", "pt2", "python", "safetensors")


class ExportError(Exception):
    """An export that cannot be made; names the node or package at fault."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    detail: str  # one line for a person: opset, largest difference, …


def sample_input(analysis: Analysis, batch: int = 3, seed: int = 0) -> torch.Tensor:
    """A batch shaped like the Input node asks (token ids below every Embedding's vocab)."""
    node = analysis.input_node
    assert node is not None
    shape, dtype = analysis.shapes[node], analysis.dtypes[node]
    generator = torch.Generator().manual_seed(seed)
    if dtype == "int64":
        vocab = min((c.params["num_embeddings"] for c in analysis.contexts.values()
                     if "num_embeddings" in c.params), default=2)
        return torch.randint(0, vocab, (batch, *shape), generator=generator)
    return torch.rand(batch, *shape, generator=generator)


def _dynamic_batch() -> tuple[dict[int, torch.export.Dim], ...]:
    return ({0: torch.export.Dim("batch", min=1, max=1 << 20)},)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.export and the ONNX exporter print progress and warnings meant for developers."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_pt2(model: torch.fx.GraphModule, analysis: Analysis, path: Path) -> str:
    x = sample_input(analysis)
    with _quiet():
        program = torch.export.export(model.eval(), (x,), dynamic_shapes=_dynamic_batch())
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp)
    loaded = torch.export.load(path).module()
    diff = max(_max_diff(loaded(sample_input(analysis, b, seed=b)),
                         model(sample_input(analysis, b, seed=b))) for b in (1, 7))
    return f"torch.export program; reloaded, matches the model within {diff:.1e}"


def export_onnx(model: torch.fx.GraphModule, analysis: Analysis, path: Path) -> str:
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's exporter needs it
    except ImportError:
        raise ExportError("ONNX export needs the onnx and onnxscript packages: "
                          "pip install 'layerlab[onnx]'") from None
    x = sample_input(analysis)
    with atomic_path(path) as tmp, _quiet():
        torch.onnx.export(model.eval(), (x,), str(tmp), dynamo=True, external_data=False,
                          dynamic_shapes=_dynamic_batch(), input_names=["input"],
                          output_names=["output"])
    opset = next(o.version for o in onnx.load(str(path)).opset_import
                 if o.domain in ("", "ai.onnx"))
    try:
        import onnxruntime
    except ImportError:
        return f"ONNX opset {opset}; not checked (onnxruntime is not installed)"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = []
    for batch in (1, 7):
        sample = sample_input(analysis, batch, seed=batch)
        (got,) = session.run(None, {"input": sample.numpy()})
        diffs.append(_max_diff(torch.from_numpy(np.asarray(got)), model(sample)))
    return (f"ONNX opset {opset}; onnxruntime matches torch within {max(diffs):.1e} "
            "(batch 1 and 7)")


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).abs().max())


def _culprit(graph: nx.DiGraph, analysis: Analysis,
             exporter: Callable[[torch.fx.GraphModule, Analysis, Path], str],
             folder: Path) -> str | None:
    """The first node that fails to export on its own (fed by an Input of its input shape)."""
    for node in analysis.order:
        spec = CATALOGUE[graph.nodes[node]["type"]]
        ctx = analysis.contexts[node]
        if spec.type == "Input" or spec.is_loss or spec.is_merge or spec.max_inputs == 0 \
                or spec.outputs is not None:  # no input of its own, or several outputs
            continue
        single = nx.DiGraph()
        single.add_node("x", type="Input", params={"shape": list(ctx.shape),
                                                   "dtype": ctx.in_dtypes[0]})
        single.add_node(node, type=spec.type, params=dict(graph.nodes[node].get("params", {})))
        single.add_edge("x", node)
        probe = checked(single)
        try:
            exporter(build_model(single), probe, folder / f"probe-{node}")
        except Exception:  # any failure of the exporter marks the node
            return node
    return None


def export(project: Project, model: torch.fx.GraphModule, fmt: str, out: Path) -> ExportReport:
    """Write `model` (compiled from `project`, weights loaded) to `out` in format `fmt`.

    LoRA adapters are merged first, in every format: each LoRA Linear is written as one
    plain Linear with W′ = W + (α/r)·B·A and b′ = b (core/lora.py), so the file holds an
    ordinary model that any program runs without knowing about adapters.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    plain_project, plain = merge_adapters(project, model)
    if plain is model:
        return _export(project, model, fmt, Path(out))
    x = sample_input(checked(project.graph))
    try:
        note = merge_check(model.eval(), plain.eval(), x)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    report = _export(plain_project, plain, fmt, Path(out))
    return dataclasses.replace(report, detail=f"{report.detail}; {note}")


def _export(project: Project, model: torch.fx.GraphModule, fmt: str, out: Path
            ) -> ExportReport:
    analysis = checked(project.graph)
    model.eval()
    if fmt == "safetensors":
        save_weights(model, out)
        state = model.state_dict()
        tied = len(shared_keys(state))  # written once
        return ExportReport(out, fmt, f"{len(state) - tied} tensors"
                            + (f" ({tied} tied weight stored once)" if tied else ""))
    if fmt == "python":
        atomic_write_text(out, python_source(project, model, analysis))
        return ExportReport(out, fmt, "standalone PyTorch module (torch, numpy, safetensors)")
    exporter = export_onnx if fmt == "onnx" else export_pt2
    try:
        with torch.no_grad():
            return ExportReport(out, fmt, exporter(model, analysis, out))
    except (ExportError, OSError):
        raise  # a full disk or an unwritable place is not the format's fault
    except Exception as exc:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            node = _culprit(project.graph, analysis, exporter, Path(folder))
        where = f"node {node} ({project.graph.nodes[node]['type']})" if node else "the model"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{fmt} cannot express {where}: {first}") from None
