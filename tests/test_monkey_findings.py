"""Regressions for what the monkey test (tests/monkey.py) found, each driven through the
real widgets."""

import math

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit

from monkey_gestures import type_into
from monkey_support import strict_json


def test_the_inspector_keeps_inf_and_nan_out_of_the_project(window):
    window.open_example("resnet-block")
    window.scene.select_only(["bn1"])
    eps = window.inspector.findChild(QLineEdit, "param_eps")
    before = window.doc.graph.nodes["bn1"].get("params", {}).get("eps")
    for typed in ("1e309", "-inf", "nan", "Infinity"):
        type_into(eps, typed, "return")
        assert window.doc.graph.nodes["bn1"].get("params", {}).get("eps") == before, typed
        assert "e0443e" in eps.styleSheet() and "not a valid value" in eps.toolTip(), typed
    window.scene.select_only(["pool"])
    size = window.inspector.findChild(QLineEdit, "param_output_size")
    type_into(size, "1, 1e309", "return")
    type_into(size, "[[NaN]]", "return")
    assert window.doc.graph.nodes["pool"]["params"] == {"output_size": 1}
    strict_json(window.doc.project.to_json())  # still a JSON file
    window.scene.select_only(["bn1"])
    eps = window.inspector.findChild(QLineEdit, "param_eps")
    type_into(eps, "1e-3", "return")  # a finite value still goes in, as one undo step
    assert math.isclose(window.doc.graph.nodes["bn1"]["params"]["eps"], 1e-3)
    assert window.actions["actionUndo"].text() == "&Undo Change eps"


def keys_to_canvas(window, qtbot, *keys):
    window.activateWindow()
    window.view.setFocus()
    for key, modifier in keys:
        qtbot.keyClick(window.view, key, modifier)


NONE, SHIFT = Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.ShiftModifier


def test_train_during_step_through_leaves_the_graph_locked_under_it(window, qtbot):
    """F11, F5, Shift+F5 used to unlock the graph under the step shown (monkey F5): Delete,
    then Right, raised NetworkXError in the stepper. Train is refused during step-through."""
    keys_to_canvas(window, qtbot, (Qt.Key.Key_F11, NONE))
    qtbot.waitUntil(lambda: window.stepper.active, timeout=20_000)
    keys_to_canvas(window, qtbot, (Qt.Key.Key_F5, NONE), (Qt.Key.Key_F5, SHIFT))
    assert window.training.controller.state == "idle"
    assert window.stepper.active and window.doc.structure_locked
    window.scene.select_only(["tanh1"])
    keys_to_canvas(window, qtbot, (Qt.Key.Key_Delete, NONE), (Qt.Key.Key_Right, NONE))
    assert "tanh1" in window.doc.graph
