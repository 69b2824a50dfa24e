"""The torch thread and the run's state, as the window sees them.

A run always ends idle. The graph is locked only once everything that can fail in the GUI
thread (the snapshot of a project whose settings have problems) has passed; whatever the
worker slot does, a marker queued behind it in the torch thread comes back once the slot
has returned, so a slot that ended without a word still ends the run (as "failed").

Every run is a folder (core/runs.py), written by the worker: beside the project
(NAME.runs/) once it has a file, else in this session's folder until its first save. Its
label says what differs from the project's saved settings (`base_training`); its colour is
its place among the project's runs.
"""

from __future__ import annotations

import copy
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QThread, Signal, Slot

from layerlab.app.document import Document
from layerlab.app.plots import run_colour
from layerlab.app.training_worker import RunRequest, TrainingWorker
from layerlab.core.errors import GraphError
from layerlab.core.project import Project
from layerlab.core.runs import RunInfo, differences, list_runs, run_label, runs_folder
from layerlab.core.trainer import Control
from layerlab.core.validation import training_problems

SILENT_END = "the run ended without a result (an internal error; see the log)"
# The torch thread gives up the GIL at every torch operation and must get it back for the
# next one; while the GUI thread runs Python (painting plots), Python's default 5 ms switch
# interval made it wait that long, many times a step: a spiral epoch took 1.7–3.7× its
# headless time in the window. 0.5 ms brought it to about the headless time.
GIL_SWITCH_S = 0.0005


class _Echo(QObject):
    """Lives in the torch thread and answers each marker once every request queued before
    it has been handled: `begin` just before a run's slot starts, `end` once it returned."""

    answered = Signal(str, int)

    @Slot(str, int)
    def answer(self, kind: str, run: int) -> None:
        self.answered.emit(kind, run)


class TrainingController(QObject):
    """Owns the torch thread and its worker; turns button presses into requests."""

    warmUpRequested = Signal()
    startRequested = Signal(object, object)
    previewRequested = Signal(object, int)
    exportRequested = Signal(object, str, str)
    traceRequested = Signal(object, int)
    sampleTraceRequested = Signal(object, int)
    loadRequested = Signal(object, str)
    adaptRequested = Signal(object)
    echoRequested = Signal(str, int)
    nextRunRequested = Signal(object)
    moveRequested = Signal(object, object, bool)
    forgetRequested = Signal()
    stateChanged = Signal(str)  # idle, running, paused
    started = Signal()  # a run was sent to the torch thread
    ended = Signal(str)  # how the run ended: finished, stopped, failed
    refused = Signal(str)  # a request that was not sent, and why
    run_started = Signal(str, str, str)  # its key (the run folder), label, colour
    run_ended = Signal(str, str)  # its key ("" when it never began), how it ended
    drawTurn = Signal()  # the torch thread waits between two steps: redraw what is due now

    def __init__(self, doc: Document) -> None:
        super().__init__()
        self.doc = doc
        sys.setswitchinterval(GIL_SWITCH_S)
        self.thread = QThread()
        self.thread.setObjectName("torchThread")
        self.worker = TrainingWorker()
        self.echo = _Echo()
        for obj in (self.worker, self.echo):
            obj.moveToThread(self.thread)
        self.warmUpRequested.connect(self.worker.warm_up)
        self.startRequested.connect(self.worker.start)
        self.previewRequested.connect(self.worker.preview)
        self.exportRequested.connect(self.worker.export)
        self.traceRequested.connect(self.worker.trace)
        self.sampleTraceRequested.connect(self.worker.trace_sample)
        self.loadRequested.connect(self.worker.load)
        self.adaptRequested.connect(self.worker.adapt)
        self.echoRequested.connect(self.echo.answer)
        self.nextRunRequested.connect(self.worker.next_run)
        self.moveRequested.connect(self.worker.move_runs)
        self.forgetRequested.connect(self.worker.reset)
        self.echo.answered.connect(self._answered)
        self.worker.began.connect(self._began)
        self.worker.turn.connect(self._turn)
        self._shown = self.worker.shown = threading.Event()
        self.worker.moved.connect(self._moved)
        self.worker.stopped.connect(self._stopped)
        self.worker.failed.connect(self._failed)
        self.thread.start()
        self.warmUpRequested.emit()
        self.control: Control | None = None
        self.state = "idle"
        self._run = 0  # the number of the last run sent
        self._live = 0  # the run whose slot is running in the torch thread (0: none)
        self.run_key = ""  # the folder of the run that began last ("" for none)
        self.epochs = 1  # how many epochs the run sent last trains
        self._began_key = ""  # the folder of the run sent last, once it began
        self.colours: dict[str, str] = {}  # each run's colour, by key, in the project
        self.base_training: dict[str, Any] = copy.deepcopy(doc.project.training)
        self._session: Path | None = None  # runs of projects never saved, until closed
        self._untitled = 0  # which never-saved project the session's runs are of
        self._moves: list[tuple[Path, Path, bool]] = []  # asked of the torch thread, not done
        doc.reset.connect(self._project_replaced)

    # -- where runs are kept ------------------------------------------------------------
    def runs_project(self) -> Path:
        """The project file whose runs folder keeps this project's runs: its own, or a
        name in this session's folder while it has never been saved."""
        return self.doc.project.path or self._session_project()

    def _session_project(self) -> Path:
        if self._session is None:
            self._session = Path(tempfile.mkdtemp(prefix="layerlab-runs-"))
        return self._session / f"untitled-{self._untitled}.layerlab.json"

    def runs(self) -> list[RunInfo]:
        """The project's runs, oldest first, as their folders hold them."""
        if self.doc.project.path is None and self._session is None:
            return []
        return list_runs(self.runs_project())

    def unsaved_runs(self) -> bool:
        """Whether runs of a project never saved would be lost with it."""
        if self.doc.project.path is not None or self._session is None:
            return False
        folder = runs_folder(self.runs_project())
        return folder.is_dir() and any(folder.iterdir())

    def move_runs(self, source: Path | None) -> None:
        """The project was just saved to its path from `source` (its last file, or None):
        its runs go with it (moved out of the session's folder, copied from the old
        place), in the torch thread, after any run; `worker.moved` says when."""
        old = runs_folder(source if source is not None else self._session_project())
        move = (old, runs_folder(self.doc.project.path), source is not None)
        self._moves.append(move)
        self.moveRequested.emit(*move)

    def _moved(self, report: str) -> None:
        if self._moves:
            self._moves.pop(0)
        self.colours.clear()  # the runs have new keys: colours by their order, as on opening

    def colour(self, key: str) -> str:
        """The run's colour: a new key gets the next of the palette."""
        if key not in self.colours:
            self.colours[key] = run_colour(len(self.colours))
        return self.colours[key]

    def _project_replaced(self) -> None:
        """Another project: its saved settings are the base of labels; the last project's
        trainer and run are not continued."""
        self.base_training = copy.deepcopy(self.doc.project.training)
        self.colours.clear()
        self.run_key = ""
        self._untitled += 1
        self.forgetRequested.emit()

    def snapshot(self) -> Project:
        """A copy of the project for the torch thread; GraphError when it cannot be used."""
        project = Project.from_dict(copy.deepcopy(self.doc.project.to_dict()))
        project.path = self.doc.project.path  # relative data paths start from its folder
        return project

    def _usable(self) -> Project | None:
        """The snapshot, or None after saying (`refused`) why the project cannot be used."""
        try:
            return self.snapshot()
        except GraphError as exc:  # the settings' problems (each names its field)
            self.refused.emit("; ".join(message for _, message in exc.errors))
            return None

    def train(self, paused: bool = False, project: Project | None = None,
              label: str | None = None, varied: dict[str, str] | None = None,
              init_weights: str | None = None) -> bool:
        """Train `project` (default: the document's) as a run labelled `label` (default:
        what differs from the saved settings), a new one from `init_weights` if given;
        True when it was sent to the torch thread.
        A Train after Stop of the same project continues that run and its folder."""
        if self.state != "idle":
            return False
        if project is None:
            project = self._usable()
            if project is None:
                return False
        self.control = Control()
        if paused:
            self.control.pause()
        self._run += 1
        self._began_key = ""
        self.epochs = int(project.training.get("epochs", 1))
        if varied is None:
            varied = differences(project.training, self.base_training)
        self.nextRunRequested.emit(RunRequest(
            runs_folder(self.runs_project()),
            label or run_label(project.training, self.base_training), varied, init_weights))
        self.echoRequested.emit("begin", self._run)
        self.startRequested.emit(project, self.control)
        self.echoRequested.emit("end", self._run)
        self.doc.set_locked(True)
        self._set_state("paused" if paused else "running")
        self.started.emit()
        return True

    def pause(self) -> None:
        if self.control is not None and self.state == "running":
            self.control.pause()
            self._set_state("paused")

    def resume(self) -> None:
        if self.control is not None and self.state == "paused":
            self.control.resume()
            self._set_state("running")

    def step(self) -> None:
        if self.state == "idle":
            self.train(paused=True)
        if self.control is not None and self.state == "paused":
            self.control.step()

    def stop(self) -> None:
        """Stop after this batch; a run whose slot has not begun (it waits behind other
        torch work, such as a dataset loading) ends at once: its slot will find it stopped."""
        if self.control is not None:
            self.control.stop()
            if self.state != "idle" and self._live != self._run:
                self._ended("stopped")

    def reset(self) -> None:
        if self.state == "idle":
            self.worker.reset()

    def preview(self) -> None:
        """The dataset preview; skipped while the dataset's own settings have problems
        (the form marks them)."""
        t = self.doc.project.training
        if not any(where.startswith("training.dataset.") for where, _ in
                   training_problems(t)):
            project = Project(copy.deepcopy(self.doc.graph), training=copy.deepcopy(t))
            self.worker.newest_preview += 1  # older requests still queued are skipped
            self.previewRequested.emit(project, self.worker.newest_preview)

    def export(self, fmt: str, path: str) -> bool:
        """In the torch thread: ONNX export and its onnxruntime check take seconds."""
        project = self._usable()
        if project is not None:
            self.exportRequested.emit(project, fmt, path)
        return project is not None

    def trace(self, keep: int) -> bool:
        """Record the next training step (only between runs)."""
        project = self._usable() if self.state == "idle" else None
        if project is not None:
            self.traceRequested.emit(project, keep)
        return project is not None

    def trace_sample(self, index: int) -> bool:
        """Record one chosen sample of the dataset, without training on it."""
        project = self._usable() if self.state == "idle" else None
        if project is not None:
            self.sampleTraceRequested.emit(project, index)
        return project is not None

    def load_weights(self, path: str) -> bool:
        project = self._usable()
        if project is not None:
            self.loadRequested.emit(project, path)
        return project is not None

    def adapt(self) -> bool:
        """Adapt to data: the Standardize nodes measure the training rows again (between
        runs only)."""
        project = self._usable() if self.state == "idle" else None
        if project is not None:
            self.adaptRequested.emit(project)
        return project is not None

    def _answered(self, kind: str, run: int) -> None:
        if kind == "begin":
            self._live = run
            return
        self._live = 0
        if run == self._run and self.state != "idle":
            self.refused.emit(SILENT_END)
            self._ended("failed")

    def _stopped(self, outcome: str) -> None:
        """The run's slot ended (finished or stopped); a run ended before it began is not
        ended twice."""
        if self.state != "idle" and self._live == self._run:
            self._ended(outcome)

    def _failed(self, message: str) -> None:
        """A failure ends the run only when it is the run's, not a preview's or a trace's
        (the window unlocks after a failed recording itself)."""
        if self.state != "idle" and self._live == self._run:
            self._ended("failed")

    def _began(self, key: str, label: str) -> None:
        """The run's folder exists: the window shows the run (its curves, its row, its
        colour) and paints that before the torch thread takes its first step, which waits
        for this (TrainingWorker.shown)."""
        try:
            if self.state != "idle":
                self.run_key = self._began_key = key
                self.run_started.emit(key, label, self.colour(key))
        finally:
            self._show_now()

    def _turn(self) -> None:
        """The torch thread waits between two steps for the window to show its records:
        the curves redraw if their pace allows, and the widgets' pending repaints are
        painted now (pyqtgraph posts its own scene updates, which follow in the event
        loop)."""
        try:
            self.drawTurn.emit()
        finally:
            self._show_now()

    def _show_now(self) -> None:
        """Paint what changed (rather than when the event loop gets to it, while torch
        trains again), then let the torch thread go on."""
        try:
            QCoreApplication.sendPostedEvents(None, QEvent.Type.UpdateRequest)
        finally:
            self._shown.set()

    def _ended(self, outcome: str) -> None:
        key = self._began_key
        self.doc.set_locked(False)
        self._set_state("idle")
        self.ended.emit(outcome)
        self.run_ended.emit(key, outcome)

    def _set_state(self, state: str) -> None:
        self.state = state
        self.stateChanged.emit(state)

    def shutdown(self) -> None:
        """Stop any run and end the thread; the window does this when it closes."""
        self.stop()
        self.thread.quit()
        self.thread.wait()
        for move in self._moves:  # saved as the window closed: the thread had no time
            self.worker.move_runs(*move)
        if self._session is not None:  # unsaved runs: the window asked before closing
            shutil.rmtree(self._session, ignore_errors=True)
