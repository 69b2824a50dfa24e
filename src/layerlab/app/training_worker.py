"""All torch work of the window happens here, in one thread of its own.

Measured on this machine (shared/measurements.md): one QThread that owns every torch
operation trains at ×0.93 of bare speed, and only one thread per process may run
multi-threaded torch. The GUI thread only draws. Records travel to it as immutable messages,
batched and sent at most every 200 ms, each batch followed by the window's turn: the torch
thread waits between two steps while the window shows the batch (SHOW_WAIT_S), so the two
threads do not take the GIL from each other mid-drawing; decision-boundary images at most
every 250 ms, and during a run only while someone looks at them (`watch_boundary`): a probe
costs the torch thread a few steps' time.

The worker is a thin adapter: what it computes comes from core (layerlab.core.insight, the
trainer), and every slot ends in a message, whatever goes wrong: `stopped` or `failed` for a
run, `failed` for a preview or a recording, `done` for an export or a weights file.

A run asked for with a RunRequest writes its folder with core's RunWriter, here, at the
trainer's epoch ends and state changes: the GUI thread never waits for a disk. A run that
continues the same trainer (Train after Stop) continues its folder.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PySide6.QtCore import QObject, Signal, Slot

from layerlab.core.compiler import build_model
from layerlab.core.datasets import DatasetError, absolute_data, project_folder
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
from layerlab.core.runs import RUN_JSON, RunError, RunWriter, new_run_folder
from layerlab.core.settings import settings_from
from layerlab.core.standardize import StatisticsRecord, adapt, statistics
from layerlab.core.text_model import same_model
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
SEND_EVERY_S = 0.2  # the curves redraw at most 5 times a second: the progress bar keeps pace
BOUNDARY_EVERY_S = 0.25
# The window draws while the torch thread waits, between two steps: as a run begins (its
# curves, its row in the runs table) and after each batch of records (the progress bar, a
# redraw of the curves when one is due). Drawn while torch trains, the same work made the
# two threads hand the interpreter lock to and fro about a thousand times a run (PySide
# lets it go around Qt calls; each hand-over wakes the other thread), which cost ~10% of
# the training speed. A window that does not answer only delays training by this much.
SHOW_WAIT_S = 0.25
KNOWN_ERRORS = (DatasetError, TrainingError, WeightsError, ExportError, RunError, OSError)
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


@dataclass(frozen=True)
class RunRequest:
    """Where and as what the next run is written: the folder that keeps the project's runs
    (the session's, for a project never saved), its label and the settings varied for it;
    the weights a new run starts from (by name and shape: fine-tuning), if any."""

    parent: Path
    label: str
    varied: dict[str, str] = field(default_factory=dict)
    init_weights: str | None = None


class TrainingWorker(QObject):
    records = Signal(object)  # a list of records
    failed = Signal(str)
    stopped = Signal(str)  # the final state: finished, stopped
    done = Signal(str, str)  # a finished job (export, weights) and its report for a person
    traced = Signal(object)  # a StepTrace of the next batch (step-through)
    began = Signal(str, str)  # a run's folder and label, as it begins (or continues)
    turn = Signal()  # the window's turn to show what was sent; it sets `shown` when done
    moved = Signal(str)  # the runs went with their project; what went wrong, or ""

    def __init__(self) -> None:
        super().__init__()
        self.trainer: Trainer | None = None
        self.health: HealthWatch | None = None  # the trainer's verdicts from health records
        self.writer: RunWriter | None = None  # the trainer's run folder, once it ran
        self._request: RunRequest | None = None  # how the next start writes its run
        self._buffer: list[object] = []
        self._last_send = 0.0
        self._last_boundary = 0.0
        # set by the GUI thread: the boundary or the node thumbnails are on screen
        self.watch_boundary = True
        self.newest_preview = 0  # the ticket of the last preview asked for (GUI thread)
        # a window's: set by the GUI thread once it has shown what was sent (see SHOW_WAIT_S)
        self.shown: threading.Event | None = None

    @Slot()
    def warm_up(self) -> None:
        """Load what torch loads when it builds its first optimizer (torch._dynamo: 1.4 s and
        more here) as soon as the thread starts, not when the first run does: a run queued
        behind this has not begun, so Stop ends it at once."""
        import torch._dynamo  # noqa: F401

    @Slot(object)
    def next_run(self, request: RunRequest | None) -> None:
        """The next `start` writes its run as `request` says (None: no folder)."""
        self._request = request

    @Slot(object, object)
    def start(self, project: Project, control: Control) -> None:
        """Train `project` (a snapshot); continue the current trainer when it is the same.
        Ends in `stopped` (finished or stopped) or `failed`, so the window always ends idle."""
        request, self._request = self._request, None
        if control.stopping:  # stopped while this request waited behind other work
            self.stopped.emit("stopped")
            return

        def run() -> str:
            if self.trainer is not None and self.trainer.epoch >= \
                    self.trainer.settings.epochs:
                self.reset()  # that run is complete: Train starts another
            trainer = self._ensure_trainer(project)
            trainer.control = control
            if request is not None and request.init_weights and trainer.step == 0:
                load_weights(trainer.model, request.init_weights)
                self.health = HealthWatch(trainer)  # judged from the weights it starts with
            if request is not None:
                self._write_run(trainer, project, request)
            self._send_boundary(force=True)
            state = trainer.run()
            self._send_boundary(force=True)
            results = validation_results(trainer.model, trainer.objective, trainer.data,
                                         trainer.x_val, trainer.y_val)
            self._flush()
            self.records.emit([statistics_record(trainer)] if results is None else
                              [statistics_record(trainer), results])
            return state

        try:
            state = run()
        except Exception as exc:  # the thread boundary: nothing escapes a slot
            message = describe(exc)
            if self.writer is not None and self.writer.status in ("running", "paused") \
                    and self.trainer is not None:  # torch's own error: no "failed" record
                with contextlib.suppress(OSError):  # the disk's problem is not the run's
                    self.writer.fail(self.trainer, message)
            self._fail(message)
            return
        self.stopped.emit(state)

    def _write_run(self, trainer: Trainer, project: Project, request: RunRequest) -> None:
        """The trainer's run folder: the one it has (a continued run) or a new one, whose
        snapshot finds its data from anywhere (as `layerlab train --out` writes it)."""
        if self.writer is None:
            snapshot = Project.from_dict(project.to_dict())
            snapshot.training = absolute_data(project.training, project_folder(project.path))
            self.writer = RunWriter(new_run_folder(request.parent, request.label), snapshot,
                                    label=request.label, varied=request.varied)
            self.writer.attach(trainer)
            self.writer.set_status("running")  # listed from its first moment
        folder, label = str(self.writer.folder), self.writer.label
        self._wait_shown(lambda: self.began.emit(folder, label))

    def _wait_shown(self, send: Callable[[], None]) -> None:
        """send(), then wait until the window has shown it (see SHOW_WAIT_S)."""
        shown = self.shown
        if shown is None:
            send()
            return
        shown.clear()
        send()
        shown.wait(SHOW_WAIT_S)

    @Slot(object, object, bool)
    def move_runs(self, source: Path, target: Path, keep: bool) -> None:
        """The runs go with their project when it is saved elsewhere: moved out of the
        session's folder, copied (`keep`) from the project's last place, which keeps its
        own."""
        try:
            for child in sorted(source.iterdir()) if source.is_dir() else []:
                if (child / RUN_JSON).is_file():
                    self._move_run(child, target, keep)
            report = ""
        except OSError as exc:
            report = f"Cannot {'copy' if keep else 'move'} the runs to {target}: " \
                     f"{exc.strerror or exc}"
        self.moved.emit(report)

    def _move_run(self, folder: Path, target: Path, keep: bool) -> None:
        target.mkdir(parents=True, exist_ok=True)
        dest, n = target / folder.name, 2
        while dest.exists():
            dest, n = target / f"{folder.name}-{n}", n + 1
        if keep:
            shutil.copytree(folder, dest)
        else:
            shutil.move(folder, dest)
        if self.writer is not None and self.writer.folder == folder:
            self.writer.folder = dest  # a stopped run continues where its project is now

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
        """The trainer for `project`: the last one (its trained weights) while only where
        nodes are drawn, or the project's name, changed since it was built; else a new one."""
        old = self.trainer
        if old is not None and old.project.training == project.training \
                and same_model(old.project.graph, project.graph):
            old.project = project
            return old
        self.reset()  # a trainer that fails to build leaves none behind
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
        assert self.health is not None  # made with the trainer
        trace.judged = self.health.monitor.judged  # as the run began, as its health records
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

    @Slot()
    def reset(self) -> None:
        """Forget the trainer and its run: the next run starts fresh, in a new folder."""
        self.trainer = None
        self.writer = None

    def _collect(self, record: Record) -> None:
        if isinstance(record, HealthRecord):  # sent on as the verdicts that stand, if any
            verdicts = self.health.judge(record) if self.health is not None else None
            if verdicts is None:
                return
            self._buffer.append(verdicts)
        else:
            self._buffer.append(record)
        now = time.perf_counter()
        if isinstance(record, StepRecord) and self.watch_boundary and \
                now - self._last_boundary >= BOUNDARY_EVERY_S:
            self._send_boundary()
        paused = self.trainer is not None and self.trainer.control.paused
        if paused or isinstance(record, StateRecord):
            self._flush()  # nothing else may come for a while: send it now
        elif isinstance(record, StepRecord) and now - self._last_send >= SEND_EVERY_S:
            self._flush()  # between two steps (an epoch's or health's records go with the
            self._wait_shown(self.turn.emit)  # next step's): the window's turn

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
