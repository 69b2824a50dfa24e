"""All torch work of the window happens here, in one thread of its own.

Measured on this machine (shared/measurements.md): one QThread that owns every torch
operation trains at ×0.93 of bare speed, and only one thread per process may run
multi-threaded torch. The GUI thread only draws. Records travel to it as immutable messages,
batched and sent at most every 50 ms; decision-boundary images at most every 250 ms.

The worker is a thin adapter: what it computes comes from core (layerlab.core.insight, the
trainer), and every slot ends in a message, whatever goes wrong: `stopped` or `failed` for a
run, `failed` for a preview or a recording, `done` for an export or a weights file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from PySide6.QtCore import QObject, Signal, Slot

from layerlab.core.compiler import build_model
from layerlab.core.datasets import DatasetError, project_folder
from layerlab.core.errors import GraphError, format_error
from layerlab.core.export import ExportError, export
from layerlab.core.health_watch import HealthWatch
from layerlab.core.insight import (
    decision_boundary,
    preview_training,
    trace_sample,
    validation_results,
)
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.standardize import StatisticsRecord, adapt, statistics
from layerlab.core.tracer import StepTrace
from layerlab.core.trainer import (
    Control,
    HealthRecord,
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
KNOWN_ERRORS = (DatasetError, TrainingError, WeightsError, ExportError, OSError)
log = logging.getLogger("layerlab")


def statistics_record(trainer: Trainer) -> StatisticsRecord:
    return StatisticsRecord(statistics(trainer.model), trainer.data.features)


def describe(exc: Exception) -> str:
    """One sentence for a person. A known problem keeps its own message; anything else is
    a bug of ours (or of torch): named by its type, and logged with its traceback."""
    if isinstance(exc, GraphError):
        return "; ".join(format_error(n, m) for n, m in exc.errors)
    if isinstance(exc, KNOWN_ERRORS):
        return str(exc)
    first = next(iter(str(exc).splitlines()), "")
    log.error("the torch thread failed", exc_info=exc)
    if isinstance(exc, RuntimeError):  # most often torch's own, e.g. CUDA out of memory
        return f"the run failed: {first}"
    return f"internal error: {type(exc).__name__}" + (f": {first}" if first else "")


class TrainingWorker(QObject):
    records = Signal(object)  # a list of records
    failed = Signal(str)
    stopped = Signal(str)  # the final state: finished, stopped
    done = Signal(str, str)  # a finished job (export, weights) and its report for a person
    traced = Signal(object)  # a StepTrace of the next batch (step-through)

    def __init__(self) -> None:
        super().__init__()
        self.trainer: Trainer | None = None
        self.health: HealthWatch | None = None  # the trainer's verdicts from health records
        self._buffer: list[object] = []
        self._last_send = 0.0
        self._last_boundary = 0.0
        self.newest_preview = 0  # the ticket of the last preview asked for (GUI thread)

    @Slot()
    def warm_up(self) -> None:
        """Load what torch loads when it builds its first optimizer (torch._dynamo: 1.4 s and
        more here) as soon as the thread starts, not when the first run does: a run queued
        behind this has not begun, so Stop ends it at once."""
        import torch._dynamo  # noqa: F401

    @Slot(object, object)
    def start(self, project: Project, control: Control) -> None:
        """Train `project` (a snapshot); continue the current trainer when it is the same.
        Ends in `stopped` (finished or stopped) or `failed`, so the window always ends idle."""
        if control.stopping:  # stopped while this request waited behind other work
            self.stopped.emit("stopped")
            return

        def run() -> str:
            if self.trainer is not None and self.trainer.epoch >= \
                    self.trainer.settings.epochs:
                self.trainer = None  # that run is complete: Train starts another
            trainer = self._ensure_trainer(project)
            trainer.control = control
            self._send_boundary(force=True)
            state = trainer.run()
            self._send_boundary(force=True)
            results = validation_results(trainer.model, trainer.objective, trainer.data,
                                         trainer.x_val, trainer.y_val)
            self._flush()
            self.records.emit([statistics_record(trainer)] if results is None else
                              [statistics_record(trainer), results])
            return state

        state = self._attempt(run)
        if state is not None:
            self.stopped.emit(state)

    @Slot(object, int)
    def preview(self, project: Project, ticket: int) -> None:
        """Preview the dataset, unless a newer request waits behind this one: each edit of
        the settings asks for a preview, and loading a dataset can take seconds."""
        if ticket != self.newest_preview:
            return
        record = self._attempt(lambda: preview_training(project.training,
                                                         project_folder(project.path)))
        if record is not None:
            self.records.emit([record])

    @Slot(object)
    def adapt(self, project: Project) -> None:
        """Adapt to data: every Standardize node measures the training rows anew."""
        def work() -> StatisticsRecord:
            trainer = self._ensure_trainer(project)
            adapt(trainer.model, project.graph, trainer.x_train, only_fresh=False)
            return statistics_record(trainer)

        record = self._attempt(work)
        if record is not None:
            self.records.emit([record])

    def _ensure_trainer(self, project: Project) -> Trainer:
        if self.trainer is None or self.trainer.project.to_dict() != project.to_dict():
            self.trainer = None  # a trainer that fails to build leaves none behind
            self.trainer = Trainer(project, settings_from(project.training))
            self.health = HealthWatch(self.trainer)
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
        """One chosen sample through the model, recorded node by node, without an update."""
        def record() -> StepTrace:
            trainer = self._ensure_trainer(project)
            return trace_sample(project.graph, trainer.model, trainer.objective,
                                trainer.data, index, trainer.device)

        trace = self._attempt(record)
        if trace is not None:
            self.traced.emit(trace)

    @Slot(object, str, str)
    def export(self, project: Project, fmt: str, path: str) -> None:
        """Export the current weights (the last run's, or a fresh initialisation)."""
        def work() -> str:
            trainer = self.trainer
            if trainer is not None and trainer.project.to_dict() == project.to_dict():
                model = trainer.model
            else:
                model = build_model(project.graph)
            report = export(project, model, fmt, Path(path))
            return f"Wrote {report.path}: {report.detail}"

        self._job("export", "Export failed", work)

    @Slot(object, str)
    def load(self, project: Project, path: str) -> None:
        """Fine-tuning: load weights by name and shape into the model the next run trains."""
        def work() -> str:
            trainer = self._ensure_trainer(project)
            report = load_weights(trainer.model, path)
            self.health = HealthWatch(trainer)  # judged from the weights the run starts with
            return "\n".join([f"Weights from {path}:", *report.lines()])

        self._job("weights", "Cannot load weights", work)

    def _job(self, kind: str, failure: str, work: Callable[[], str]) -> None:
        """Run `work`; its report, or what went wrong, ends as one `done` message."""
        try:
            report = work()
        except Exception as exc:  # the thread boundary: every problem becomes a report
            report = f"{failure}: {describe(exc)}"
        self.done.emit(kind, report)

    def _attempt(self, work: Callable[[], T]) -> T | None:
        """Run `work`; any problem becomes a `failed` message and None, never a traceback
        (the thread boundary: nothing may escape a slot)."""
        try:
            return work()
        except Exception as exc:  # the thread boundary: nothing escapes a slot
            self._fail(describe(exc))
        return None

    def _fail(self, message: str) -> None:
        self._flush()
        self.failed.emit(message)

    def reset(self) -> None:
        self.trainer = None

    def _collect(self, record: Record) -> None:
        if isinstance(record, HealthRecord):  # sent on as the verdicts that stand, if any
            verdicts = self.health.judge(record) if self.health is not None else None
            if verdicts is None:
                return
            self._buffer.append(verdicts)
        else:
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

    def _send_boundary(self, force: bool = False) -> None:
        trainer = self.trainer
        if trainer is None:
            return
        self._last_boundary = time.perf_counter()
        record = decision_boundary(trainer.model, trainer.data.x, trainer.device,
                                   objective=trainer.objective, step=trainer.step)
        if record is None:
            return
        self._buffer.append(record)
        if force:
            self._flush()
