"""All torch work of the window happens here, in one thread of its own.

Measured on this machine (shared/measurements.md): one QThread that owns every torch
operation trains at ×0.93 of bare speed, and only one thread per process may run
multi-threaded torch. The GUI thread only draws. Records travel to it as immutable messages,
batched and sent at most every 50 ms; decision-boundary images at most every 250 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.fx
from PySide6.QtCore import QObject, Signal, Slot

from layerlab.core.compiler import NODE_META, build_model
from layerlab.core.datasets import DatasetError, load_dataset, split_indices
from layerlab.core.errors import GraphError, format_error
from layerlab.core.export import ExportError, export
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.tracer import StepTrace, trace_step
from layerlab.core.trainer import (
    Control,
    Record,
    StateRecord,
    StepRecord,
    Trainer,
    TrainingError,
)
from layerlab.core.weights import WeightsError, load_weights

T = TypeVar("T")
SEND_EVERY_S = 0.05
BOUNDARY_EVERY_S = 0.25
GRID = 64
IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist")


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


class TrainingWorker(QObject):
    records = Signal(object)  # a list of records
    failed = Signal(str)
    stopped = Signal(str)  # the final state: finished, stopped
    done = Signal(str, str)  # a finished job (export, weights) and its report for a person
    traced = Signal(object)  # a StepTrace of the next batch (step-through)

    def __init__(self) -> None:
        super().__init__()
        self.trainer: Trainer | None = None
        self._buffer: list[object] = []
        self._last_send = 0.0
        self._last_boundary = 0.0

    @Slot(object, object)
    def start(self, project: Project, control: Control) -> None:
        """Train `project` (a snapshot); continue the current trainer when it is the same."""
        def run() -> str:
            if self.trainer is not None and self.trainer.epoch >= \
                    self.trainer.settings.epochs:
                self.trainer = None  # that run is complete: Train starts another
            trainer = self._ensure_trainer(project)
            trainer.control = control
            self._send_boundary(force=True)
            return trainer.run()

        state = self._attempt(run)
        if state is None:
            return
        self._send_boundary(force=True)
        self._flush()
        self.records.emit([self.results()])
        self.stopped.emit(state)

    @Slot(object)
    def preview(self, project: Project) -> None:
        t = project.training
        name = t["dataset"].get("name", "")
        try:
            data = load_dataset(name, t["dataset"].get("options", {}))
        except DatasetError as exc:
            self.records.emit([PreviewRecord("message", message=str(exc))])
            return
        if data.sample_shape == (2,):
            _, val = split_indices(len(data), t["dataset"].get("validation_split", 0.1),
                                   t.get("seed", 0))
            record = PreviewRecord("points", data.x.numpy(), data.y.numpy(), val.numpy())
        elif data.name in IMAGE_DATASETS:
            images = data.x[:64]
            side = round(images[0].numel() ** 0.5)
            record = PreviewRecord("images", images.reshape(-1, side, side).numpy(),
                                   data.y[:64].numpy())
        else:
            header = (*tuple(f"x{i}" for i in range(data.x.shape[1])), "target")
            rows = torch.cat([data.x[:50], data.y[:50].reshape(len(data.x[:50]), -1).float()],
                             1)
            record = PreviewRecord("table", rows.numpy(), header=header)
        self.records.emit([record])

    def _ensure_trainer(self, project: Project) -> Trainer:
        if self.trainer is None or self.trainer.project.to_dict() != project.to_dict():
            self.trainer = Trainer(project, settings_from(project.training))
            self.trainer.add_listener(self._collect)
        return self.trainer

    @Slot(object, int)
    def trace(self, project: Project, keep: int) -> None:
        """Train on the next batch, recorded node by node (a real step, as in a run)."""
        trace = self._attempt(lambda: self._ensure_trainer(project).trace_next_batch(keep))
        if trace is None:
            return
        self._flush()
        self.traced.emit(trace)

    @Slot(object, int)
    def trace_sample(self, project: Project, index: int) -> None:
        """One chosen sample through the model, recorded node by node: in evaluation mode
        (a single sample cannot feed BatchNorm's batch statistics) and without an update,
        so that looking at a sample changes nothing about training."""

        def record() -> StepTrace:
            trainer = self._ensure_trainer(project)
            x = trainer.data.x[index:index + 1].to(trainer.device)
            y = trainer.data.y[index:index + 1].to(trainer.device)
            objective = trainer.objective
            was_training = trainer.model.training
            trainer.model.eval()
            try:
                return trace_step(project.graph, trainer.model, x, y, keep=1,
                                  loss_fn=lambda out, t: objective.loss(out.float(),
                                                                        objective.target(t)))
            finally:
                trainer.model.train(was_training)
                trainer.model.zero_grad(set_to_none=True)

        trace = self._attempt(record)
        if trace is not None:
            self.traced.emit(trace)

    @Slot(object, str, str)
    def export(self, project: Project, fmt: str, path: str) -> None:
        """Export the current weights (the last run's, or a fresh initialisation)."""
        try:
            model = self.trainer.model if self.trainer is not None and \
                self.trainer.project.to_dict() == project.to_dict() else build_model(
                    project.graph)
            report = export(project, model, fmt, Path(path))
        except (ExportError, GraphError, OSError) as exc:
            self.done.emit("export", f"Export failed: {exc}")
            return
        self.done.emit("export", f"Wrote {report.path}: {report.detail}")

    @Slot(object, str)
    def load(self, project: Project, path: str) -> None:
        """Fine-tuning: load weights by name and shape into the model the next run trains."""
        try:
            trainer = self._ensure_trainer(project)
            report = load_weights(trainer.model, path)
        except (WeightsError, DatasetError, TrainingError, GraphError) as exc:
            self.done.emit("weights", f"Cannot load weights: {exc}")
            return
        self.done.emit("weights", "\n".join([f"Weights from {path}:", *report.lines()]))

    def _attempt(self, work: Callable[[], T]) -> T | None:
        """Run `work`; a problem becomes a `failed` message and None, never a traceback."""
        try:
            return work()
        except GraphError as exc:
            self._fail("; ".join(format_error(n, m) for n, m in exc.errors))
        except (DatasetError, TrainingError) as exc:
            self._fail(str(exc))
        except RuntimeError as exc:  # e.g. CUDA out of memory
            self._fail(f"the run failed: {str(exc).splitlines()[0]}")
        return None

    def _fail(self, message: str) -> None:
        self._flush()
        self.failed.emit(message)

    def reset(self) -> None:
        self.trainer = None

    def _collect(self, record: Record) -> None:
        self._buffer.append(record)
        now = time.perf_counter()
        if isinstance(record, StepRecord) and now - self._last_boundary >= BOUNDARY_EVERY_S:
            self._send_boundary()
        paused = self.trainer is not None and self.trainer.control.paused
        if paused or isinstance(record, StateRecord) or now - self._last_send >= SEND_EVERY_S:
            self._flush()  # nothing else may come for a while: send it now

    def _flush(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self.records.emit(batch)
        self._last_send = time.perf_counter()

    @torch.no_grad()
    def _send_boundary(self, force: bool = False) -> None:
        trainer = self.trainer
        if trainer is None or tuple(trainer.data.sample_shape) != (2,):
            return
        self._last_boundary = time.perf_counter()
        x = trainer.data.x
        lo, hi = x.min(0).values.tolist(), x.max(0).values.tolist()
        pad = [0.1 * (h - low) for low, h in zip(lo, hi, strict=True)]
        xs = torch.linspace(lo[0] - pad[0], hi[0] + pad[0], GRID)
        ys = torch.linspace(lo[1] - pad[1], hi[1] + pad[1], GRID)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
        model = trainer.model
        model.eval()
        probe = _Probe(model)
        out = probe.run(grid.to(trainer.device)).float().cpu()
        model.train()
        if out.shape[1] >= 2:
            image = torch.softmax(out, 1)[:, 1] if out.shape[1] == 2 else \
                out.argmax(1).float() / (out.shape[1] - 1)
        else:
            image = torch.sigmoid(out[:, 0])
        nodes = {n: v.reshape(GRID, GRID) for n, v in probe.means.items()}
        record = BoundaryRecord(trainer.step, image.reshape(GRID, GRID).numpy(),
                                (xs[0].item(), xs[-1].item(), ys[0].item(), ys[-1].item()),
                                nodes)
        self._buffer.append(record)
        if force:
            self._flush()

    @torch.no_grad()
    def results(self) -> ResultsRecord | None:
        trainer = self.trainer
        if trainer is None or trainer.data.task != "classification" or len(trainer.x_val) == 0:
            return None
        model = trainer.model.eval()
        outputs = torch.cat([model(trainer.x_val[i:i + 1024]).float().cpu()
                             for i in range(0, len(trainer.x_val), 1024)])
        model.train()
        encoding = trainer.objective.encoding
        predicted = (outputs[:, 0] > 0).long() if encoding == "binary" else outputs.argmax(1)
        targets = trainer.y_val.cpu()
        k = len(trainer.data.classes)
        confusion = np.zeros((k, k), dtype=np.int64)
        inside = (predicted < k).numpy()  # a model with more outputs than classes may pick one
        np.add.at(confusion, (targets.numpy()[inside], predicted.numpy()[inside]), 1)
        x = trainer.x_val.cpu()
        samples = None
        if trainer.data.name in IMAGE_DATASETS:
            side = round(x[0].numel() ** 0.5)
            samples = x.reshape(len(x), side, side).float().numpy()
        histograms = {}
        for key, param in trainer.model.named_parameters():
            if param.dim() >= 2:
                counts, edges = np.histogram(param.detach().float().cpu().numpy(), bins=40)
                histograms[key] = (counts, edges)
        return ResultsRecord(confusion, predicted.numpy(), targets.numpy(), samples,
                             trainer.data.classes, histograms, int((~inside).sum()))
