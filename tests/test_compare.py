"""Run ▸ Compare…: the dialog driven by keys and clicks, its runs trained one after another
by the window's own controller, the best marked; wrong values refused by name; Stop."""

import csv
import json
from pathlib import Path

from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QSpinBox

from layerlab.app.compare_dialog import CompareDialog
from layerlab.app.file_ops import example_project
from layerlab.core.runs import read_run


def open_dialog(qtbot, window) -> CompareDialog:
    qtbot.keyClick(window, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier
                   | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.findChild(CompareDialog) is not None)
    dialog = window.findChild(CompareDialog)
    qtbot.waitExposed(dialog)
    return dialog


def click(qtbot, box: QCheckBox) -> None:
    """A click on the box itself (a checkbox ignores clicks beside its label)."""
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))


def type_into(qtbot, widget, text: str) -> None:
    widget.setFocus()
    (widget.lineEdit() if isinstance(widget, QSpinBox) else widget).selectAll()
    qtbot.keyClicks(widget, text)


def vary_optimizers(qtbot, dialog, wanted: set[str], epochs: int) -> None:
    click(qtbot, dialog.findChild(QCheckBox, "vary_optimizer"))
    for name, box in dialog.settings[0].editor.boxes.items():
        if box.isChecked() != (name in wanted):
            click(qtbot, box)
    type_into(qtbot, dialog.findChild(QSpinBox, "compareEpochs"), str(epochs))


def wait_done(qtbot, window, timeout=20_000) -> None:
    qtbot.waitUntil(lambda: not window.compare.active, timeout=timeout)
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=timeout)


def final_val_loss(folder: Path) -> float:
    with open(folder / "metrics.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["val_loss"])


def saved_project(key: str) -> dict:
    return json.loads((Path(key) / "project.layerlab.json").read_text())


def test_two_optimizers_run_one_after_another_and_the_best_is_marked(window, qtbot):
    before = window.doc.project.to_dict()
    dialog = open_dialog(qtbot, window)
    vary_optimizers(qtbot, dialog, {"sgd", "adam"}, epochs=2)
    assert dialog.count.text() == "2 runs"
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "run 1 of 2: sgd" in window.compare.banner.text.text())
    wait_done(qtbot, window)
    keys = [key for key, _ in window.compare.ended]
    assert [status for _, status in window.compare.ended] == ["finished", "finished"]
    sgd, adam = (saved_project(key) for key in keys)
    assert sgd["graph"] == adam["graph"]
    assert sgd["training"]["optimizer"] == {"name": "sgd", "lr": 0.01}
    assert adam["training"]["optimizer"] == {"name": "adam", "lr": 0.01}
    sgd["training"].pop("optimizer")
    adam["training"].pop("optimizer")
    assert sgd["training"] == adam["training"] and sgd["training"]["epochs"] == 2
    assert [read_run(key).label for key in keys] == ["sgd", "adam"]
    best = min(keys, key=lambda key: final_val_loss(Path(key)))  # from the files themselves
    plots = window.training.plots
    assert [run.key for run in plots.runs if run.best] == [best]
    assert window.training.runs_table.best == best
    assert "2 runs done" in window.compare.banner.text.text()
    assert read_run(best).label in window.compare.banner.text.text()
    assert window.doc.project.to_dict() == before  # the runs were variants; it is unchanged
    assert window.actions["actionCompare"].isEnabled()
    window.actions["actionExample_digits_mlp"].trigger()  # another project: news no more
    assert not window.compare.banner.isVisible()


def test_a_wrong_learning_rate_is_refused_by_name_and_nothing_runs(window, qtbot):
    dialog = open_dialog(qtbot, window)
    click(qtbot, dialog.findChild(QCheckBox, "vary_lr"))
    values = dialog.findChild(QLineEdit, "lrValues")
    type_into(qtbot, values, "0.01, -3")
    assert dialog.count.text() == "2 runs"
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible()
    assert dialog.error.text().startswith("learning rate must be a number above 0")
    assert "'-3'" in dialog.error.text()
    assert values.property("invalid") is True and values.toolTip() == dialog.error.text()
    type_into(qtbot, values, "0.01, 0.01")
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert dialog.error.text().startswith("learning rate: each value once")
    assert not window.compare.active and window.training.controller.state == "idle"
    assert window.training.controller.runs() == []
    dialog.reject()


def test_a_dropout_comparison_changes_only_that_node(window, qtbot):
    project = example_project("spiral")
    g = project.graph
    for node, after, before in (("drop1", "tanh1", "fc2"), ("drop2", "tanh2", "fc3")):
        g.remove_edge(after, before)
        g.add_node(node, type="Dropout", params={"p": 0.1}, pos=[0, 0])
        g.add_edge(after, node)
        g.add_edge(node, before)
    window.set_project(project)
    dialog = open_dialog(qtbot, window)
    click(qtbot, dialog.findChild(QCheckBox, "vary_p"))
    nodes = dialog.findChild(QComboBox, "node_p")
    assert [nodes.itemText(i) for i in range(nodes.count())] == ["drop1", "drop2"]
    nodes.setFocus()
    qtbot.keyClick(nodes, Qt.Key.Key_Down)
    assert nodes.currentText() == "drop2"
    type_into(qtbot, dialog.findChild(QLineEdit, "dropoutValues"), "0, 0.5")
    type_into(qtbot, dialog.findChild(QSpinBox, "compareEpochs"), "1")
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    wait_done(qtbot, window)
    runs = [saved_project(key) for key, _ in window.compare.ended]
    assert [read_run(key).varied for key, _ in window.compare.ended] == [
        {"drop2.p": "0"}, {"drop2.p": "0.5"}]
    nodes_of = [{n["id"]: n for n in run["graph"]["nodes"]} for run in runs]
    assert [n["drop2"]["params"]["p"] for n in nodes_of] == [0, 0.5]
    for n in nodes_of:
        n.pop("drop2")
    assert nodes_of[0] == nodes_of[1]
    assert nodes_of[0]["drop1"]["params"] == {"p": 0.1}
    assert runs[0]["training"] == runs[1]["training"]


def test_stop_ends_the_running_run_and_drops_the_rest_of_the_queue(window, qtbot):
    dialog = open_dialog(qtbot, window)
    vary_optimizers(qtbot, dialog, {"sgd", "momentum", "adam"}, epochs=500)
    with qtbot.waitSignal(window.training.controller.run_started, timeout=10_000):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert not window.actions["actionCompare"].isEnabled()
    stop = window.compare.banner.stop
    assert stop.isVisible()
    qtbot.mouseClick(stop, Qt.MouseButton.LeftButton)
    wait_done(qtbot, window)
    qtbot.wait(300)  # nothing else starts
    assert window.training.controller.state == "idle"
    assert [status for _, status in window.compare.ended] == ["stopped"]
    assert [run.label for run in window.training.controller.runs()] == ["sgd"]
    assert "stopped after 0 of 3 runs" in window.compare.banner.text.text()
    assert window.compare.banner.close_button.isVisible() and not stop.isVisible()
