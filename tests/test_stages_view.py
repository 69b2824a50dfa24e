"""View ▸ Pipeline Stages (Ctrl+Shift+P) on the real window: each node filled with its
stage's colour from core/stages.py; the stage count and balance in a toolbar; Start Stage Here
from the node menu pins a cut in one undo step that the saved file keeps."""

import json

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QContextMenuEvent
from PySide6.QtWidgets import QApplication

import layerlab
from layerlab.core.stages import pipeline_plan

CTRL_SHIFT = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier


def fills(window):
    return {node: item.fill.name() if item.fill is not None else None
            for node, item in window.scene.nodes.items()}


def start_stage_from_node_menu(window, qtbot, node):
    view = window.view
    at = view.mapFromScene(window.scene.nodes[node].sceneBoundingRect().center())
    chosen = []

    def choose():
        menu = QApplication.activePopupWidget()
        action = next(a for a in menu.actions() if a.objectName() == "actionStartStage")
        menu.close()
        action.trigger()
        chosen.append(True)

    QTimer.singleShot(50, choose)
    view.contextMenuEvent(QContextMenuEvent(QContextMenuEvent.Reason.Mouse, at,
                                            view.viewport().mapToGlobal(at)))
    qtbot.waitUntil(lambda: bool(chosen))


@pytest.mark.qt_log_ignore("does not support raise", "does not support grabbing the keyboard",
                           extend=True)  # the offscreen platform, when the node menu opens
def test_stages_colour_the_nodes_and_a_pinned_start_is_one_undo_step(window, qtbot,
                                                                       tmp_path):
    bar = window.stages.bar
    assert set(fills(window).values()) == {None} and not bar.isVisible()
    qtbot.keyClick(window, Qt.Key.Key_P, CTRL_SHIFT)
    assert bar.isVisible()
    # the spiral MLP by parameters: fc1 (48) | tanh1, fc2, tanh2, fc3 (272 + 34)
    colour = fills(window)
    assert colour["input"] is None and colour["loss"] is None
    assert colour["fc1"] != colour["tanh1"] == colour["fc2"] == colour["fc3"]
    assert window.scene.nodes["fc2"].stage_label == "stage 2"
    assert bar.note.text() == "stage 1: 48 params · stage 2: 306 params"

    steps = window.doc.undo_stack.count()
    bar.count.setFocus()
    qtbot.keyClick(bar.count, Qt.Key.Key_Up)  # 3 stages: fc1 | tanh1, fc2 | tanh2, fc3
    assert window.doc.project.training["pipeline_stages"] == 3
    colour = fills(window)
    assert len({colour["fc1"], colour["fc2"], colour["fc3"]}) == 3
    assert colour["tanh1"] == colour["fc2"] and colour["tanh2"] == colour["fc3"]
    window.doc.undo_stack.undo()
    assert "pipeline_stages" not in window.doc.project.training
    assert window.doc.undo_stack.count() == steps + 1

    path = tmp_path / "spiral.layerlab.json"
    window.doc.project.save(path)
    before = path.read_bytes()
    steps = window.doc.undo_stack.index()
    start_stage_from_node_menu(window, qtbot, "fc3")
    assert window.doc.undo_stack.index() == steps + 1
    colour = fills(window)
    assert colour["fc1"] == colour["tanh2"] != colour["fc3"]
    window.doc.project.save(path)
    saved = json.loads(path.read_text())
    assert [n["id"] for n in saved["graph"]["nodes"] if n.get("stage_start")] == ["fc3"]
    project = layerlab.load_project(path)
    assert pipeline_plan(project.graph, 2) == [["fc1", "tanh1", "fc2", "tanh2"], ["fc3"]]
    window.doc.undo_stack.undo()
    window.doc.project.save(path)
    assert path.read_bytes() == before
    assert fills(window)["fc3"] == fills(window)["fc2"]

    qtbot.keyClick(bar.balance, Qt.Key.Key_Down)  # by FLOPs: fc1 32 · fc2 512 · fc3 64
    assert window.doc.project.training["pipeline_balance"] == "flops"
    assert bar.note.text() == "stage 1: 64 FLOPs · stage 2: 576 FLOPs"

    window.scene.select_only(["loss"])
    window.stages.pin.trigger()
    assert window.statusBar().currentMessage() == (
        "Node loss cannot start a pipeline stage: it is not a layer of the model (an Input "
        "or a loss node).")
    assert window.doc.undo_stack.index() == steps + 1  # the FLOPs choice only

    window.findChild(QAction, "actionPipelineStages").trigger()  # View ▸ Pipeline Stages
    assert set(fills(window).values()) == {None} and not bar.isVisible()
