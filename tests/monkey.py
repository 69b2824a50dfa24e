"""A monkey test of the real window: seeded random sequences of what a person does (edits,
drags, garbage in every field, runs, step-through, undo/redo, files), with three checks
after every action:

1. no uncaught exception (sys.excepthook, threading.excepthook, the torch thread's logged
   failures, Qt warnings, and no traceback or "internal error" in anything shown);
2. the window is idle and unlocked within 5 s of Stop (and never locked with no run and no
   step-through for longer than that);
3. at checkpoints and at the end, undoing every edit since the last open gives back the
   project's JSON at that open byte for byte, and redoing them gives back the edited one.

Dialogs never block: QFileDialog and QMessageBox static functions and QDialog.exec are
replaced by canned answers chosen from the same random.Random(seed); a context menu (whose
exec PySide does not let a test replace) is answered with keys once it is up.
A failure raises MonkeyFailure with the seed and the last actions, to replay it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QtMsgType, qInstallMessageHandler
from PySide6.QtWidgets import QApplication, QDialog, QFileDialog, QMessageBox

from monkey_gestures import click, focused, key, wait, wait_until
from monkey_support import (
    bad_files,
    diff,
    other_stacks,
    strict_json,
    warm_up,
    write_idx_dataset,
)

IDLE_WITHIN_S = 5.0  # a run: from Stop to idle and unlocked
# A step-through recording left alone holds the graph until it arrives (~1 s cold on LeNet-5
# here, more on a busy machine); it must end, or fail, within this. Stop cancels one at once.
RECORDING_WITHIN_S = 30.0
SHOWN_ACTIONS = 20
QT_NOISE = ("This plugin does not support",)  # the offscreen platform's own notices
INTERNAL = ("Traceback (most recent call last)", "internal error")


class MonkeyFailure(AssertionError):
    pass


@dataclass
class Action:
    name: str
    weight: float
    run: Callable[[Monkey], str | None]  # what was done, for the log; None: not possible now
    busy_weight: float | None = None  # the weight while a run or step-through is live
    broken_weight: float | None = None  # the weight while the graph has problems


@dataclass
class Result:
    seed: int
    actions: int
    mix: Counter[str]
    checkpoints: int
    undone: int
    dialogs: int
    seconds: float
    events: Counter[str]
    failures: list[str]  # the reasons the window gave for runs and recordings that failed

    def summary(self) -> str:
        mix = ", ".join(f"{name} {n}" for name, n in sorted(self.mix.items(),
                                                              key=lambda kv: -kv[1]))
        events = ", ".join(f"{name} {n}" for name, n in sorted(self.events.items()))
        return (f"seed {self.seed}: {self.actions} actions in {self.seconds:.0f} s, "
                f"{self.checkpoints} undo checkpoints ({self.undone} edits undone and "
                f"redone), {self.dialogs} dialogs answered; all checks passed\n"
                f"action mix: {mix}\nwhat happened: {events}"
                + "".join(f"\n  failed: {reason}" for reason in self.failures))


class Monkey:
    """Drives one MainWindow. `actions` is the table it draws from (monkey_actions.ACTIONS)."""

    def __init__(self, window: Any, seed: int, folder: Path, actions: list[Action],
                 echo: bool = False, local_mnist: bool = False) -> None:
        self.win = window
        self.echo = echo
        self.local_mnist = local_mnist
        self.seed = seed
        self.rng = random.Random(seed)
        self.folder = folder
        self.actions = actions
        self.history: list[str] = []
        self.mix: Counter[str] = Counter()
        self.problems: list[str] = []  # exceptions and warnings, checked after each action
        self.dialogs: list[str] = []
        self.file_answers: dict[str, str] = {}  # what the next open/save dialog returns
        self.written: dict[str, int] = {}  # files this window wrote: path → mtime (ns)
        self.opened_check: str | None = None
        self.checkpoints = self.undone = self.index = self.started_ns = 0
        self.baseline = window.doc.project.to_json()
        self.events: Counter[str] = Counter()  # runs started, step-throughs entered, …
        self.failures: list[str] = []
        window.doc.reset.connect(self._project_replaced)
        controller = window.training.controller
        controller.stateChanged.connect(self._state_changed)
        controller.worker.failed.connect(self._failed)
        window.stepper.modeChanged.connect(
            lambda active: self.events.update(["step-through entered"] if active else []))
        self._state = controller.state

    # -- the run ------------------------------------------------------------------------
    def run(self, count: int, checkpoint_every: int = 40) -> Result:
        warm_up()
        start = time.monotonic()
        bad_files(self.folder)
        self.started_ns = time.time_ns()
        self.win.activateWindow()
        self.win.view.setFocus()
        with self.guards():
            for i in range(count):
                self.step(i)
                if (i + 1) % checkpoint_every == 0 and self.idle():
                    self.checkpoint()
            self.log("end: stop everything")
            self.stop_everything()
            self.checkpoint()
        return Result(self.seed, count, self.mix, self.checkpoints, self.undone,
                      len(self.dialogs), time.monotonic() - start, self.events,
                      self.failures)

    def step(self, i: int) -> None:
        if QApplication.activeWindow() is not self.win:  # after a popup, offscreen: a
            self.win.activateWindow()  # person's next click makes the window active again
            wait(1)
        busy = not self.idle()
        self.file_answers = {}
        self.index = i
        for _attempt in range(50):
            action = self.pick(busy)
            try:
                done = action.run(self)
            except MonkeyFailure:
                raise
            except Exception as exc:  # the monkey's own gesture failed: report it too
                self.fail(f"{action.name} raised {exc!r}", action.name)
            if done is not None:
                break
        else:
            return
        focus = QApplication.focusWidget()
        where = focus.objectName() if focus is not None else "-"
        self.log(f"{i}: {action.name} {done}  [focus {where}]")
        self.mix[action.name] += 1
        wait(5)
        self.check(action.name)

    def log(self, line: str) -> None:
        self.history.append(line)
        if self.echo:
            print(line, flush=True)

    def pick(self, busy: bool) -> Action:
        broken = bool(self.win.doc.analysis.errors)

        def weight(a: Action) -> float:
            if busy and a.busy_weight is not None:
                return a.busy_weight
            if broken and a.broken_weight is not None:
                return a.broken_weight
            return a.weight
        return self.rng.choices(self.actions, [weight(a) for a in self.actions])[0]

    def _state_changed(self, state: str) -> None:
        if self._state == "idle" and state != "idle":
            self.events["run started"] += 1
        self._state = state

    def _failed(self, message: str) -> None:
        self.events["run or recording failed"] += 1
        self.failures.append(message[:200])
        self.log(f"   ↳ failed: {message[:200]}")

    # -- the three checks -----------------------------------------------------------------
    def check(self, name: str) -> None:
        wait(1)
        if self.problems:
            self.fail("uncaught problem:\n" + "\n".join(self.problems), name)
        shown = [self.win.training.error.text(), self.win.statusBar().currentMessage()]
        for text in shown:
            if any(marker in text for marker in INTERNAL):
                self.fail(f"a traceback or internal error is shown: {text!r}", name)
        try:
            strict_json(self.win.doc.project.to_json())
        except ValueError as exc:
            self.fail(f"the project is no longer a JSON file: {exc}", name)
        self.scan_writes()
        if self.opened_check is not None:
            expected, self.opened_check = self.opened_check, None
            if self.win.doc.project.to_json() != expected:
                self.fail("a file this window saved reopens as different JSON:\n"
                          + diff(expected, self.win.doc.project.to_json()), name)
        if not self._consistent_within(RECORDING_WITHIN_S):
            self.fail("the graph stayed locked with no run and no step-through for "
                      f"{RECORDING_WITHIN_S} s; the other threads are at:\n{other_stacks()}",
                      name)

    def _consistent_within(self, timeout: float) -> bool:
        """Locked only while a run, a step-through or a recording (which ends soon) is live."""
        controller, stepper = self.win.training.controller, self.win.stepper

        def fine() -> bool:
            return not self.win.doc.structure_locked or controller.state != "idle" \
                or stepper.active
        return wait_until(fine, timeout)

    def idle(self) -> bool:
        return (self.win.training.controller.state == "idle" and not self.win.stepper.active
                and not self.win.doc.structure_locked)

    def stop_everything(self) -> str:
        """Stop (Shift+F5) until the run has ended: idle and unlocked within 5 s; then leave
        step-through (Done) and cancel a recording under way (F4). Train, New and Open
        must then be enabled."""
        win, notes = self.win, []
        controller = win.training.controller

        def stopped() -> bool:
            if controller.state != "idle" and win.actions["actionStop"].isEnabled():
                key(focused(win), Qt.Key.Key_F5, Qt.KeyboardModifier.ShiftModifier)
            return controller.state == "idle"

        def left() -> bool:
            if win.recording:  # Stop cancels a recording under way (finding F4)
                key(focused(win), Qt.Key.Key_F5, Qt.KeyboardModifier.ShiftModifier)
                notes.append("cancelled a recording")
            if win.stepper.active:
                done = win.stepper_panel.buttons["leave"]
                if done.isVisible():
                    click(done)
                else:
                    key(focused(win), Qt.Key.Key_F11)
                notes.append("left step-through")
            return self.idle()

        started = time.monotonic()
        if not wait_until(stopped, IDLE_WITHIN_S):
            self.fail(f"not idle {IDLE_WITHIN_S} s after Stop: state {controller.state}, "
                      f"locked {win.doc.structure_locked}, step-through "
                      f"{win.stepper.active}; the other threads are at:\n{other_stacks()}",
                      "stop")
        if not wait_until(left, RECORDING_WITHIN_S):
            self.fail(f"step-through or its recording still holds the graph after "
                      f"{RECORDING_WITHIN_S} s; the other threads are at:\n{other_stacks()}",
                      "stop")
        # Train may stay disabled while a training field is marked invalid (the dock's
        # `reasons`) or the graph has problems; New and Open never, once idle.
        excused = bool(getattr(win.training, "reasons", None)) or bool(win.doc.analysis.errors)
        for name in ("actionTrain", "actionNew", "actionOpen"):
            if not win.actions[name].isEnabled() and not (name == "actionTrain" and excused):
                self.fail(f"{name} is disabled although the window is idle", "stop")
        took = time.monotonic() - started
        return f"idle after {took:.1f} s" + (f" ({notes[-1]})" if notes else "")

    def checkpoint(self) -> None:
        """Undo every edit since the last open (the real Undo action), compare with the
        JSON at that open; redo them all, compare with the JSON before the undo."""
        win = self.win
        win.view.setFocus()  # a field being edited commits now, not in the middle
        wait(5)
        self.check("checkpoint")
        if not self.idle():
            return
        edited = win.doc.project.to_json()
        undo, redo = win.actions["actionUndo"], win.actions["actionRedo"]
        could_redo, n = redo.isEnabled(), 0
        while undo.isEnabled() and n < 100_000:
            undo.trigger()
            n += 1
        self.check("checkpoint undo")
        if win.doc.project.to_json() != self.baseline:
            self.fail(f"undoing all {n} edits does not give back the file as opened:\n"
                      + diff(self.baseline, win.doc.project.to_json()), "checkpoint")
        for _ in range(n):
            redo.trigger()
        self.check("checkpoint redo")
        if redo.isEnabled() != could_redo or win.doc.project.to_json() != edited:
            self.fail(f"redoing the {n} edits does not give back the edited project:\n"
                      + diff(edited, win.doc.project.to_json()), "checkpoint")
        self.checkpoints += 1
        self.undone += n
        self.log(f"   checkpoint: {n} edits undone and redone")

    def _project_replaced(self) -> None:
        self.baseline = self.win.doc.project.to_json()
        path = self.win.doc.project.path
        self.scan_writes()
        if path is not None and str(path) in self.written:
            self.opened_check = Path(path).read_text(encoding="utf-8")

    def scan_writes(self) -> None:
        """Note every file in the monkey's folder written since the last look: only the
        window writes there once the run has begun."""
        for path in self.folder.glob("*"):
            stamp = path.stat().st_mtime_ns if path.is_file() else 0
            if stamp and stamp > self.started_ns:
                self.written[str(path)] = stamp

    # -- failing ------------------------------------------------------------------------
    def fail(self, reason: str, action: str) -> None:
        last = "\n".join(self.history[-SHOWN_ACTIONS:])
        raise MonkeyFailure(
            f"monkey seed {self.seed}, at action {self.index} ({action}): "
            f"{reason}\nlast actions:\n{last}\nreplay: the same seed and count "
            f"(python benchmarks/bench_monkey.py --seed {self.seed} --count "
            f"{self.index + 1})")

    # -- guards: exceptions, warnings and dialogs -------------------------------------------
    @contextlib.contextmanager
    def guards(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._exceptions())
            stack.enter_context(self._dialogs())
            if self.local_mnist:
                stack.enter_context(self._mnist_at_home())
            yield

    @contextlib.contextmanager
    def _mnist_at_home(self) -> Iterator[None]:
        """MNIST on a machine without it (local_mnist=True): HOME points at a folder with a
        small MNIST-format dataset, so the mnist examples train instead of failing to
        download (fashion-mnist stays missing). It was the workaround for finding F2 (Stop
        waited behind queued previews retrying the download) until Stop stopped waiting."""
        home = self.folder / "home"
        write_idx_dataset(home / ".cache" / "layerlab" / "mnist", 1200, 200)
        old = os.environ.get("HOME")
        os.environ["HOME"] = str(home)
        try:
            yield
        finally:
            if old is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = old

    @contextlib.contextmanager
    def _exceptions(self) -> Iterator[None]:
        def excepthook(kind: type, value: BaseException, tb: object) -> None:
            import traceback
            self.problems.append("".join(traceback.format_exception(kind, value, tb)))

        def thread_hook(args: threading.ExceptHookArgs) -> None:
            excepthook(args.exc_type, args.exc_value, args.exc_traceback)  # type: ignore

        def qt_message(kind: QtMsgType, context: object, message: str) -> None:
            if kind != QtMsgType.QtDebugMsg and kind != QtMsgType.QtInfoMsg and \
                    not any(noise in message for noise in QT_NOISE):
                self.problems.append(f"Qt {kind.name}: {message}")

        handler = _Recorder(self.problems)
        logger = logging.getLogger("layerlab")
        old = sys.excepthook, threading.excepthook
        sys.excepthook, threading.excepthook = excepthook, thread_hook
        previous = qInstallMessageHandler(qt_message)
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            qInstallMessageHandler(previous)
            sys.excepthook, threading.excepthook = old

    @contextlib.contextmanager
    def _dialogs(self) -> Iterator[None]:
        m = self

        def file_dialog(kind: str) -> Callable[..., tuple[str, str]]:
            def answer(*args: object, **kwargs: object) -> tuple[str, str]:
                chosen = m.file_answers.pop(kind, None)
                if chosen is None:  # a dialog the action did not expect (Save? → Save)
                    chosen = m.rng.choice(("", str(m.folder / "unplanned.layerlab.json")))
                m._shown(f"file dialog {kind} {args[1] if len(args) > 1 else ''!r} "
                         f"→ {chosen!r}")
                return chosen, ""
            return answer

        def message(kind: str) -> Callable[..., object]:
            def answer(parent: object, title: str, text: str, buttons: object = None,
                       *rest: object) -> object:
                m._shown(f"{kind} {title!r}: {text!r}")
                if any(marker in text for marker in INTERNAL):
                    m.problems.append(f"a dialog shows an internal error: {text}")
                if kind != "question":
                    return QMessageBox.StandardButton.Ok
                options = [b for b in (QMessageBox.StandardButton.Save,
                                       QMessageBox.StandardButton.Discard,
                                       QMessageBox.StandardButton.Cancel,
                                       QMessageBox.StandardButton.Yes,
                                       QMessageBox.StandardButton.No)
                           if buttons is None or int(buttons) & int(b)]  # type: ignore
                return m.rng.choice(options or [QMessageBox.StandardButton.Ok])
            return answer

        def modal(self_: QDialog, *args: object) -> int:
            text = self_.text() if isinstance(self_, QMessageBox) else self_.windowTitle()
            m._shown(f"modal {type(self_).__name__} {self_.windowTitle()!r}: {text!r}")
            if any(marker in text for marker in INTERNAL):
                m.problems.append(f"a dialog shows an internal error: {text}")
            return 0

        patches = [(QFileDialog, "getOpenFileName", staticmethod(file_dialog("open"))),
                   (QFileDialog, "getSaveFileName", staticmethod(file_dialog("save"))),
                   (QMessageBox, "exec", modal), (QDialog, "exec", modal)]
        for kind in ("question", "warning", "information", "critical"):
            patches.append((QMessageBox, kind, staticmethod(message(kind))))
        patches.append((QMessageBox, "about", staticmethod(
            lambda parent, title, text: m._shown(f"about {title!r}"))))
        saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in patches]
        for owner, name, value in patches:
            setattr(owner, name, value)
        try:
            yield
        finally:
            for owner, name, value in saved:
                if value is None:
                    delattr(owner, name)
                else:
                    setattr(owner, name, value)

    def _shown(self, what: str) -> None:
        self.dialogs.append(what)
        self.log(f"   ↳ {what[:300]}")


class _Recorder(logging.Handler):
    """The torch thread catches everything at its boundary and logs the unexpected with
    its traceback: for the monkey, that is an uncaught exception."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.problems = problems

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            import traceback
            self.problems.append(f"logged: {record.getMessage()}\n"
                                 + "".join(traceback.format_exception(*record.exc_info)))
