"""Does a project's dataset fit its network? The checks `train` makes as it starts (the
dataset's sample shape against the Input node, its classes or targets against the output
and the loss), made without training, for `layerlab check` and the window.

The same core functions decide as for a run (datasets.fit_to_input, objective.make_objective),
so check and train cannot disagree. A dataset that is not on this machine (MNIST before
its download, a CSV path that does not exist here) is a note, not a problem: the project may
well be right for the machine it will train on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from layerlab.core.compiler import build_loss
from layerlab.core.datafit import graph_changes
from layerlab.core.datasets import (
    Dataset,
    DatasetError,
    cache_root,
    data_path,
    fit_to_input,
    load_dataset,
    project_folder,
)
from layerlab.core.errors import GraphError
from layerlab.core.idx import SOURCES, IdxError, ensure_files
from layerlab.core.objective import make_objective
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.shapes import Analysis, analyze

Problem = tuple[str | None, str]


@dataclass(frozen=True)
class Fit:
    problems: tuple[Problem, ...] = ()  # (node id or training location, one sentence)
    notes: tuple[str, ...] = ()  # what could not be checked here, and why


def dataset_fit(project: Project, analysis: Analysis | None = None) -> Fit:
    """The problems a run of `project` would meet between its dataset and its network.

    Nothing is reported for a graph or a training section with problems of their own (they
    are reported where they are found). The dataset is loaded, never downloaded.
    """
    analysis = analysis or analyze(project.graph)
    node = analysis.input_node
    if analysis.errors or node is None or analysis.output_node is None:
        return Fit()
    try:
        settings = settings_from(project.training)
    except GraphError:
        return Fit()
    base = project_folder(project.path)
    absent = not_here(settings.dataset, settings.dataset_options, base)
    if absent:
        return Fit(notes=(absent,))
    try:
        data = load_dataset(settings.dataset, _offline(settings.dataset,
                                                       settings.dataset_options), base=base)
    except DatasetError as exc:
        return Fit(problems=(("training.dataset", str(exc)),))
    notes = _fit_notes(project, analysis, data)
    try:
        data = fit_to_input(data, node, analysis.shapes[node], analysis.dtypes[node])
        check_token_ids(project.graph, node, data)
    except DatasetError as exc:
        return Fit(problems=((node, str(exc)),), notes=notes)
    return Fit(problems=tuple(_objective_problems(project, analysis, data)), notes=notes)


def _fit_notes(project: Project, analysis: Analysis, data: Dataset) -> tuple[str, ...]:
    """Every way the graph and the data disagree (some train anyway: a 10-output head on 3
    classes), and where the fix is."""
    changes = graph_changes(project.graph, analysis, data)
    if not changes:
        return ()
    return (*(f"{c.reason}" for c in changes),
            "Fit graph to data (the window's training panel) makes these changes in one "
            "undoable step")


def check_token_ids(graph: nx.DiGraph, input_node: str, data: Dataset) -> None:
    """An Embedding fed by the Input must have an entry for every token id of the dataset:
    torch would stop the run with an IndexError at the first batch that has a larger one."""
    if data.x.dtype != torch.int64 or not len(data.x):
        return
    largest = int(data.x.max())
    for node in graph.successors(input_node):
        attrs = graph.nodes[node]
        size = attrs.get("params", {}).get("num_embeddings")
        kind = attrs.get("type")
        if kind in ("Embedding", "TokenPositionEmbedding") and isinstance(size, int) and \
                largest >= size:
            raise DatasetError(f"{kind} {node} has num_embeddings={size}, but dataset "
                               f"{data.name} has token ids up to {largest}; set it to at "
                               f"least {largest + 1}")


def _objective_problems(project: Project, analysis: Analysis, data: Dataset) -> list[Problem]:
    """Classes or targets against the output and the loss (a graph without a loss node
    trains nothing, so there is nothing to match)."""
    loss = build_loss(project.graph)
    if loss is None or analysis.loss_node is None or analysis.output_node is None:
        return []
    loss_type = project.graph.nodes[analysis.loss_node]["type"]
    try:
        make_objective(loss_type, loss, analysis.output_node,
                       analysis.shapes[analysis.output_node], data)
    except DatasetError as exc:
        return [(analysis.loss_node, str(exc))]
    return []


def not_here(name: str, options: dict[str, Any], base: Path | None = None) -> str | None:
    """A note when the dataset's files are not on this machine; None when they are (or
    when the dataset needs no files). A relative path is read from `base`."""
    if name in ("csv", "imagefolder") and options.get("path"):
        path = data_path(options["path"], base)
        if not path.exists():
            return (f"dataset {name}: {path} is not on this machine, so its fit with the "
                    "network was not checked")
    if name in SOURCES:
        root = cache_root(name, options.get("root"))
        try:
            ensure_files(name, root, download=False)
        except IdxError:
            later = "train downloads it" if options.get("download", True) else \
                "its downloads are off"
            return (f"dataset {name} is not on this machine (its files are not in "
                    f"{root}; {later}), so its fit with the network was not checked")
    return None


def _offline(name: str, options: dict[str, Any]) -> dict[str, Any]:
    return {**options, "download": False} if name in SOURCES else options
