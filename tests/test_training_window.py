"""Training in the window: run controls, live plots, decision boundary, results."""

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSpinBox

from layerlab.core.trainer import EpochRecord, StepRecord


@pytest.fixture
def window(window):
    """The window, with every record the torch thread sent kept in window.records."""
    records = []
    window.training.controller.worker.records.connect(records.extend)
    window.records = records
    return window


def steps_done(win):
    return sum(isinstance(r, StepRecord) for r in win.records)


def set_spin(qtbot, win, name, value):
    spin = win.training.findChild(QSpinBox, name)
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, str(value))
    qtbot.keyClick(spin, Qt.Key.Key_Return)


def test_pause_step_resume_stop_and_the_plots_hold_what_the_trainer_sent(window, qtbot):
    actions = window.actions
    actions["actionTrain"].trigger()
    assert window.doc.structure_locked and not window.inspector.isEnabled()
    qtbot.waitUntil(lambda: steps_done(window) > 20, timeout=20_000)
    # window.records fills in the torch thread (a direct connection); the panels follow
    # through the GUI thread's event queue
    qtbot.waitUntil(lambda: window.training.boundary.last_image is not None, timeout=10_000)
    first_boundary = window.training.boundary.last_image.copy()
    actions["actionPause"].trigger()
    qtbot.waitUntil(lambda: window.training.controller.state == "paused")
    qtbot.wait(300)
    paused_at = steps_done(window)
    qtbot.wait(300)
    assert steps_done(window) == paused_at
    actions["actionStep"].trigger()
    qtbot.waitUntil(lambda: steps_done(window) == paused_at + 1, timeout=5000)
    actions["actionPause"].trigger()  # resume
    qtbot.waitUntil(lambda: steps_done(window) > paused_at + 400, timeout=30_000)
    actions["actionStop"].trigger()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=20_000)
    assert not window.doc.structure_locked and window.inspector.isEnabled()
    window.training.plots.redraw()
    run = window.training.plots.runs[0]
    sent = [r for r in window.records if isinstance(r, StepRecord)]
    x, y = run.loss.data()
    assert list(x) == [r.step for r in sent] and list(y) == [r.loss for r in sent]
    epochs = [r for r in window.records if isinstance(r, EpochRecord)]
    assert list(run.val_acc.data()[1]) == [r.val_accuracy for r in epochs]
    curve_x, _curve_y = run.curves[0].getData()
    assert len(curve_x) > 0
    assert not np.allclose(window.training.boundary.last_image, first_boundary)
    trainer = window.training.controller.worker.trainer
    assert [r.val_loss for r in trainer.history] == [r.val_loss for r in epochs]


def test_a_second_run_overlays_the_first_and_clearing_removes_them(window, qtbot):
    set_spin(qtbot, window, "epochs", 2)
    for _run in range(2):
        window.actions["actionReset"].trigger()
        window.actions["actionTrain"].trigger()
        qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=20_000)
    plots = window.training.plots
    assert [r.number for r in plots.runs] == [1, 2]
    assert plots.run_list.count() == 2
    plots.redraw()
    assert all(len(r.curves[0].getData()[0]) > 0 for r in plots.runs)
    plots.run_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert not plots.runs[0].curves[0].isVisible()
    plots.clear_button.click()
    assert plots.runs == [] and plots.run_list.count() == 0


def test_a_dataset_that_does_not_fit_shows_a_message_and_the_window_stays_usable(window,
                                                                                  qtbot):
    window.training.dataset.setCurrentText("digits")
    assert window.doc.project.training["dataset"]["name"] == "digits"
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: window.training.error.text() != "", timeout=20_000)
    assert "dataset digits gives samples of shape [64] or [1, 8, 8], but Input node input " \
           "expects [2]" in window.training.error.text()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=5000)
    assert not window.doc.structure_locked and window.actions["actionTrain"].isEnabled()
    window.doc.undo_stack.undo()
    assert window.doc.project.training["dataset"]["name"] == "spiral"


def test_digits_trains_and_the_confusion_matrix_matches_a_direct_count(window, qtbot):
    window.open_example("digits-mlp")
    set_spin(qtbot, window, "epochs", 3)
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: window.training.results.results is not None, timeout=60_000)
    trainer = window.training.controller.worker.trainer
    with torch.no_grad():
        predicted = trainer.model.eval()(trainer.x_val).argmax(1)
    expected = np.zeros((10, 10), dtype=np.int64)
    np.add.at(expected, (trainer.y_val.numpy(), predicted.numpy()), 1)
    results = window.training.results
    np.testing.assert_array_equal(results.results.confusion, expected)
    assert results.matrix.item(3, 3).text() == str(expected[3, 3])
    got = []
    results.cellSamples.connect(lambda t, p, idx: got.append(idx))
    results.matrix.cellClicked.emit(4, 4)
    assert len(got[0]) == expected[4, 4]
    assert results.layer.count() == 2  # fc1.weight, fc2.weight histograms


def test_node_thumbnails_show_each_nodes_output_over_the_plane(window, qtbot):
    set_spin(qtbot, window, "epochs", 3)
    window.actions["actionThumbnails"].trigger()
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=20_000)
    item = window.scene.nodes["tanh1"]
    assert item.thumbnail.isVisible() and not item.thumbnail.pixmap().isNull()
    assert not window.scene.nodes["loss"].thumbnail.isVisible()  # a loss has no plane
    window.actions["actionThumbnails"].trigger()
    assert not item.thumbnail.isVisible()


def test_export_and_fine_tuning_from_the_window(window, qtbot, tmp_path):
    reports = []
    window.show_report = lambda title, text: reports.append(text)
    set_spin(qtbot, window, "epochs", 2)
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=20_000)
    target = tmp_path / "spiral.py"
    window.training.controller.export("python", str(target))
    qtbot.waitUntil(lambda: len(reports) == 1, timeout=20_000)
    assert reports[0].startswith(f"Wrote {target}") and "class Model" in target.read_text()
    weights = tmp_path / "w.safetensors"
    window.training.controller.export("safetensors", str(weights))
    qtbot.waitUntil(lambda: len(reports) == 2, timeout=20_000)
    window.scene.select_only(["fc3"])
    window.actions["actionFreeze"].trigger()
    assert window.doc.graph.nodes["fc3"]["frozen"] and window.scene.nodes["fc3"].frozen
    window.doc.undo_stack.undo()
    assert "frozen" not in window.doc.graph.nodes["fc3"]
    from layerlab.app.commands import set_param
    window.doc.undo_stack.push(set_param(window.doc, "fc3", "out_features", 3))
    window.training.controller.load_weights(str(weights))
    qtbot.waitUntil(lambda: len(reports) == 3, timeout=20_000)
    assert "skipped fc3.weight: shape [2, 16] in the file, [3, 16] in the model" in reports[2]


def test_the_optimizers_arguments_are_edited_and_stored_in_the_project(window, qtbot):
    dock = window.training
    dock.optimizer.setCurrentText("momentum")
    assert dock.opt_args.text() == "momentum=0.9, weight_decay=0.0"
    assert "v ← μ·v + g" in dock.rule.text()
    dock.opt_args.setText("momentum=0.5, weight_decay=0.001")
    dock.opt_args.editingFinished.emit()
    optimizer = window.doc.project.training["optimizer"]
    assert optimizer == {"name": "momentum", "lr": 0.01, "momentum": 0.5, "weight_decay": 0.001}
    assert window.actions["actionUndo"].text() == "&Undo Change optimizer arguments"
    set_spin(qtbot, window, "epochs", 7)  # another field: the arguments stay as they are
    assert window.doc.project.training["optimizer"] == optimizer
    assert window.doc.project.training["epochs"] == 7
    window.doc.undo_stack.undo()
    window.doc.undo_stack.undo()
    assert window.doc.project.training["optimizer"]["name"] == "momentum"
    assert "momentum" not in window.doc.project.training["optimizer"]


def test_a_diverging_run_says_which_node_failed_and_train_starts_afresh(window, qtbot):
    window.open_example("digits-mlp")
    window.training.optimizer.setCurrentText("sgd")
    window.training.lr.setText("1e6")
    window.training.lr.editingFinished.emit()
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: window.training.error.text() != "", timeout=30_000)
    assert "step" in window.training.error.text()
    assert window.training.error.text().endswith("lower the learning rate (now 1e+06)")
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=5000)
    window.doc.undo_stack.undo()  # back to lr 0.001
    set_spin(qtbot, window, "epochs", 1)
    for _ in range(2):  # a finished run is not continued: Train trains again
        window.actions["actionTrain"].trigger()
        qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=30_000)
    assert [len(r.val_acc.data()[0]) for r in window.training.plots.runs[-2:]] == [1, 1]
