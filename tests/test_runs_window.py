"""Runs in the window are folders kept with the project: each run writes one (run.json,
metrics.csv …) from the torch thread; the runs table and the plots list them when the project
opens, and what a person does in the table (rename, delete, restore settings, load weights,
export) happens to the folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtWidgets import QAbstractItemView, QLineEdit, QMessageBox
from safetensors.torch import load_file

from layerlab.app.file_ops import FilesMixin
from layerlab.app.main_window import MainWindow
from layerlab.core.runs import list_runs, read_run, runs_folder
from test_editor import drag

from conftest import EXAMPLES

TIMEOUT = 20_000


def tiny_spiral(tmp_path: Path, name: str = "spiral") -> Path:
    """The spiral example as a file, small enough that a run takes a moment."""
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    data["training"].update({"epochs": 2, "batch_size": 64, "device": "cpu"})
    data["training"]["dataset"]["options"]["n_samples"] = 200
    path = tmp_path / f"{name}.layerlab.json"
    path.write_text(json.dumps(data))
    return path


def train(window: MainWindow, qtbot) -> str:
    """One run through Train; the key of the run it wrote."""
    controller = window.training.controller
    with qtbot.waitSignal(controller.run_ended, timeout=TIMEOUT) as ended:
        window.actions["actionTrain"].trigger()
    return ended.args[0]


def set_lr(window: MainWindow, qtbot, text: str) -> None:
    edit = window.training.lr
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def select_row(window: MainWindow, qtbot, key: str) -> None:
    grid = window.training.runs_table.table
    row = window.training.runs_table.row_of(key)
    rect = grid.visualRect(grid.model().index(row, 3))
    qtbot.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def shown_labels(window: MainWindow) -> list[str]:
    grid = window.training.runs_table.table
    return [grid.item(row, 0).text() for row in range(grid.rowCount())]


def test_runs_are_folders_listed_again_when_the_project_opens(window, qtbot, tmp_path):
    path = tiny_spiral(tmp_path)
    assert window.open_path(path, confirmed=True)
    first = train(window, qtbot)
    set_lr(window, qtbot, "0.05")
    second = train(window, qtbot)
    folders = [run.folder for run in list_runs(path)]
    assert [str(f) for f in folders] == [first, second]
    assert all(f.parent == tmp_path / "spiral.runs" for f in folders)
    for folder in folders:
        info = read_run(folder)
        assert info.status == "finished" and [r["epoch"] for r in info.metrics] == ["1", "2"]
        assert (folder / "weights.safetensors").is_file()
    assert read_run(second).varied == {"lr": "0.05"}
    assert read_run(second).training["optimizer"]["lr"] == 0.05
    assert shown_labels(window) == ["adam lr=0.01", "lr=0.05"]
    plots = window.training.plots
    assert [run.label for run in plots.runs] == ["adam lr=0.01", "lr=0.05"]
    assert len({run.colour for run in plots.runs}) == 2

    table = window.training.runs_table
    select_row(window, qtbot, first)
    table.actions["runsToggle"].trigger()  # hide its curves, then show them again
    assert [run.visible for run in plots.runs] == [False, True]
    assert not any(curve.isVisible() for curve in plots.runs[0].curves)
    assert table.table.item(0, 0).checkState() == Qt.CheckState.Unchecked
    table.actions["runsToggle"].trigger()
    assert [run.visible for run in plots.runs] == [True, True]
    plots.run_list.setCurrentRow(1)  # untick the second run beside the plots: Space
    qtbot.keyClick(plots.run_list, Qt.Key.Key_Space)
    assert [run.visible for run in plots.runs] == [True, False]
    assert table.table.item(1, 0).checkState() == Qt.CheckState.Unchecked
    assert table.hidden == {second}
    qtbot.keyClick(plots.run_list, Qt.Key.Key_Space)
    assert table.table.item(1, 0).checkState() == Qt.CheckState.Checked and not table.hidden
    header = table.table.horizontalHeader()  # by best validation loss: up, then down
    best = [run.label for run in sorted(list_runs(path), key=lambda run: run.best_val_loss)]
    for order in (best, best[::-1]):
        qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton,
                         pos=QPoint(header.sectionViewportPosition(3) + 5, 5))
        assert shown_labels(window) == order
    window.doc.undo_stack.setClean()

    again = MainWindow(offer_recovery=False)  # a fresh window, as after closing LayerLab
    qtbot.addWidget(again)
    try:
        assert again.open_path(path, confirmed=True)
        assert shown_labels(again) == ["adam lr=0.01", "lr=0.05"]
        reopened = {run.key: run for run in again.training.plots.runs}
        assert list(reopened) == [first, second]
        for key in (first, second):  # the curves, read back from metrics.csv
            epochs, losses = reopened[key].val_loss.data()
            assert list(epochs) == [1, 2]
            assert list(losses) == [float(r["val_loss"]) for r in read_run(key).metrics]
        assert [run.colour for run in reopened.values()] == \
            [run.colour for run in plots.runs]

        (tmp_path / "b").mkdir()
        again.open_path(tiny_spiral(tmp_path / "b", "other"), confirmed=True)
        assert shown_labels(again) == [] and again.training.plots.runs == []
    finally:
        again.training.controller.shutdown()


def test_restore_load_rename_and_delete_a_run_from_the_table(window, qtbot, tmp_path):
    """Restore its settings (one undo step), load its weights, rename it (run.json keeps
    the label), delete it (asked first; its folder goes)."""
    path = tiny_spiral(tmp_path)
    window.open_path(path, confirmed=True)
    set_lr(window, qtbot, "0.05")
    key = train(window, qtbot)
    set_lr(window, qtbot, "0.2")
    undo = window.doc.undo_stack
    steps = undo.count()
    select_row(window, qtbot, key)
    window.training.runs_table.actions["runsRestore"].trigger()
    assert window.doc.project.training["optimizer"]["lr"] == 0.05
    assert window.training.lr.text() == "0.05"
    assert undo.count() == steps + 1 and undo.undoText() == "Restore Settings of lr=0.05"
    undo.undo()
    assert window.doc.project.training["optimizer"]["lr"] == 0.2

    reports = []
    window.show_report = lambda title, text: reports.append(text)
    window.training.runs_table.actions["runsLoadWeights"].trigger()
    qtbot.waitUntil(lambda: bool(reports), timeout=TIMEOUT)
    assert reports[0].startswith(f"Weights from {Path(key) / 'weights.safetensors'}:")
    saved = load_file(Path(key) / "weights.safetensors")
    model = window.training.controller.worker.trainer.model.state_dict()
    assert saved and all(torch.equal(model[name], value) for name, value in saved.items())

    table = window.training.runs_table
    grid = table.table
    rect = grid.visualRect(grid.model().index(table.row_of(key), 0))
    for gesture in (qtbot.mouseClick, qtbot.mouseDClick):  # a double-click, as Qt sees one
        gesture(grid.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: grid.state() == QAbstractItemView.State.EditingState)
    editor = grid.viewport().findChild(QLineEdit)
    editor.selectAll()
    qtbot.keyClicks(editor, "baseline")
    qtbot.keyClick(editor, Qt.Key.Key_Return)  # the delegate commits on the next turn
    qtbot.waitUntil(lambda: read_run(key).label == "baseline")
    assert [run.label for run in window.training.plots.runs] == ["baseline"]
    assert shown_labels(window) == ["baseline"]

    asked = []
    window.runs.ask_delete = lambda labels: asked.append(labels) or True
    select_row(window, qtbot, key)
    table.actions["runsDelete"].trigger()
    assert asked == [["baseline"]]
    assert not Path(key).exists() and list_runs(path) == []
    assert shown_labels(window) == [] and window.training.plots.runs == []


def test_the_progress_line_and_run_json_say_paused_then_stopped(window, qtbot, tmp_path):
    window.open_path(tiny_spiral(tmp_path), confirmed=True)
    controller, dock = window.training.controller, window.training
    with qtbot.waitSignal(controller.run_started, timeout=TIMEOUT) as started:
        window.actions["actionStep"].trigger()  # one batch, then paused
    key = started.args[0]
    qtbot.waitUntil(lambda: read_run(key).status == "paused", timeout=TIMEOUT)
    qtbot.waitUntil(lambda: dock.progress.format() == "paused · epoch 1/2 · step 1",
                    timeout=TIMEOUT)  # the step's record may arrive just after the file
    table = dock.runs_table
    assert table.table.item(table.row_of(key), 1).text() == "paused"
    window.actions["actionStop"].trigger()
    qtbot.waitUntil(lambda: controller.state == "idle", timeout=TIMEOUT)
    assert dock.progress.format() == "stopped · epoch 1/2 · step 1"
    assert read_run(key).status == "stopped"
    qtbot.waitUntil(lambda: table.table.item(table.row_of(key), 1).text() == "stopped")
    window.view.resetTransform()  # moving a node changes the drawing, not the model
    start = window.scene.nodes["fc1"].scenePos() + QPointF(60, 10)
    drag(qtbot, window, start, start + QPointF(0, 120))
    assert window.doc.undo_stack.undoText() == "Move"
    train(window, qtbot)  # Train after Stop continues the run, in its folder
    assert [run.key for run in list_runs(window.doc.project.path)] == [key]
    assert dock.progress.format() == "finished · epoch 2/2 · step 6"  # 160 rows, 64 a batch
    assert read_run(key).status == "finished"
    assert [row["step"] for row in read_run(key).metrics] == ["3", "6"]


def test_an_examples_runs_move_beside_it_on_its_first_save(window, qtbot, tmp_path,
                                                          monkeypatch):
    window.open_example("spiral")
    window.doc.project.training.update({"epochs": 1, "batch_size": 200})
    key = train(window, qtbot)
    assert window.doc.project.path is None and Path(key).is_dir()
    asked = []
    window.ask_save_changes = lambda: asked.append(1) or QMessageBox.StandardButton.Cancel
    assert not FilesMixin.confirm_discard(window)  # unsaved runs are unsaved changes
    assert asked == [1]
    target = tmp_path / "mine.layerlab.json"
    monkeypatch.setattr("layerlab.app.file_ops.QFileDialog.getSaveFileName",
                        lambda *args, **kwargs: (str(target), ""))
    window.actions["actionSave"].trigger()
    table = window.training.runs_table  # listed again once the torch thread moved them
    qtbot.waitUntil(lambda: [Path(key).parent for key in table.runs] == [runs_folder(target)],
                    timeout=TIMEOUT)
    moved = list_runs(target)
    assert [run.folder.parent for run in moved] == [runs_folder(target)]
    assert not Path(key).exists()
    assert [run.key for run in window.training.plots.runs] == [moved[0].key]
    assert list(table.runs) == [moved[0].key]
    assert FilesMixin.confirm_discard(window) and asked == [1]

    exported = tmp_path / "runs.csv"
    window.runs.export(exported)
    rows = list(csv.DictReader(exported.open()))
    assert [(r["label"], r["status"]) for r in rows] == [(moved[0].label, "finished")]
    assert float(rows[0]["final_val_loss"]) == float(moved[0].metrics[-1]["val_loss"])
