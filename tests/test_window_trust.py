"""Nothing a person types can break the window: every field is checked by core as it is
typed, a run that cannot start or go on ends idle and says why, any readable file opens with
its problems marked, and nothing is lost on the way out."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton

from layerlab.app.application import ErrorReporter, error_dialog, run_window
from layerlab.app.file_ops import recovery_path
from layerlab.app.training_controller import SILENT_END
from layerlab.app.training_dock import MESSAGE_HEIGHT
from layerlab.app.training_worker import TrainingWorker
from layerlab.core.errors import GraphError, ProjectFileError
from layerlab.core.project import load_project, load_project_lenient
from layerlab.core.validation import FIELDS

from conftest import EXAMPLES

CTRL = Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def window(window, qtbot):
    """The window, active, so that keys reach it as they reach a person's."""
    window.activateWindow()
    qtbot.waitActive(window)
    return window


def type_into(qtbot, widget, text, end=Qt.Key.Key_Return):
    """Click into a field, select what is there (Ctrl+A), type, then press `end`."""
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)
    qtbot.keyClick(widget, Qt.Key.Key_A, CTRL)
    qtbot.keyClicks(widget, text)
    if end is not None:
        qtbot.keyClick(widget, end)


def parse_reason(key, text):
    with pytest.raises(ValueError) as caught:
        FIELDS[key].parse(text)
    return str(caught.value)


def assert_marked(widget, reason):
    assert widget.property("invalid") is True
    assert widget.toolTip() == reason
    assert widget.accessibleDescription() == reason


def assert_unmarked(widget):
    assert widget.property("invalid") is False
    assert widget.accessibleDescription() == ""


def train_blocked_by(window, reason):
    train = window.actions["actionTrain"]
    button = window.training.buttons["train"]
    return not train.isEnabled() and not button.isEnabled() and reason in train.toolTip()


def project_file(tmp_path, example="spiral", **training):
    """An example as a file, with some training settings replaced (dotted keys allowed)."""
    data = json.loads((EXAMPLES / f"{example}.layerlab.json").read_text())
    for key, value in training.items():
        head, _, rest = key.partition("__")
        if rest:
            data["training"][head][rest] = value
        else:
            data["training"][head] = value
    path = tmp_path / f"{example}.layerlab.json"
    path.write_text(json.dumps(data))
    return path


# -- the form validates as the person types ---------------------------------------------
def test_a_learning_rate_that_is_not_a_number_is_marked_and_never_stored(window, qtbot):
    dock, undo = window.training, window.doc.undo_stack
    before, steps = window.doc.project.training["optimizer"]["lr"], undo.count()
    type_into(qtbot, dock.lr, "abc", end=None)
    reason = parse_reason("optimizer.lr", "abc")
    assert_marked(dock.lr, reason)  # while typing, before Return
    assert train_blocked_by(window, reason)
    qtbot.keyClick(dock.lr, Qt.Key.Key_Return)
    qtbot.keyClick(window, Qt.Key.Key_F5)  # Train's key: nothing starts
    assert window.training.controller.state == "idle" and not window.doc.structure_locked
    assert dock.lr.text() == "abc"
    assert window.doc.project.training["optimizer"]["lr"] == before and undo.count() == steps
    type_into(qtbot, dock.lr, "0.05", end=Qt.Key.Key_Tab)
    assert_unmarked(dock.lr)
    assert window.actions["actionTrain"].isEnabled()
    assert window.doc.project.training["optimizer"]["lr"] == 0.05
    assert undo.count() == steps + 1 and undo.undoText() == "Change learning rate"


def test_a_learning_rate_of_zero_is_refused_at_the_field(window, qtbot):
    dock = window.training
    before = window.doc.project.training["optimizer"]["lr"]
    type_into(qtbot, dock.lr, "0")
    assert_marked(dock.lr, FIELDS["optimizer.lr"].problem(0.0))
    assert window.doc.project.training["optimizer"]["lr"] == before
    assert window.training.controller.snapshot().training["optimizer"]["lr"] == before


def test_batch_size_minus_five_stays_minus_five_and_is_marked(window, qtbot):
    dock, undo = window.training, window.doc.undo_stack
    steps = undo.count()
    type_into(qtbot, dock.batch, "-5")
    assert dock.batch.text() == "-5"
    reason = FIELDS["batch_size"].problem(-5)
    assert_marked(dock.batch, reason)
    assert train_blocked_by(window, reason)
    assert window.doc.project.training["batch_size"] == 32 and undo.count() == steps
    type_into(qtbot, dock.batch, "64")
    assert_unmarked(dock.batch)
    assert window.doc.project.training["batch_size"] == 64


def test_letters_typed_into_a_spin_box_show_and_are_marked_until_left(window, qtbot):
    dock = window.training
    type_into(qtbot, dock.epochs, "ten", end=None)
    assert dock.epochs.text() == "ten"
    assert_marked(dock.epochs, parse_reason("epochs", "ten"))
    assert not window.actions["actionTrain"].isEnabled()
    qtbot.keyClick(dock.epochs, Qt.Key.Key_Tab)  # the spin box goes back to its number
    assert dock.epochs.text() == "150"
    assert_unmarked(dock.epochs)
    assert window.actions["actionTrain"].isEnabled()


def test_optimizer_arguments_are_read_and_checked_by_core(window, qtbot):
    dock = window.training
    before = dict(window.doc.project.training["optimizer"])
    type_into(qtbot, dock.opt_args, "abc")
    assert dock.opt_args.property("invalid") is True
    assert "'abc'" in dock.opt_args.toolTip()
    type_into(qtbot, dock.opt_args, "betas=(0.9, 1.5)")
    assert_marked(dock.opt_args, FIELDS["optimizer.betas"].problem([0.9, 1.5]))
    assert window.doc.project.training["optimizer"] == before
    type_into(qtbot, dock.opt_args, "betas=(0.8, 0.99), amsgrad=true")
    assert_unmarked(dock.opt_args)
    assert window.doc.project.training["optimizer"] == {**before, "betas": [0.8, 0.99],
                                                        "amsgrad": True}


def test_a_split_typed_too_large_never_reaches_the_saved_file(window, qtbot, tmp_path):
    dock = window.training
    type_into(qtbot, dock.split, "1.5")
    assert_marked(dock.split, FIELDS["dataset.validation_split"].problem(1.5))
    target = tmp_path / "saved.layerlab.json"
    assert window._write(target)
    assert load_project(target).training["dataset"]["validation_split"] == 0.2


# -- any readable file opens, with its problems -----------------------------------------
def test_the_lenient_loader_returns_the_problems_a_person_can_fix(tmp_path):
    path = project_file(tmp_path, dataset__validation_split=1.5, optimizer={"name": "nadam",
                                                                          "lr": 0.1})
    with pytest.raises(GraphError):
        load_project(path)
    project, problems = load_project_lenient(path)
    assert project.training["dataset"]["validation_split"] == 1.5
    assert project.training["optimizer"]["name"] == "nadam"
    assert [where for where, _ in problems] == ["training.dataset.validation_split",
                                                "training.optimizer.name"]
    data = json.loads(path.read_text())
    data["graph"]["nodes"].append(data["graph"]["nodes"][0])  # a duplicate id
    path.write_text(json.dumps(data))
    with pytest.raises(GraphError):
        load_project_lenient(path)
    path.write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(ProjectFileError):
        load_project_lenient(path)


def test_a_file_with_problems_opens_with_them_marked_and_listed(window, qtbot, tmp_path):
    path = project_file(tmp_path, dataset__validation_split=1.5,
                        optimizer={"name": "nadam", "lr": 0.1})
    data = json.loads(path.read_text())
    data["graph"]["nodes"][1]["params"]["out_features"] = -3  # a problem of the graph
    path.write_text(json.dumps(data))
    assert window.open_path(path, confirmed=True)
    dock = window.training
    split_reason = FIELDS["dataset.validation_split"].problem(1.5)
    optimizer_reason = FIELDS["optimizer.name"].problem("nadam")
    assert_marked(dock.split, split_reason)
    assert_marked(dock.optimizer, optimizer_reason)
    assert dock.optimizer.currentIndex() == -1  # the file's optimizer is no choice
    assert train_blocked_by(window, split_reason) and train_blocked_by(window,
                                                                      optimizer_reason)
    listed = dock.error.text().splitlines()
    assert listed == [f"{path.name} has problems to fix before training:",
                      f"• {split_reason}", f"• {optimizer_reason}"]
    assert dock.message_area.isVisible()
    assert window.inspector.errors.count() == 1
    assert "fc1" in window.inspector.errors.item(0).text()
    assert window.valid_label.text() == "✗ 1 problem(s)"
    type_into(qtbot, dock.split, "0.25")
    dock.optimizer.setCurrentText("sgd")
    assert_unmarked(dock.split)
    assert_unmarked(dock.optimizer)
    assert window.doc.project.training["dataset"]["validation_split"] == 0.25
    assert window.doc.project.training["optimizer"] == {"name": "sgd", "lr": 0.1}
    assert window.actions["actionTrain"].isEnabled()
    assert not dock.message_area.isVisible()  # everything listed is fixed


def test_a_file_that_cannot_be_read_is_refused_in_a_dialog(window, tmp_path):
    shown = []
    window.show_error = lambda title, text: shown.append(text)
    text_file = tmp_path / "notes.layerlab.json"
    text_file.write_text("hello")
    newer = project_file(tmp_path)
    newer.write_text(json.dumps({**json.loads(newer.read_text()), "version": 99}))
    assert not window.open_path(text_file, confirmed=True)
    assert not window.open_path(newer, confirmed=True)
    assert shown == [str(ProjectFileError(str(text_file), "is not valid JSON: Expecting "
                                                          "value at line 1, column 1")),
                     str(ProjectFileError(str(newer), "was written by a newer LayerLab (file "
                                                      "version 99; this one reads up to 3); "
                                                      "upgrade LayerLab to open it"))]
    assert window.doc.project.path is None  # nothing changed


def test_the_command_line_refuses_an_unreadable_file_without_starting_a_thread(
        qtbot, tmp_path, monkeypatch, capsys):
    from PySide6.QtWidgets import QMessageBox

    from layerlab.app.main_window import MainWindow
    dialogs = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *args: dialogs.append(args[2]))
    before = {id(w) for w in QApplication.topLevelWidgets()}
    path = tmp_path / "x.layerlab.json"
    path.write_text("[1, 2]")
    assert run_window(str(path)) == 2
    message = f"{path}: is not a LayerLab project (expected a JSON object)"
    assert dialogs == [message]
    assert capsys.readouterr().err == message + "\n"
    assert not [w for w in QApplication.topLevelWidgets()
                if isinstance(w, MainWindow) and id(w) not in before]


DRIVER = textwrap.dedent("""
    import json, sys
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QMessageBox
    from layerlab.app.main_window import MainWindow
    from layerlab.cli import main

    MainWindow.ask_save_changes = lambda self: QMessageBox.StandardButton.Discard

    def drive():
        window = next(w for w in QApplication.topLevelWidgets()
                      if isinstance(w, MainWindow))
        window.activateWindow()
        QTest.qWaitForWindowActive(window)
        split = window.training.split
        print(json.dumps({"visible": window.isVisible(),
                          "split": split.text(), "marked": split.property("invalid"),
                          "train": window.actions["actionTrain"].isEnabled()}), flush=True)
        window.scene.select_only(["tanh1"])
        window.actions["actionDelete"].trigger()  # unsaved work, discarded on the way out
        QTest.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)

    QTimer.singleShot(0, drive)
    sys.exit(main(sys.argv[1:]))
""")


def test_layerlab_file_with_problems_opens_the_window_and_ctrl_q_quits_cleanly(tmp_path):
    path = project_file(tmp_path, dataset__validation_split=1.5)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-c", DRIVER, str(path)], env=env,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"visible": True, "split": "1.5", "marked": True,
                                       "train": False}
    noise = [line for line in done.stderr.splitlines()
             if "propagateSizeHints" not in line]
    assert noise == []  # no traceback, no "QThread: Destroyed…", no libshiboken


# -- a run that cannot start or go on ends idle ------------------------------------------
def test_a_run_whose_settings_have_problems_ends_idle_with_the_reason(window, qtbot,
                                                                      tmp_path):
    path = project_file(tmp_path, dataset__validation_split=1.5)
    assert window.open_path(path, confirmed=True)
    reason = FIELDS["dataset.validation_split"].problem(1.5)
    for start in (window.training.controller.train, window.training.controller.step,
                  window.actions["actionStepThrough"].trigger):
        window.training.show_message("")
        start()
        assert window.training.controller.state == "idle"
        assert not window.doc.structure_locked and window.inspector.isEnabled()
        assert window.actions["actionNew"].isEnabled() and window.actions["actionOpen"].isEnabled()
        assert not window.actions["actionStop"].isEnabled()
        assert reason in window.training.error.text()
    assert window.training.plots.run_list.count() == 0


def test_mnist_offline_fails_idle_with_a_message_that_scrolls_and_no_empty_run(window, qtbot,
                                                                              tmp_path):
    missing = tmp_path / "no-mnist"
    path = project_file(tmp_path, "mnist-mlp", dataset={
        "name": "mnist", "options": {"root": str(missing), "download": False},
        "validation_split": 0.1})
    assert window.open_path(path, confirmed=True)
    dock = window.training
    qtbot.wait(50)
    heights = [dock.lr.height(), dock.batch.height(), dock.split.height()]
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: dock.controller.state == "idle", timeout=20_000)
    qtbot.wait(50)  # the layout settles
    assert str(missing) in dock.error.text()
    assert dock.message_area.isVisible() and dock.message_area.height() <= MESSAGE_HEIGHT
    assert dock.error.wordWrap()
    assert [dock.lr.height(), dock.batch.height(), dock.split.height()] == heights
    assert dock.progress.format() == "failed"
    assert dock.plots.run_list.count() == 0 and dock.plots.runs == []
    assert not window.doc.structure_locked and window.actions["actionTrain"].isEnabled()
    assert window.actions["actionNew"].isEnabled()
    assert not window.actions["actionStop"].isEnabled()


@pytest.fixture
def silent_worker(monkeypatch):
    """A worker whose run slot returns without a word (a bug the worker must never have)."""
    monkeypatch.setattr(TrainingWorker, "start", lambda self, project, control: None)


def test_a_run_slot_that_ends_without_a_word_still_ends_idle(silent_worker, window, qtbot):
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=5000)
    assert not window.doc.structure_locked
    assert window.training.error.text() == SILENT_END
    assert window.training.progress.format() == "failed"
    assert window.actions["actionTrain"].isEnabled()


def test_stop_always_brings_the_window_back_to_idle(window, qtbot):
    window.actions["actionStep"].trigger()  # a paused run of one batch
    qtbot.waitUntil(lambda: window.training.plots.run_list.count() == 1, timeout=20_000)
    assert window.training.controller.state == "paused" and window.doc.structure_locked
    window.actions["actionStop"].trigger()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=5000)
    assert not window.doc.structure_locked and window.actions["actionTrain"].isEnabled()


# -- unexpected exceptions: a dialog and the log ----------------------------------------
class _Raiser(QObject):
    poke = Signal()

    def explode(self):
        raise ZeroDivisionError("in the torch thread")


@pytest.mark.qt_no_exception_capture
def test_an_unexpected_exception_is_logged_and_shown_in_the_gui_thread(qtbot, monkeypatch,
                                                                       caplog):
    shown = []

    def show(summary, details):
        shown.append((summary, details, QThread.currentThread() is QApplication.instance()
                      .thread()))

    monkeypatch.setattr(sys, "excepthook", ErrorReporter(None, show=show))

    def boom():
        raise KeyError("no such thing")

    QTimer.singleShot(0, boom)
    qtbot.waitUntil(lambda: len(shown) == 1, timeout=5000)
    summary, details, in_gui = shown[0]
    assert summary == "KeyError: 'no such thing'" and in_gui
    assert 'raise KeyError("no such thing")' in details
    assert [r.levelname for r in caplog.records if "KeyError" in r.getMessage()] == ["ERROR"]
    thread, raiser = QThread(), _Raiser()
    raiser.moveToThread(thread)
    raiser.poke.connect(raiser.explode)
    thread.start()
    raiser.poke.emit()
    qtbot.waitUntil(lambda: len(shown) == 2, timeout=5000)
    thread.quit()
    thread.wait()
    assert shown[1][0] == "ZeroDivisionError: in the torch thread" and shown[1][2]


def test_the_error_dialog_copies_its_details(qtbot):
    details = "Traceback (most recent call last):\n  …\nKeyError: 'x'\n"
    dialog = error_dialog(None, "KeyError: 'x'", details)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.mouseClick(dialog.findChild(QPushButton, "copyDetails"), Qt.MouseButton.LeftButton)
    assert QApplication.clipboard().text() == details
    QApplication.clipboard().clear()


# -- nothing lost ------------------------------------------------------------------------
def test_the_recovery_copy_is_written_when_a_run_starts(window, qtbot):
    type_into(qtbot, window.training.epochs, "2")
    recovery_path().unlink(missing_ok=True)
    qtbot.keyClick(window, Qt.Key.Key_F5)
    assert window.training.controller.state == "running"
    copy = json.loads(recovery_path().read_text())
    assert copy["training"] == window.doc.project.training
    assert copy["graph"] == window.doc.project.to_dict()["graph"]


def test_ctrl_q_quits(window, qtbot):
    qtbot.keyClick(window, Qt.Key.Key_Q, CTRL)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    assert not window.training.controller.thread.isRunning()


# -- monkey findings: runs that must not start, an edit typed but not committed ---------
def test_step_with_a_broken_graph_is_refused_as_train_is(window, qtbot):
    """F10: Step used to start a run that then failed in the torch thread."""
    node = next(n for n, d in window.doc.graph.nodes(data=True) if d["type"] == "Tanh")
    window.select_node(node)
    qtbot.keyClick(window.view.viewport(), Qt.Key.Key_Delete)
    assert window.doc.analysis.errors
    qtbot.keyClick(window, Qt.Key.Key_F10)
    assert window.training.controller.state == "idle" and not window.doc.structure_locked
    assert window.training.error.text() == ("the graph has problems; fix them first (see the "
                                            "inspector)")


def test_train_is_refused_while_step_through_shows_a_step(window, qtbot):
    """F5: a run started from step-through ended it and unlocked the graph under it."""
    qtbot.keyClick(window, Qt.Key.Key_F11)
    qtbot.waitUntil(lambda: window.stepper.active, timeout=20_000)
    for key in (Qt.Key.Key_F5, Qt.Key.Key_F10):
        window.training.show_message("")
        qtbot.keyClick(window, key)
        assert window.training.controller.state == "idle"
        assert window.training.error.text() == "leave step-through first (F11), then train"
        assert window.stepper.active and window.doc.structure_locked
    qtbot.keyClick(window, Qt.Key.Key_F11)
    assert not window.stepper.active and not window.doc.structure_locked


def test_stop_cancels_a_step_through_recording_under_way(window, qtbot):
    """F4: a recording could not be stopped; the graph stayed locked until it arrived."""
    stop = window.actions["actionStop"]
    arrived: list[object] = []  # appended in the torch thread, when the recording is done
    window.training.controller.worker.traced.connect(arrived.append)
    qtbot.keyClick(window, Qt.Key.Key_F11)
    assert window.doc.structure_locked and stop.isEnabled()
    qtbot.keyClick(window, Qt.Key.Key_F5, Qt.KeyboardModifier.ShiftModifier)
    assert not window.doc.structure_locked and not stop.isEnabled() and not arrived
    qtbot.waitUntil(lambda: bool(arrived), timeout=20_000)
    qtbot.wait(100)  # the window's own (queued) slot has had the recording
    assert not window.stepper.active and not window.doc.structure_locked
    qtbot.keyClick(window, Qt.Key.Key_F11)  # a new recording is shown as before
    qtbot.waitUntil(lambda: window.stepper.active, timeout=20_000)
    qtbot.keyClick(window, Qt.Key.Key_F11)


def test_an_edit_typed_but_not_committed_is_asked_about_before_closing(window, qtbot,
                                                                       monkeypatch):
    """F8: the field committed its edit after the window had closed without asking."""
    from layerlab.app.main_window import MainWindow

    asked = []
    monkeypatch.setattr(window, "ask_save_changes",
                        lambda: asked.append(True) or QMessageBox.StandardButton.Cancel)
    type_into(qtbot, window.training.lr, "0.05", end=None)
    assert window.doc.undo_stack.isClean()
    assert MainWindow.confirm_discard(window) is False  # the real one, not the fixture's
    assert asked == [True]
    assert window.doc.project.training["optimizer"]["lr"] == 0.05
    assert window.doc.undo_stack.undoText() == "Change learning rate"


def test_stop_ends_a_run_at_once_that_waits_behind_other_torch_work(window, qtbot,
                                                                    monkeypatch):
    """F3: a run queued behind a slow job (a dataset loading for the preview) ends as soon as
    Stop is pressed; its slot, when it comes, neither trains nor ends another run."""
    from layerlab.app import training_worker
    from layerlab.core.insight import PreviewRecord

    busy = []

    def slow_preview(training, folder):
        busy.append(True)
        QThread.msleep(1500)
        return PreviewRecord("message", message="slow")

    monkeypatch.setattr(training_worker, "preview_training", slow_preview)
    window.training.controller.preview()
    qtbot.waitUntil(lambda: busy == [True], timeout=5000)
    window.actions["actionTrain"].trigger()
    assert window.training.controller.state == "running" and window.doc.structure_locked
    window.actions["actionStop"].trigger()
    assert window.training.controller.state == "idle" and not window.doc.structure_locked
    qtbot.wait(2000)  # the slow job ends, then the stopped run's slot runs and says nothing
    assert window.training.controller.state == "idle"
    assert window.training.error.text() == "" and window.training.plots.run_list.count() == 0
    window.actions["actionTrain"].trigger()  # the next run is not ended by the stale one
    qtbot.waitUntil(lambda: window.training.plots.run_list.count() == 1, timeout=20_000)
    window.actions["actionStop"].trigger()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=5000)
