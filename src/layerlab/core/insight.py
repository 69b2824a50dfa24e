"""What a model does, in numbers a person can look at: the decision boundary over the input
plane (and each node's output over it), the validation results with their confusion matrix,
a preview of the dataset, and one chosen sample traced node by node.

The window's torch thread sends these records to its views; they need no Qt, so the tests
(and the command line) call the same functions. Each record is frozen: it crosses threads as
an immutable message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
import torch.fx

from layerlab.core.compiler import NODE_META
from layerlab.core.datasets import Dataset, DatasetError, load_dataset, split_indices
from layerlab.core.idx import SOURCES
from layerlab.core.objective import Objective
from layerlab.core.text_data import preview_rows
from layerlab.core.tracer import StepTrace, trace_step

GRID = 64  # points per side of the decision-boundary plane
IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist", "imagefolder")
PREVIEW_IMAGES = 64
PREVIEW_ROWS = 50
HISTOGRAM_BINS = 40
CHUNK = 1024  # validation samples per forward pass


@dataclass(frozen=True)
class BoundaryRecord:
    """The model's prediction over the input plane (2-D datasets), and each node's output
    (mean over its features) over the same plane, for the canvas thumbnails."""

    step: int
    image: np.ndarray  # GRID × GRID: probability of class 1, or the predicted class
    extent: tuple[float, float, float, float]  # x0, x1, y0, y1
    nodes: dict[str, np.ndarray]


@dataclass(frozen=True)
class ResultsRecord:
    """Validation results once a run ends."""

    confusion: np.ndarray  # true × predicted counts
    predicted: np.ndarray
    targets: np.ndarray
    samples: np.ndarray | None  # validation images (N, H, W) for image datasets
    classes: tuple[str, ...]
    histograms: dict[str, tuple[np.ndarray, np.ndarray]]  # parameter → (counts, edges)
    outside: int = 0  # predictions of an output beyond the dataset's classes


@dataclass(frozen=True)
class PreviewRecord:
    """What the dataset looks like: points (with the validation split), images, or rows."""

    kind: str  # points, images, table, message
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    val: np.ndarray | None = None
    header: tuple[str, ...] = ()
    message: str = ""


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in evaluation mode (Dropout off, BatchNorm's running statistics), then back
    in the mode it was in: looking at a model must not change how it trains."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# -- decision boundary ----------------------------------------------------------------
class _Probe(torch.fx.Interpreter):
    """Runs the model on a grid of points and keeps each node's mean output."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module)
        self.means: dict[str, np.ndarray] = {}

    def run_node(self, n: torch.fx.Node) -> object:
        out = super().run_node(n)
        node = n.meta.get(NODE_META)
        if node is not None and isinstance(out, torch.Tensor) and out.is_floating_point():
            self.means[node] = out.reshape(len(out), -1).mean(1).float().cpu().numpy()
        return out


def plane(x: torch.Tensor, size: int = GRID) -> tuple[torch.Tensor,
                                                       tuple[float, float, float, float]]:
    """size × size points over the range of the 2-D samples `x` with a 10% margin, row by
    row (y outer, x inner), and their extent (x0, x1, y0, y1)."""
    lo, hi = x.min(0).values.tolist(), x.max(0).values.tolist()
    pad = [0.1 * (h - low) for low, h in zip(lo, hi, strict=True)]
    xs = torch.linspace(lo[0] - pad[0], hi[0] + pad[0], size)
    ys = torch.linspace(lo[1] - pad[1], hi[1] + pad[1], size)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    return grid, (xs[0].item(), xs[-1].item(), ys[0].item(), ys[-1].item())


def class_image(out: torch.Tensor, objective: Objective | None = None) -> torch.Tensor:
    """One value in [0, 1] per row of model output: the probability of class 1 (two
    classes), or the predicted class scaled to [0, 1] (more). A single output is a logit
    unless the objective says it is a probability or a regressed 0/1 target."""
    if out.shape[1] == 2:
        return torch.softmax(out, 1)[:, 1]
    if out.shape[1] > 2:
        return out.argmax(1).float() / (out.shape[1] - 1)
    if objective is not None and objective.encoding == "binary" and not objective.logits:
        return out[:, 0].clamp(0, 1)
    return torch.sigmoid(out[:, 0])


@torch.no_grad()
def decision_boundary(model: torch.fx.GraphModule, x: torch.Tensor, device: torch.device, *,
                      objective: Objective | None = None, step: int = 0,
                      size: int = GRID) -> BoundaryRecord | None:
    """The model (in evaluation mode) over the plane of the samples `x`, or None when the
    samples are not points of a plane."""
    if tuple(x.shape[1:]) != (2,):
        return None
    grid, extent = plane(x, size)
    with evaluating(model):
        probe = _Probe(model)
        out = probe.run(grid.to(device)).float().cpu()
    nodes = {n: v.reshape(size, size) for n, v in probe.means.items()}
    return BoundaryRecord(step, class_image(out, objective).reshape(size, size).numpy(),
                          extent, nodes)


# -- results ----------------------------------------------------------------------------
@torch.no_grad()
def predict(model: torch.nn.Module, objective: Objective, x: torch.Tensor,
            chunk: int = CHUNK) -> torch.Tensor:
    """The class id the model predicts for each sample (on the CPU), in evaluation mode."""
    with evaluating(model):
        outputs = [objective.predict(model(x[i:i + chunk]).float()).cpu()
                   for i in range(0, len(x), chunk)]
    return torch.cat(outputs) if outputs else torch.zeros(0, dtype=torch.int64)


def confusion_matrix(targets: np.ndarray, predicted: np.ndarray,
                     classes: int) -> tuple[np.ndarray, int]:
    """Counts of (true, predicted) pairs, and how many predictions name no class (a model
    with more outputs than the dataset has classes may pick one)."""
    confusion = np.zeros((classes, classes), dtype=np.int64)
    inside = (predicted >= 0) & (predicted < classes)
    np.add.at(confusion, (targets[inside], predicted[inside]), 1)
    return confusion, int((~inside).sum())


def weight_histograms(model: torch.nn.Module,
                      bins: int = HISTOGRAM_BINS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(counts, edges) of each weight matrix or kernel (biases and norm scales left out)."""
    histograms = {}
    for key, param in model.named_parameters():
        if param.dim() >= 2:
            histograms[key] = np.histogram(param.detach().float().cpu().numpy(), bins=bins)
    return histograms


def validation_results(model: torch.nn.Module, objective: Objective, data: Dataset,
                       x_val: torch.Tensor, y_val: torch.Tensor) -> ResultsRecord | None:
    """The model's predictions on the validation samples, counted by class; None for
    regression or when there is no validation split."""
    if data.task != "classification" or len(x_val) == 0:
        return None
    predicted = predict(model, objective, x_val).numpy()
    targets = y_val.cpu().numpy()
    confusion, outside = confusion_matrix(targets, predicted, len(data.classes))
    samples = None
    if data.name in IMAGE_DATASETS:
        samples = gray_images(x_val.cpu())
    return ResultsRecord(confusion, predicted, targets, samples, data.classes,
                         weight_histograms(model), outside)


def gray_images(x: torch.Tensor) -> np.ndarray:
    """(N, H, W) pictures to show: channels averaged (an RGB image folder), flat samples
    (MNIST seen as [784]) made square again."""
    if x.dim() == 4:
        return x.float().mean(1).numpy()
    side = round(x[0].numel() ** 0.5)
    return x.reshape(len(x), side, side).float().numpy()


# -- dataset preview --------------------------------------------------------------------
def preview_dataset(data: Dataset, validation_split: float, seed: int) -> PreviewRecord:
    """Points of a plane (with the validation samples marked), the first images, or the
    first rows of a table."""
    if data.sample_shape == (2,):
        _, val = split_indices(len(data), validation_split, seed)
        return PreviewRecord("points", data.x.numpy(), data.y.numpy(), val.numpy())
    if data.name in IMAGE_DATASETS:
        return PreviewRecord("images", gray_images(data.x[:PREVIEW_IMAGES]),
                             data.y[:PREVIEW_IMAGES].numpy())
    x, y = data.x[:PREVIEW_ROWS], data.y[:PREVIEW_ROWS]
    if data.vocab:  # text: the characters, not their token ids
        return PreviewRecord("table", np.array(preview_rows(x, y, data.vocab, data.classes),
                                               dtype=object), header=("input", "target"))
    header = (*tuple(f"x{i}" for i in range(x.shape[1])), "target")
    rows = torch.cat([x.float(), y.reshape(len(x), -1).float()], 1)
    return PreviewRecord("table", rows.numpy(), header=header)


def preview_training(training: Mapping[str, Any], base: Path | None = None) -> PreviewRecord:
    """The preview of a project's training dataset (relative data paths from folder `base`);
    a dataset that cannot be loaded is a message in the preview's place."""
    dataset = training["dataset"]
    name, options = dataset.get("name", ""), dict(dataset.get("options", {}))
    if name in SOURCES:
        options["download"] = False  # only a run downloads: a preview must stay quick
    try:
        data = load_dataset(name, options, base=base)
    except DatasetError as exc:
        return PreviewRecord("message", message=str(exc))
    return preview_dataset(data, dataset.get("validation_split", 0.1),
                           training.get("seed", 0))


# -- one chosen sample ------------------------------------------------------------------
def trace_sample(graph: nx.DiGraph, model: torch.fx.GraphModule, objective: Objective,
                 data: Dataset, index: int, device: torch.device) -> StepTrace:
    """Sample `index` of `data` through the model, recorded node by node: in evaluation
    mode (a single sample cannot feed BatchNorm's batch statistics) and without an update,
    so that looking at a sample changes nothing about training."""
    if not 0 <= index < len(data):
        raise DatasetError(f"sample {index} is not in dataset {data.name}, which has "
                           f"{len(data)} samples")
    x = data.x[index:index + 1].to(device)
    y = data.y[index:index + 1].to(device)
    try:
        with evaluating(model):
            trace = trace_step(graph, model, x, y, keep=1,
                               loss_fn=lambda out, t: objective.loss(out.float(),
                                                                     objective.target(t)))
        trace.vocab = data.vocab  # labels of attention maps' positions
        return trace
    finally:
        model.zero_grad(set_to_none=True)
