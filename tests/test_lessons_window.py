"""Help ▸ Lessons: every lesson file listed with its two sentences; Open writes the lesson's
project to a file of its own, opens it and trains the lesson's runs one after another."""

import json
from pathlib import Path

from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QMessageBox, QSpinBox

from layerlab.app import lessons_dialog
from layerlab.app.lessons_dialog import LessonsDialog
from layerlab.core.runs import read_run

from conftest import ROOT

LESSONS = ROOT / "assets" / "lessons"


def lesson_files() -> list[dict]:
    """The lesson files as they are on disk, in their order."""
    found = [json.loads(p.read_text()) | {"name": p.name.removesuffix(".lesson.json")}
             for p in LESSONS.glob("*.lesson.json")]
    return sorted(found, key=lambda lesson: (lesson["order"], lesson["name"]))


def open_lessons(qtbot, window) -> LessonsDialog:
    window.actions["actionLessons"].trigger()
    qtbot.waitUntil(lambda: window.findChild(LessonsDialog) is not None)
    dialog = window.findChild(LessonsDialog)
    qtbot.waitExposed(dialog)
    return dialog


def test_lessons_are_listed_and_open_trains_the_lessons_runs(window, qtbot, monkeypatch,
                                                             tmp_path):
    monkeypatch.setattr(lessons_dialog, "lessons_folder", lambda: tmp_path)
    dialog = open_lessons(qtbot, window)
    files = lesson_files()
    assert len(files) >= 5
    assert [dialog.list.item(i).text() for i in range(dialog.list.count())] == [
        f"{n}. {lesson['title']}" for n, lesson in enumerate(files, 1)]
    row = next(i for i, lesson in enumerate(files) if lesson["name"] == "sigmoid-relu")
    lesson = files[row]
    item = dialog.list.visualItemRect(dialog.list.item(row))
    qtbot.mouseClick(dialog.list.viewport(), Qt.MouseButton.LeftButton,
                     pos=QPoint(item.x() + 10, item.center().y()))
    assert dialog.list.currentRow() == row
    assert lesson["look_for"] in dialog.details.text()
    epochs = dialog.findChild(QSpinBox, "lessonEpochs")
    assert epochs.value() == lesson["epochs"]
    epochs.setFocus()
    epochs.lineEdit().selectAll()
    qtbot.keyClicks(epochs, "1")
    qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)

    path = tmp_path / "sigmoid-relu.layerlab.json"
    assert window.doc.project.path == path
    assert path.read_text() == (LESSONS / lesson["project"]).read_text()
    banner = window.compare.banner
    assert banner.isVisible() and lesson["look_for"] in banner.text.text()
    assert "run 1 of 2" in banner.text.text()
    qtbot.waitUntil(lambda: not window.compare.active, timeout=20_000)
    qtbot.waitUntil(lambda: window.training.controller.state == "idle")
    keys = [key for key, status in window.compare.ended if status == "finished"]
    assert len(keys) == 2
    assert {Path(key).parent for key in keys} == {tmp_path / "sigmoid-relu.runs"}
    kinds = []
    for key in keys:
        saved = json.loads((Path(key) / "project.layerlab.json").read_text())
        assert saved["training"]["epochs"] == 1
        kinds.append({n["type"] for n in saved["graph"]["nodes"] if n["id"].startswith("act")})
    assert kinds == [{"Sigmoid"}, {"ReLU"}]
    best = min(keys, key=lambda key: read_run(key).final_val_loss)
    assert [run.key for run in window.training.plots.runs if run.best] == [best]
    assert lesson["look_for"] in banner.text.text()  # still there to read the result by
    assert "2 runs done" in banner.text.text()

    dialog = open_lessons(qtbot, window)  # again: the first time's runs step aside
    dialog.list.setCurrentRow(row)
    with qtbot.waitSignal(window.training.controller.run_started, timeout=10_000):
        qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
    window.compare.stop()
    qtbot.waitUntil(lambda: not window.compare.active, timeout=10_000)
    assert window.training.runs_table.hidden == set(keys)
    assert {run.key for run in window.training.plots.runs if not run.visible} == set(keys)


def test_a_changed_copy_of_a_lesson_is_kept_unless_the_person_says_replace(
        window, qtbot, monkeypatch, tmp_path):
    monkeypatch.setattr(lessons_dialog, "lessons_folder", lambda: tmp_path)
    mine = tmp_path / "optimizers.layerlab.json"
    mine.write_text("my own changes")
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text: asked.append(
        text) or QMessageBox.StandardButton.No)
    dialog = open_lessons(qtbot, window)
    assert dialog.chosen.name == "optimizers"
    qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
    assert len(asked) == 1 and str(mine) in asked[0]
    assert mine.read_text() == "my own changes"
    assert window.doc.project.path != mine and not window.compare.active
