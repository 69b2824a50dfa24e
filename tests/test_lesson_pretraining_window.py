"""Help ▸ Lessons ▸ the pre-training lesson in the window: the pre-training run trains
alone first, then the four variants, those that start from it from its final weights; each
is a run in the runs table, and the best is picked among the variants only."""

import dataclasses
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSpinBox
from safetensors.torch import load_file

from layerlab.app import lessons_dialog
from layerlab.core.lessons import PRETRAIN_LABEL, Pretrain, lessons
from layerlab.core.runs import list_runs, read_run
from test_lessons_window import open_lessons

VARIANTS = ["from scratch", "full fine-tuning", "body frozen", "LoRA"]


def one_epoch_pretraining():
    """The bundled lessons, the pre-training lesson's first run cut to one epoch."""
    return [dataclasses.replace(lesson, pretrain=Pretrain(lesson.pretrain.project_file, 1))
            if lesson.pretrain else lesson for lesson in lessons()]


def test_the_window_pretrains_first_then_fine_tunes_from_its_weights(window, qtbot,
                                                                     monkeypatch, tmp_path):
    monkeypatch.setattr(lessons_dialog, "lessons_folder", lambda: tmp_path)
    monkeypatch.setattr(lessons_dialog, "lessons", one_epoch_pretraining)
    dialog = open_lessons(qtbot, window)
    dialog.list.setCurrentRow(next(i for i, lesson in enumerate(dialog.lessons)
                                   if lesson.name == "pretraining"))
    assert f"{PRETRAIN_LABEL} (1 epochs), then:" in dialog.details.text()
    epochs = dialog.findChild(QSpinBox, "lessonEpochs")
    epochs.setFocus()
    epochs.lineEdit().selectAll()
    qtbot.keyClicks(epochs, "2")
    qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
    assert "run 1 of 1: pre-training" in window.compare.banner.text.text()

    path = tmp_path / "pretraining.layerlab.json"
    qtbot.waitUntil(lambda: len(list_runs(path)) == 5 and not window.compare.active
                    and window.training.controller.state == "idle", timeout=60_000)
    runs = {run.label: run for run in list_runs(path)}
    assert list(runs) == [PRETRAIN_LABEL, *VARIANTS]
    assert all(run.status == "finished" for run in runs.values())
    assert [len(run.metrics) for run in runs.values()] == [1, 2, 2, 2, 2]
    table = window.training.runs_table.table
    assert {table.item(row, 0).text() for row in range(table.rowCount())} >= set(runs)
    assert "4 runs done" in window.compare.banner.text.text()
    assert window.training.runs_table.hidden == {runs[PRETRAIN_LABEL].key}  # its own scale
    best = [run.key for run in window.training.plots.runs if run.best]
    assert best == [min((runs[label].key for label in VARIANTS),
                        key=lambda key: read_run(Path(key)).final_val_loss)]

    weights = {label: load_file(run.folder / "weights.safetensors")
               for label, run in runs.items()}
    pre = weights[PRETRAIN_LABEL]
    key = "block2.attn.qkv.weight"
    assert (weights["body frozen"][key] == pre[key]).all()  # started from it, frozen
    assert (weights["LoRA"][key] == pre[key]).all()  # frozen under its adapters
    assert not (weights["from scratch"][key] == pre[key]).all()
