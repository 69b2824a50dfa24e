"""The window's side of the user's own data: File ▸ New from Data…, the data path and target
in the training panel, and "Fit graph to data" as one undo step."""

from __future__ import annotations

import json

import pytest
import torch
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QComboBox, QLabel, QLineEdit, QPushButton

from layerlab.core.project import load_project

IRIS_LIKE = "".join(f"{1 + i % 7},{2 + i % 5},{i % 3 * 2.5 + i % 4},{['a', 'b', 'c'][i % 3]}\n"
                    for i in range(60))


def write_table(tmp_path, name: str = "own.csv") -> str:
    path = tmp_path / name
    path.write_text("p,q,r,kind\n" + IRIS_LIKE)
    return str(path)


def test_new_from_data_makes_the_starter_project(window, qtbot, tmp_path):
    path = write_table(tmp_path)
    seen: dict[str, str] = {}

    def drive() -> None:
        dialog = QApplication.activeModalWidget()
        edit = dialog.findChild(QLineEdit, "newDataPath")
        qtbot.keyClicks(edit, path)
        qtbot.keyClick(edit, Qt.Key.Key_Return)
        seen["open"] = str(dialog.isVisible())  # Enter read the data, nothing more
        seen["summary"] = dialog.findChild(QLabel, "newDataSummary").text()
        seen["targets"] = ",".join(
            dialog.findChild(QComboBox, "newDataTarget").itemText(i) for i in range(4))
        qtbot.mouseClick(dialog.findChild(QPushButton, "newDataCreate"),
                         Qt.MouseButton.LeftButton)

    QTimer.singleShot(0, drive)
    window.actions["actionNewFromData"].trigger()
    assert seen["targets"] == "p,q,r,kind" and seen["open"] == "True"
    assert seen["summary"] == ("Classification into 3 classes from inputs of shape [3]. Class "
                               "balance: a 20 (33%), b 20 (33%), c 20 (33%).")
    graph = window.doc.graph
    assert graph.nodes["input"]["params"]["shape"] == [3]
    assert graph.nodes["scale"]["type"] == "Standardize"
    assert graph.nodes["out"]["params"]["out_features"] == 3
    dataset = window.doc.project.training["dataset"]
    assert dataset["name"] == "csv" and dataset["options"]["path"] == path
    panel = window.training.data_panel
    assert panel.isVisible() and panel.changes == []


def test_the_dialog_previews_images_and_refuses_what_it_cannot_use(qtbot, tmp_path):
    from layerlab.app.new_from_data import NewFromDataDialog
    from test_imagefolder import write_folder

    dialog = NewFromDataDialog()
    qtbot.addWidget(dialog)
    dialog.set_path(str(write_folder(tmp_path / "shapes", per_class=2)))
    assert dialog.findChild(QLabel, "newDataImages").pixmap().width() > 100
    assert dialog.project().graph.nodes["input"]["params"]["shape"] == [3, 20, 20]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n,3\n")
    dialog.set_path(str(tmp_path / "bad.csv"))
    assert dialog.findChild(QLabel, "newDataSummary").text() == (
        f"{tmp_path / 'bad.csv'} row 3, column a: the value is missing; fill it in, drop the "
        "row, or set option missing to fill")
    assert not dialog.findChild(QPushButton, "newDataCreate").isEnabled()
    assert dialog.project() is None


def test_fit_graph_to_data_is_listed_before_train_and_undone_in_one_step(window, qtbot,
                                                                        tmp_path):
    path = write_table(tmp_path)
    from layerlab.core.starter import new_project

    out = tmp_path / "p.layerlab.json"
    project = new_project(tmp_path / "own.csv", out)
    project.graph.nodes["input"]["params"]["shape"] = [5]
    project.graph.nodes["out"]["params"]["out_features"] = 10
    project.graph.nodes["loss"]["type"] = "MSELoss"
    project.save(out)
    window.open_path(out, confirmed=True)
    panel = window.training.data_panel
    problems = panel.findChild(QLabel, "dataFitProblems").text().splitlines()
    assert problems == [
        "• the data gives samples of shape [3], but Input node input expects [5]",
        "• the data has 3 classes, but loss is MSELoss, a regression loss",
        "• the data has 3 classes, but out gives 10 outputs"]
    button = panel.findChild(QPushButton, "fitGraphButton")
    assert button.isVisible()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    graph = window.doc.graph
    assert graph.nodes["input"]["params"]["shape"] == [3]
    assert graph.nodes["loss"]["type"] == "CrossEntropyLoss"
    assert graph.nodes["out"]["params"]["out_features"] == 3
    assert not button.isVisible() and not window.doc.analysis.errors
    assert window.doc.undo_stack.undoText() == "Fit graph to data"
    window.actions["actionUndo"].trigger()  # one step back to all three
    assert graph.nodes["input"]["params"]["shape"] == [5]
    assert window.doc.graph.nodes["loss"]["type"] == "MSELoss"
    assert len(panel.changes) == 3 and button.isVisible()
    assert path == str(tmp_path / "own.csv")


def test_the_data_path_and_target_are_edited_in_the_training_panel(window, qtbot, tmp_path):
    write_table(tmp_path)
    out = tmp_path / "p.layerlab.json"
    from layerlab.core.starter import new_project

    new_project(tmp_path / "own.csv", out).save(out)
    window.open_path(out, confirmed=True)
    panel = window.training.data_panel
    edit = panel.findChild(QLineEdit, "dataPath")
    assert edit.text() == "own.csv"  # relative to the project file
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "two.csv").write_text("x,y,z,label\n" + IRIS_LIKE)
    edit.selectAll()
    qtbot.keyClicks(edit, "sub/two.csv")
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    options = window.doc.project.training["dataset"]["options"]
    assert options["path"] == "sub/two.csv" and "target" not in options
    target = panel.findChild(QComboBox, "dataTarget")
    assert [target.itemText(i) for i in range(target.count())] == ["x", "y", "z", "label"]
    target.setCurrentText("x")
    assert window.doc.project.training["dataset"]["options"]["target"] == "x"
    assert "the data has" in panel.findChild(QLabel, "dataFitProblems").text()
    window.actions["actionUndo"].trigger()
    window.actions["actionUndo"].trigger()
    assert window.doc.project.training["dataset"]["options"]["path"] == "own.csv"
    assert json.loads(out.read_text())["training"]["dataset"]["options"]["path"] == "own.csv"
    assert load_project(out).name == "own"


def test_a_run_from_the_window_reads_the_table_beside_the_project(window, qtbot, tmp_path,
                                                                  monkeypatch):
    from layerlab.core.starter import new_project

    write_table(tmp_path)
    out = tmp_path / "p.layerlab.json"
    project = new_project(tmp_path / "own.csv", out)
    project.training["epochs"] = 3
    project.save(out)
    monkeypatch.chdir(tmp_path.parent)  # the table is found beside the project, not here
    window.open_path(out, confirmed=True)
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: window.training.results.results is not None, timeout=30_000)
    matrix = window.training.results.matrix
    assert [matrix.verticalHeaderItem(i).text() for i in range(3)] == ["a", "b", "c"]
    assert window.training.error.text() == ""
    trainer = window.training.controller.worker.trainer
    scale = trainer.model.scale
    torch.testing.assert_close(scale.mean, trainer.x_train.mean(0))  # adapted at the start


def test_the_inspector_shows_standardize_statistics_and_adapts_on_demand(window, qtbot,
                                                                         tmp_path):
    from PySide6.QtWidgets import QTableWidget

    from layerlab.core.datasets import load_dataset, split_indices
    from layerlab.core.starter import new_project

    write_table(tmp_path)
    out = tmp_path / "p.layerlab.json"
    new_project(tmp_path / "own.csv", out).save(out)
    window.open_path(out, confirmed=True)
    window.select_node("scale")
    inspector = window.inspector
    note = inspector.findChild(QLabel, "statisticsNote")
    assert note.text().startswith("Not adapted yet")
    qtbot.mouseClick(inspector.findChild(QPushButton, "adaptToData"),
                     Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: note.text().startswith("Measured on"), timeout=20_000)
    data = load_dataset("csv", {"path": str(tmp_path / "own.csv")})
    train, _ = split_indices(len(data), 0.2, seed=0)
    assert note.text() == f"Measured on {len(train)} training rows."
    table = inspector.findChild(QTableWidget, "statisticsTable")
    assert [table.verticalHeaderItem(i).text() for i in range(3)] == ["p", "q", "r"]
    expected = data.x[train].mean(0)
    assert [float(table.item(i, 0).text()) for i in range(3)] == pytest.approx(
        expected.tolist(), rel=1e-3)


def test_a_regression_run_plots_r2_where_a_classification_plots_accuracy(window, qtbot,
                                                                         tmp_path):
    from layerlab.core.starter import new_project

    rows = "".join(f"{i % 7},{i % 5},{(i % 7) * 1.5 - (i % 5) * 0.7 + 0.01 * i}\n"
                   for i in range(80))
    (tmp_path / "r.csv").write_text("a,b,y\n" + rows)
    out = tmp_path / "r.layerlab.json"
    project = new_project(tmp_path / "r.csv", out)
    project.training["epochs"] = 2
    project.save(out)
    window.open_path(out, confirmed=True)
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle" and
                    window.training.plots.runs and
                    len(window.training.plots.runs[-1].val_acc.data()[0]) == 2,
                    timeout=30_000)
    trainer = window.training.controller.worker.trainer
    epochs, scores = window.training.plots.runs[-1].val_acc.data()
    assert list(epochs) == [1, 2]
    assert list(scores) == pytest.approx([r.val_r2 for r in trainer.history])
