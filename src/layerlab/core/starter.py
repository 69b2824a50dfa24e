"""A starter project sized to a person's own data: a table (Input of its feature count,
Standardize, a small MLP) or an image folder (a small CNN), with a head and a loss for its
task and training settings that reach a good result without tuning.

The settings were chosen against scikit-learn's MLPClassifier and MLPRegressor on
standardised features (benchmarks/bench_own_data.py): Adam, batches of 32, and enough
epochs for about 1,500 steps (at most 300 epochs).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from layerlab.core.datasets import Dataset, DatasetError, load_dataset, resolve_options
from layerlab.core.imagefolder import ImageFolderError, scan
from layerlab.core.project import DEFAULT_TRAINING, Project

HIDDEN = 64
STEPS = 1500
BATCH = 32
VALIDATION = 0.2
ROW = 138  # vertical distance of the nodes, as in the bundled examples
LARGEST_SIDE = 64  # images larger than this are shrunk to 32 × 32 for a CPU-sized start


@dataclass(frozen=True)
class DataSummary:
    """What a person is shown before a starter project is made from their data."""

    kind: str  # "table" or "images"
    options: dict[str, Any]  # the dataset options the project will hold
    task: str
    features: int  # width of one sample (a table's encoded columns)
    sample_shape: tuple[int, ...]
    classes: tuple[str, ...]
    balance: dict[str, int] = field(default_factory=dict)  # class → samples
    targets: int = 1  # regression outputs


def summarise(path: Path, target: str | None = None, task: str | None = None) -> tuple[
        DataSummary, Dataset]:
    """Read the data at `path` (a table, or a folder of class folders) as the project will;
    DatasetError says why it cannot be used."""
    if path.is_dir():
        options = image_options(path)
        data = load_dataset("imagefolder", options)
        kind = "images"
    else:
        options = {"path": str(path), "target": target or ""}
        if task:
            options["task"] = task
        data = load_dataset("csv", options)
        options["target"] = ",".join(data.targets)
        options["categories"] = copy.deepcopy(data.categories)
        kind = "table"
    counts: dict[str, int] = {}
    if data.task == "classification":
        ids = data.y.bincount(minlength=len(data.classes)).tolist()
        counts = {name: ids[k] for k, name in enumerate(data.classes)}
    targets = 1 if data.task == "classification" else int(data.y.shape[1])
    summary = DataSummary(kind, options, data.task, int(data.x[0].numel()),
                          data.sample_shape, data.classes, counts, targets)
    return summary, data


def image_options(folder: Path) -> dict[str, Any]:
    """Size and colour from the first image: small images keep their size, larger ones are
    shrunk to 32 × 32; any colour image makes the dataset RGB."""
    from PIL import Image

    try:
        first = scan(folder).files[0][0]
        with Image.open(first) as image:
            width, height = image.size
            mode = image.mode
    except (ImageFolderError, OSError) as exc:
        raise DatasetError(str(exc)) from None
    size = [height, width] if max(height, width) <= LARGEST_SIDE else [32, 32]
    color = "grayscale" if mode in ("1", "L", "LA", "I", "I;16", "F") else "rgb"
    return resolve_options("imagefolder", {"path": str(folder), "size": size,
                                           "color": color})


def starter(summary: DataSummary, name: str, train_rows: int) -> Project:
    """The starter project for data described by `summary` (its path as given)."""
    head = len(summary.classes) if summary.task == "classification" else summary.targets
    layers = _cnn(summary.sample_shape, head) if summary.kind == "images" else _mlp(
        summary.features, head)
    loss = "CrossEntropyLoss" if summary.task == "classification" else "MSELoss"
    layers.append(("loss", loss, {}))
    graph = nx.DiGraph()
    for row, (node, kind, params) in enumerate(layers):
        graph.add_node(node, type=kind, params=params, pos=[0, row * ROW])
        if row:
            graph.add_edge(layers[row - 1][0], node)
    training = copy.deepcopy(DEFAULT_TRAINING)
    dataset = "imagefolder" if summary.kind == "images" else "csv"
    batches = max(1, math.ceil(train_rows / BATCH))
    training.update({
        "dataset": {"name": dataset, "options": summary.options,
                    "validation_split": VALIDATION},
        "optimizer": {"name": "adam", "lr": 0.001 if summary.kind == "images" else 0.003},
        "batch_size": BATCH,
        "epochs": 15 if summary.kind == "images" else min(300, max(20, STEPS // batches)),
    })
    return Project(graph=graph, name=name, training=training)


def _mlp(features: int, head: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("input", "Input", {"shape": [features]}),
        ("scale", "Standardize", {}),
        ("fc1", "Linear", {"out_features": HIDDEN}),
        ("relu1", "ReLU", {}),
        ("fc2", "Linear", {"out_features": HIDDEN}),
        ("relu2", "ReLU", {}),
        ("out", "Linear", {"out_features": head}),
    ]


def _cnn(shape: tuple[int, ...], head: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("input", "Input", {"shape": list(shape)}),
        ("conv1", "Conv2d", {"out_channels": 16, "kernel_size": 3, "padding": 1}),
        ("relu1", "ReLU", {}),
        ("pool1", "MaxPool2d", {"kernel_size": 2}),
        ("conv2", "Conv2d", {"out_channels": 32, "kernel_size": 3, "padding": 1}),
        ("relu2", "ReLU", {}),
        ("pool2", "MaxPool2d", {"kernel_size": 2}),
        ("flat", "Flatten", {}),
        ("fc1", "Linear", {"out_features": HIDDEN}),
        ("relu3", "ReLU", {}),
        ("out", "Linear", {"out_features": head}),
    ]


def new_project(data_path: Path, out: Path, target: str | None = None,
                task: str | None = None) -> Project:
    """The starter project for the data at `data_path`, to be saved at `out`: its data path
    is written relative to `out`'s folder, so the two can move together."""
    summary, data = summarise(data_path, target, task)
    relative = os.path.relpath(data_path.resolve(), out.resolve().parent)
    options = {**summary.options, "path": Path(relative).as_posix()}
    summary = DataSummary(summary.kind, options, summary.task, summary.features,
                          summary.sample_shape, summary.classes, summary.balance,
                          summary.targets)
    train_rows = len(data) - round(len(data) * VALIDATION)
    name = data_path.stem if data_path.is_file() else data_path.name
    return starter(summary, name, train_rows)
