"""The window draws while the torch thread waits between two steps (its turn), not while
torch trains: a run's first step waits until the window has shown that the run began, and
after each batch of records the torch thread waits until the window has shown them. A
window that does not answer delays training by at most SHOW_WAIT_S a turn, never stops it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import QSpinBox, QWidget

from layerlab.app import training_worker
from layerlab.app.application import make_application
from layerlab.app.plots import REDRAW_MS, RunPlots
from layerlab.app.training_worker import RunRequest, TrainingWorker
from layerlab.core.project import Project
from layerlab.core.records import EpochRecord, StepRecord
from layerlab.core.trainer import Control

from helpers import chain_graph

TIMEOUT = 20_000
DRAWING_S = 0.05  # how long the window takes to draw, in these tests


class Window(QObject):
    """The window's side of the turns, in the GUI thread: each turn (or a run's beginning)
    notes the torch thread's step as the window starts to draw and as it ends, drawing for
    DRAWING_S, then says it is done (unless `answers` is off)."""

    start = Signal(object, object)
    next_run = Signal(object)

    def __init__(self, worker: TrainingWorker, answers: bool = True) -> None:
        super().__init__()
        self.worker = worker
        self.answers = answers
        self.turns: list[tuple[int, int]] = []  # (step as the drawing began, as it ended)
        self.heard: list[object] = []  # each batch of records sent, and "turn", in order
        self.began: list[tuple[int, int]] = []
        self.stopped: list[str] = []

    def _draw(self, into: list[tuple[int, int]]) -> None:
        trainer = self.worker.trainer
        assert trainer is not None
        before = trainer.step
        time.sleep(DRAWING_S)
        into.append((before, trainer.step))
        if self.answers:
            assert self.worker.shown is not None
            self.worker.shown.set()

    @Slot()
    def turn(self) -> None:
        self.heard.append("turn")
        self._draw(self.turns)

    @Slot(object)
    def records(self, batch: list[object]) -> None:
        self.heard.append(batch)

    @Slot(str, str)
    def run_began(self, folder: str, label: str) -> None:
        self._draw(self.began)

    @Slot(str)
    def ended(self, state: str) -> None:
        self.stopped.append(state)


@pytest.fixture
def turns(qtbot, monkeypatch) -> Iterator[Window]:
    """The real worker in its own QThread, a window's `shown` given, a turn after every
    step (records sent at once)."""
    monkeypatch.setattr(training_worker, "SEND_EVERY_S", 0.0)
    thread = QThread()
    worker = TrainingWorker()
    worker.shown = threading.Event()
    worker.moveToThread(thread)
    window = Window(worker)
    window.start.connect(worker.start)
    window.next_run.connect(worker.next_run)
    worker.turn.connect(window.turn)
    worker.records.connect(window.records)
    worker.began.connect(window.run_began)
    worker.stopped.connect(window.ended)
    thread.start()
    yield window
    thread.quit()
    assert thread.wait(TIMEOUT)


def project(epochs: int = 1) -> Project:
    g = chain_graph([2], ("Linear", {"out_features": 8}), ("Tanh", {}),
                    ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    p = Project(graph=g)
    p.training.update({"dataset": {"name": "moons", "options": {}, "validation_split": 0.2},
                       "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 64,
                       "epochs": epochs, "device": "cpu"})
    return p


def test_no_step_is_taken_while_the_window_draws(turns, qtbot, tmp_path: Path):
    turns.next_run.emit(RunRequest(tmp_path, "run"))
    turns.start.emit(project(), Control())
    qtbot.waitUntil(lambda: turns.stopped == ["finished"], timeout=TIMEOUT)
    assert turns.began == [(0, 0)]  # the first step waited for the run to be shown
    steps = turns.worker.trainer.step
    assert len(turns.turns) == steps  # a turn after each step, here
    assert all(before == after for before, after in turns.turns)


def test_an_epochs_records_are_shown_on_the_next_steps_turn(turns, qtbot):
    """An epoch's end (its record, the health verdicts) goes with the next step's records,
    shown on that step's turn, not sent alone to be drawn while torch trains."""
    turns.start.emit(project(epochs=3), Control())
    qtbot.waitUntil(lambda: turns.stopped == ["finished"], timeout=TIMEOUT)
    mid_run = [k for k, heard in enumerate(turns.heard) if heard != "turn" and any(
        isinstance(r, EpochRecord) and r.epoch < 3 for r in heard)]
    assert len(mid_run) == 2
    assert all(turns.heard[k + 1] == "turn" for k in mid_run)


def test_a_window_that_does_not_answer_only_delays_training(turns, qtbot, monkeypatch):
    monkeypatch.setattr(training_worker, "SHOW_WAIT_S", 0.02)
    turns.answers = False
    turns.start.emit(project(), Control())
    qtbot.waitUntil(lambda: turns.stopped == ["finished"], timeout=TIMEOUT)
    trainer = turns.worker.trainer
    assert len(turns.turns) == trainer.step
    # each turn but the epoch's last (its wait falls after the epoch's clock stopped) waited
    # its 20 ms in the torch thread, counted as training time, then went on
    assert sum(r.seconds for r in trainer.history) >= (trainer.step - 1) * 0.02


def test_live_curves_redraw_on_the_turns_at_their_pace(qtbot):
    """A turn redraws the curves when their pace allows (and restarts the timer, which
    would otherwise redraw while torch trains); a turn sooner than the pace does not."""
    make_application()
    plots = RunPlots()
    qtbot.addWidget(plots)
    plots.timer.stop()  # as it is between turns that keep restarting it
    plots.add([StepRecord(1, 1, 1, 4, 0.9, 0.0, 0.1)])
    plots.redraw_if_due()
    assert plots.runs[0].curves[0].getData()[1].tolist() == [0.9]
    assert plots.timer.isActive() and plots.timer.remainingTime() > REDRAW_MS - 50
    plots.add([StepRecord(1, 2, 2, 4, 0.7, 0.0, 0.1)])
    plots.redraw_if_due()  # at once: not due yet
    assert plots.runs[0].curves[0].getData()[1].tolist() == [0.9]
    # the timer, restarted, redraws if no turn comes (after its interval: more than
    # REDRAW_MS when this machine drew the first slowly, as a busy one does)
    qtbot.waitUntil(lambda: plots.runs[0].curves[0].getData()[1].tolist() == [0.9, 0.7],
                    timeout=plots.timer.interval() + 1000)


def test_a_turns_redraw_is_painted_before_the_turn_ends(qtbot):
    """The curves redrawn on a turn are painted within it (Qt queues the scene's updates
    and the axes' layouts after a redraw; sent later they would paint while torch trains),
    and the paints count in the pace."""
    make_application()
    plots = RunPlots()
    qtbot.addWidget(plots)
    plots.timer.stop()
    plots.resize(900, 300)
    plots.show()
    qtbot.waitExposed(plots)
    plots.add([StepRecord(1, 1, 1, 4, 0.9, 0.0, 0.1)])
    plots.redraw()
    qtbot.wait(300)  # shown, and every queued paint done
    plots.view.painting = 0.0
    plots._last_redraw = 0.0  # a redraw is due
    plots.add([StepRecord(1, step, step, 4, 1 / step, 0.0, 0.1) for step in range(2, 200)])
    plots.redraw_if_due()
    assert plots.view.painting > 0  # painted already, before the event loop ran


def test_the_window_draws_its_runs_on_the_turns(window, qtbot):
    """The real window: the curves redraw on the torch thread's turns while a run trains,
    and no step is taken while they do."""
    worker = window.training.controller.worker
    seen: list[tuple[int, int]] = []

    def drawing() -> None:
        before = worker.trainer.step
        time.sleep(0.02)
        seen.append((before, worker.trainer.step))

    window.training.controller.drawTurn.connect(drawing)
    epochs = window.training.findChild(QSpinBox, "epochs")
    epochs.setFocus()
    epochs.selectAll()
    qtbot.keyClicks(epochs, "5000")  # a run that lasts until stopped
    qtbot.keyClick(epochs, Qt.Key.Key_Return)
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=TIMEOUT)
    window.training.controller.stop()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=TIMEOUT)
    assert all(before == after for before, after in seen)
    assert window.training.plots.runs[-1].loss.n > 0


class Paints(QObject):
    """Counts the paint events a widget receives."""

    def __init__(self, widget: QWidget) -> None:
        super().__init__()
        self.count = 0
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.count += 1
        return False


@pytest.mark.parametrize("turn", ["turn", "began"])
def test_a_turn_paints_what_changed_before_torch_goes_on(window, qtbot, turn):
    """What the records changed (here the runs table) is painted within the turn, before
    the torch thread is let go, not later while it trains."""
    controller = window.training.controller
    table = window.training.runs_table.table
    qtbot.waitUntil(lambda: not table.visibleRegion().isEmpty())
    qtbot.wait(50)
    paints = Paints(table.viewport())
    controller._shown.clear()
    table.viewport().update()  # a repaint pending
    if turn == "turn":
        controller.worker.turn.emit()  # from this thread: handled at once, as a queued one is
    else:
        controller.worker.began.emit("", "")
    assert paints.count == 1 and controller._shown.is_set()
