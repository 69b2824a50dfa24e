"""`layerlab import`: a PyTorch or ONNX model onto the canvas, weights and all.

Each front end (core/import_fx.py for modules, core/import_onnx.py for ONNX files) turns a
model into a list of `Layer`s: catalogue nodes with their parameters, their inputs in port
order, the module they came from and the tensors they hold. This module turns that list into
a project (node ids from module paths, one collapsed group per child module, a layered
layout), loads the carried weights into the compiled graph, and checks that the compiled
graph computes what the original computed; an import that does not is refused, never saved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from layerlab.core import groups as groups_io
from layerlab.core import layout
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.compiler import build_model
from layerlab.core.errors import GraphError, format_error
from layerlab.core.project import Project
from layerlab.core.shapes import analyze, valid_id_error

TOLERANCE = 1e-5  # largest difference allowed, relative to the output's scale
INPUT_ID = "x"


class ImportRefused(Exception):
    """A model that cannot be imported; one sentence naming the op and where it came from."""


@dataclass
class Layer:
    """One catalogue node of an imported model. `inputs` are the ids of the layers (or
    INPUT_ID) feeding it, in port order; `scope` is the module path it lives in, for
    groups; `weights` are its state-dict entries by their torch names."""

    id: str
    type: str
    params: dict[str, Any]
    inputs: list[str]
    scope: tuple[str, ...] = ()
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    where: str = ""


@dataclass
class Imported:
    """What a front end found: the layers in order, the input shape and dtype, the output
    layer, and the original as a function of a batch (for the comparison)."""

    layers: list[Layer]
    input_shape: tuple[int, ...]
    output: str
    original: Callable[[torch.Tensor], torch.Tensor]
    name: str
    batch_size: int = 3  # what the comparison runs: an exported program may fix its batch


@dataclass(frozen=True)
class Comparison:
    """The compiled graph against the original on random inputs in eval mode."""

    batches: int
    batch_size: int
    largest: float  # largest absolute difference
    scale: float  # largest absolute output of the original

    @property
    def relative(self) -> float:
        return self.largest / max(self.scale, 1e-12)

    @property
    def equal(self) -> bool:
        return self.relative <= TOLERANCE

    def sentence(self) -> str:
        verdict = "equal within" if self.equal else "NOT equal within"
        return (f"compared with the original on {self.batches} random batches of "
                f"{self.batch_size} in eval mode: largest difference {self.largest:.2e}, "
                f"{self.relative:.1e} of the output scale {self.scale:.3g} — {verdict} "
                f"{TOLERANCE:.0e}")


@dataclass
class ImportResult:
    project: Project
    model: torch.fx.GraphModule  # compiled from the project, the original's weights loaded
    comparison: Comparison


def node_id(path: str, taken: set[str]) -> str:
    """A node id from a module path: `layer1.0.conv1` → `layer1_0_conv1`, made a valid,
    unused id (a leading digit gets an `m`, a clash a counter)."""
    base = re.sub(r"\W", "_", path).strip("_") or "node"
    if base[0].isdigit():
        base = "m" + base
    if valid_id_error(base):
        base += "_"
    candidate, k = base, 1
    while candidate in taken:
        candidate = f"{base}_{k}"
        k += 1
    taken.add(candidate)
    return candidate


def to_project(imported: Imported) -> Project:
    """The layers as a project: nodes, edges with ports, groups, a layered layout."""
    graph = nx.DiGraph()
    graph.add_node(INPUT_ID, type="Input", params={"shape": list(imported.input_shape)}, pos=[0, 0])
    for layer in imported.layers:
        graph.add_node(layer.id, type=layer.type, params=layer.params, pos=[0, 0])
        merge = CATALOGUE[layer.type].is_merge
        for port, value in enumerate(layer.inputs):
            source, _, out_port = value.partition(":")  # `chunk:1`: output port 1
            if graph.has_edge(source, layer.id):
                raise ImportRefused(f"{layer.where or layer.id} combines {source} with "
                                    "itself, which a graph of layers cannot draw as two edges")
            graph.add_edge(source, layer.id, **({"port": port} if merge else {}),
                           **({"out_port": int(out_port)} if out_port else {}))
    keep = nx.ancestors(graph, imported.output) | {imported.output}
    graph.remove_nodes_from([n for n in list(graph) if n not in keep])
    _add_loss(graph, imported.output)
    project = Project(graph=graph, name=imported.name)
    project.groups = _assign_groups(graph, [la for la in imported.layers if la.id in keep])
    layout.apply(project, opening_layout(graph, project.direction))
    return project


def opening_layout(graph: nx.DiGraph, direction: str) -> layout.Layout:
    """The layout the project opens with, its groups collapsed: each group laid out as one
    node among the rest, its members laid out inside from the group's corner (where the
    canvas draws the collapsed block). Auto-Layout lays out the expanded graph."""
    owner = {n: graph.nodes[n].get(groups_io.KEY) or n for n in graph}
    outline = nx.DiGraph()
    outline.add_nodes_from(dict.fromkeys(owner.values()))
    outline.add_edges_from((owner[u], owner[v]) for u, v in graph.edges if owner[u] != owner[v])
    outer = layout.layered(outline, direction)
    placed = layout.Layout(bends={(u, v): points for (u, v), points in outer.bends.items()
                                  if u in graph and v in graph})
    for group, members in groups_io.membership(graph).items():
        inner = layout.layered(graph.subgraph(members), direction)
        x0 = min(x for x, _ in inner.positions.values())
        y0 = min(y for _, y in inner.positions.values())
        gx, gy = outer.positions[group]
        placed.positions.update({n: (gx + x - x0, gy + y - y0)
                                 for n, (x, y) in inner.positions.items()})
    placed.positions.update({n: outer.positions[n] for n in graph if owner[n] == n})
    return placed


def _add_loss(graph: nx.DiGraph, output: str) -> None:
    """A classifier (one score per class) gets CrossEntropyLoss after its output, so that
    it trains as it comes; for any other output the loss is the user's choice."""
    shape = analyze(graph).shapes.get(output)
    if shape is not None and len(shape) == 1:
        loss = node_id("loss", set(graph))
        graph.add_node(loss, type="CrossEntropyLoss", params={}, pos=[0, 0])
        graph.add_edge(output, loss)


def _assign_groups(graph: nx.DiGraph, layers: Sequence[Layer]) -> dict[str, Any]:
    """One collapsed group per child module holding two or more nodes, at the shallowest
    depth where the model has more than one child (a model wrapped in one container opens
    as that container's children)."""
    depth = 1
    deepest = max((len(la.scope) for la in layers), default=0)
    while depth < deepest and len({la.scope[:depth] for la in layers
                                   if len(la.scope) >= depth}) == 1:
        depth += 1
    blocks: dict[tuple[str, ...], list[str]] = {}
    for layer in layers:
        if len(layer.scope) >= depth:
            blocks.setdefault(layer.scope[:depth], []).append(layer.id)
    found: dict[str, Any] = {}
    for scope, members in blocks.items():
        if len(members) < 2:
            continue
        gid = node_id(".".join(scope), set(found) | set(graph))
        found[gid] = groups_io.new_group(".".join(scope), collapsed=True)
        for member in members:
            graph.nodes[member][groups_io.KEY] = gid
    return found


def state_dict_of(layers: Sequence[Layer]) -> dict[str, torch.Tensor]:
    """The carried weights under the compiled model's keys (`<node id>.<torch name>`)."""
    return {f"{la.id}.{key}": tensor.detach().clone().contiguous()
            for la in layers for key, tensor in la.weights.items()}


def compile_with_weights(project: Project, layers: Sequence[Layer]) -> torch.fx.GraphModule:
    """The project compiled, with the original's weights; refused if they do not fit."""
    try:
        with torch.device("meta"):  # no storage, no initialisation: the weights come next
            model = build_model(project.graph)
    except GraphError as exc:
        node, message = exc.errors[0]
        raise ImportRefused(f"the imported graph does not check: "
                            f"{format_error(node, message)}") from None
    weights = {k: v for k, v in state_dict_of(layers).items()
               if k.split(".", 1)[0] in project.graph}
    result = model.load_state_dict(weights, strict=False, assign=True)
    problems = list(result.missing_keys) + list(result.unexpected_keys)
    if problems:
        raise ImportRefused(f"the weights of {problems[0].split('.', 1)[0]} do not fit the "
                            f"layer LayerLab builds for it ({problems[0]})")
    return model


def compare(model: torch.nn.Module, imported: Imported, batches: int = 2,
            seed: int = 0) -> Comparison:
    """Both models on the same random batches, in eval mode, without gradients."""
    batch_size = imported.batch_size
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    largest, scale = 0.0, 0.0
    with torch.no_grad():
        for _ in range(batches):
            x = random_batch(imported, batch_size, generator)
            want, got = imported.original(x), model(x)
            if not isinstance(want, torch.Tensor) or want.shape != got.shape:
                raise ImportRefused("the imported graph's output has shape "
                                    f"{list(got.shape)} but the original's has "
                                    f"{list(getattr(want, 'shape', []))}")
            largest = max(largest, float((want - got).abs().max()))
            scale = max(scale, float(want.abs().max()))
    return Comparison(batches, batch_size, largest, scale)


def random_batch(imported: Imported, batch_size: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal inputs (the importer reads float inputs: images, features)."""
    return torch.randn((batch_size, *imported.input_shape), generator=generator)


def finish(imported: Imported) -> ImportResult:
    """Project, compiled model with weights, and the comparison; refused unless equal."""
    project = to_project(imported)
    model = compile_with_weights(project, imported.layers)
    comparison = compare(model, imported)
    if not comparison.equal:
        raise ImportRefused(f"the imported graph does not compute what {imported.name} "
                            f"computes: {comparison.sentence()}")
    return ImportResult(project, model, comparison)


def import_model(source: str, input_shape: Sequence[int] | None = None,
                 args: dict[str, Any] | None = None) -> ImportResult:
    """Import SOURCE (`file.py:Name`, `package.module:factory`, `.pt2` or `.onnx`)."""
    from layerlab.core import import_source

    return finish(import_source.read(source, input_shape, args or {}))


def save_import(result: ImportResult, project_path: Path,
                weights_path: Path | None = None) -> None:
    """The project file, and the weights beside it when asked (both atomically)."""
    from layerlab.core.weights import save_weights

    result.project.save(project_path)
    if weights_path is not None:
        save_weights(result.model, weights_path)
