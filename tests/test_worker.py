"""The torch thread's boundary: whatever goes wrong in a slot of the real worker (running in
its own QThread, as in the window), the window hears of it in one message: `failed` (or
`done` for an export or a weights file), a run always ends `stopped` or `failed`, a known
problem keeps its own sentence and anything else says "internal error" and is logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PySide6.QtCore import QObject, QThread, Signal, Slot

from layerlab.app import training_worker
from layerlab.app.training_worker import TrainingWorker
from layerlab.core.insight import PreviewRecord, ResultsRecord
from layerlab.core.project import Project
from layerlab.core.trainer import Control, Trainer

from helpers import chain_graph

TIMEOUT = 20_000


class Requests(QObject):
    """The window's side: requests cross to the torch thread as queued signals."""

    start = Signal(object, object)
    preview = Signal(object, int)
    trace = Signal(object, int)
    trace_sample = Signal(object, int)
    export = Signal(object, str, str)
    load = Signal(object, str)


class Ears(QObject):
    """The window's other side: each message of the worker arrives here through the GUI
    thread's event queue (a queued connection, as in the window), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[tuple[str, tuple]] = []

    @Slot(str)
    def failed(self, message: str) -> None:
        self.heard.append(("failed", (message,)))

    @Slot(str)
    def stopped(self, state: str) -> None:
        self.heard.append(("stopped", (state,)))

    @Slot(str, str)
    def done(self, kind: str, report: str) -> None:
        self.heard.append(("done", (kind, report)))

    @Slot(object)
    def traced(self, trace: object) -> None:
        self.heard.append(("traced", (trace,)))

    @Slot(object)
    def records(self, batch: object) -> None:
        self.heard.append(("records", (batch,)))


@dataclass
class Rig:
    worker: TrainingWorker
    ask: Requests
    ears: Ears
    qtbot: object

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.ears.heard]

    def wait_for(self, kind: str) -> tuple:
        """The arguments of the first message of this kind."""
        self.qtbot.waitUntil(lambda: kind in self.kinds(), timeout=TIMEOUT)
        return next(args for k, args in self.ears.heard if k == kind)


@pytest.fixture
def rig(qtbot) -> Iterator[Rig]:
    thread = QThread()
    worker = TrainingWorker()
    worker.moveToThread(thread)
    ask, ears = Requests(), Ears()
    for name in ("start", "preview", "trace", "trace_sample", "export", "load"):
        getattr(ask, name).connect(getattr(worker, name))
    for name in ("failed", "stopped", "done", "traced", "records"):
        getattr(worker, name).connect(getattr(ears, name))
    thread.start()
    yield Rig(worker, ask, ears, qtbot)
    thread.quit()
    assert thread.wait(TIMEOUT)


def project(**training) -> Project:
    g = chain_graph([2], ("Linear", {"out_features": 8}), ("Tanh", {}),
                    ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    p = Project(graph=g)
    p.training.update({"dataset": {"name": "moons", "options": {}, "validation_split": 0.2},
                       "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 64,
                       "epochs": 1, "device": "cpu", **training})
    return p


def raise_key_error(*args, **kwargs):
    raise KeyError("boom")


INTERNAL = "internal error: KeyError: 'boom'"


def assert_logged_with_traceback(caplog) -> None:
    records = [r for r in caplog.records if r.name == "layerlab" and r.exc_info]
    assert [r.exc_info[0] for r in records] == [KeyError]
    assert records[0].levelno == logging.ERROR


def test_a_run_ends_stopped_with_its_results(rig):
    rig.ask.start.emit(project(), Control())
    assert rig.wait_for("stopped") == ("finished",)
    records = [r for kind, (batch, *_) in rig.ears.heard if kind == "records" for r in batch]
    assert any(isinstance(r, ResultsRecord) for r in records)
    assert "failed" not in rig.kinds()


def test_a_run_stopped_while_it_waited_ends_at_once_without_building(rig, monkeypatch):
    """Stop pressed while the request queued behind other work (a preview loading a
    dataset): the run ends `stopped` without building a trainer or loading data."""
    monkeypatch.setattr(training_worker, "Trainer", raise_key_error)
    control = Control()
    control.stop()
    rig.ask.start.emit(project(), control)
    assert rig.wait_for("stopped") == ("stopped",)
    assert "failed" not in rig.kinds()


def test_an_unexpected_error_before_training_fails_the_run_and_is_logged(rig, monkeypatch,
                                                                           caplog):
    monkeypatch.setattr(training_worker, "Trainer", raise_key_error)
    rig.ask.start.emit(project(), Control())
    assert rig.wait_for("failed") == (INTERNAL,)
    assert "stopped" not in rig.kinds()
    assert rig.worker.trainer is None
    assert_logged_with_traceback(caplog)


def test_a_known_problem_keeps_its_own_sentence_and_is_not_logged(rig, caplog):
    digits = {"name": "digits", "options": {}, "validation_split": 0.2}
    rig.ask.start.emit(project(dataset=digits), Control())
    (message,) = rig.wait_for("failed")
    assert message.startswith("dataset digits gives samples of shape [64]")
    assert message.endswith("but Input node x expects [2]")
    assert not [r for r in caplog.records if r.name == "layerlab"]


def test_an_error_after_training_still_ends_the_run(rig, monkeypatch, caplog):
    monkeypatch.setattr(training_worker, "validation_results", raise_key_error)
    rig.ask.start.emit(project(), Control())
    assert rig.wait_for("failed") == (INTERNAL,)
    assert "stopped" not in rig.kinds()
    assert_logged_with_traceback(caplog)


def ask_preview(rig: Rig, p: Project) -> None:
    """As the controller asks: each request a newer ticket."""
    rig.worker.newest_preview += 1
    rig.ask.preview.emit(p, rig.worker.newest_preview)


def test_a_failed_preview_says_so(rig, monkeypatch, caplog):
    ask_preview(rig, project())
    (batch,) = rig.wait_for("records")
    assert [r.kind for r in batch] == ["points"]
    monkeypatch.setattr(training_worker, "preview_training", raise_key_error)
    ask_preview(rig, project())
    assert rig.wait_for("failed") == (INTERNAL,)
    assert_logged_with_traceback(caplog)


def test_previews_queued_behind_a_slow_one_are_served_once_with_the_newest(rig,
                                                                          monkeypatch):
    """Each edit of the settings asks for a preview; those that pile up behind a slow one
    (a dataset loading) are skipped but the newest, so Stop never waits behind them."""
    seen = []

    def slow(training, base=None):
        seen.append(training["seed"])
        time.sleep(0.3)
        return PreviewRecord("message", message=str(training["seed"]))

    monkeypatch.setattr(training_worker, "preview_training", slow)
    ask_preview(rig, project(seed=0))
    rig.qtbot.waitUntil(lambda: seen == [0], timeout=TIMEOUT)  # the slow one is running
    for seed in range(1, 6):
        ask_preview(rig, project(seed=seed))
    rig.qtbot.waitUntil(lambda: 5 in seen, timeout=TIMEOUT)
    rig.qtbot.wait(400)
    assert seen == [0, 5]
    messages = [r.message for kind, (batch, *_) in rig.ears.heard if kind == "records"
                for r in batch]
    assert messages == ["0", "5"]


@pytest.mark.parametrize("slot", ["trace", "trace_sample"])
def test_a_failed_recording_says_so(rig, monkeypatch, caplog, slot):
    monkeypatch.setattr(Trainer, "trace_next_batch", raise_key_error)
    monkeypatch.setattr(training_worker, "trace_sample", raise_key_error)
    getattr(rig.ask, slot).emit(project(), 3)
    assert rig.wait_for("failed") == (INTERNAL,)
    assert "traced" not in rig.kinds()
    assert_logged_with_traceback(caplog)


def test_a_chosen_sample_is_traced_and_one_beyond_the_dataset_is_named(rig):
    rig.ask.trace_sample.emit(project(), 3)
    (trace,) = rig.wait_for("traced")
    assert trace.kept["samples"] == 1
    rig.ask.trace_sample.emit(project(), 10_000)
    (message,) = rig.wait_for("failed")
    assert message.startswith("sample 10000 is not in dataset moons")


@pytest.mark.parametrize(("slot", "patched", "kind", "prefix"), [
    ("export", "export", "export", "Export failed"),
    ("load", "load_weights", "weights", "Cannot load weights"),
])
def test_a_failed_job_is_reported_as_done(rig, monkeypatch, caplog, tmp_path, slot, patched,
                                          kind, prefix):
    monkeypatch.setattr(training_worker, patched, raise_key_error)
    args = (project(), "python", str(tmp_path / "m.py")) if slot == "export" else \
        (project(), str(tmp_path / "w.safetensors"))
    getattr(rig.ask, slot).emit(*args)
    assert rig.wait_for("done") == (kind, f"{prefix}: {INTERNAL}")
    assert_logged_with_traceback(caplog)


def test_a_missing_weights_file_keeps_its_own_sentence(rig, tmp_path, caplog):
    missing = tmp_path / "w.safetensors"
    rig.ask.load.emit(project(), str(missing))
    kind, report = rig.wait_for("done")
    assert kind == "weights" and report.startswith("Cannot load weights: ")
    assert str(missing) in report and "internal error" not in report
    assert not [r for r in caplog.records if r.name == "layerlab"]
