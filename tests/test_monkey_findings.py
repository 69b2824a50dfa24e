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


def test_a_run_started_from_step_through_ends_it_with_the_run(window, qtbot):
    """F11, F5, Shift+F5 used to leave step-through shown on an unlocked graph: deleting a
    node, then Right, raised NetworkXError in the stepper."""
    keys_to_canvas(window, qtbot, (Qt.Key.Key_F11, NONE))
    qtbot.waitUntil(lambda: window.stepper.active, timeout=20_000)
    keys_to_canvas(window, qtbot, (Qt.Key.Key_F5, NONE))
    assert window.training.controller.state == "running"
    keys_to_canvas(window, qtbot, (Qt.Key.Key_F5, SHIFT))
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=20_000)
    assert not window.stepper.active and not window.doc.structure_locked
    window.scene.select_only(["tanh1"])
    keys_to_canvas(window, qtbot, (Qt.Key.Key_Delete, NONE), (Qt.Key.Key_Right, NONE))
    assert "tanh1" not in window.doc.graph


def test_a_step_recorded_before_the_graph_changed_is_not_shown(window, qtbot):
    traces = []
    window.training.controller.worker.traced.connect(traces.append)
    keys_to_canvas(window, qtbot, (Qt.Key.Key_F11, NONE))
    qtbot.waitUntil(lambda: window.stepper.active, timeout=20_000)
    keys_to_canvas(window, qtbot, (Qt.Key.Key_F11, NONE))  # leave
    window.scene.select_only(["tanh1"])
    keys_to_canvas(window, qtbot, (Qt.Key.Key_Delete, NONE))
    window.training.controller.worker.traced.emit(traces[0])  # as if it came late
    assert not window.stepper.active and not window.doc.structure_locked
    keys_to_canvas(window, qtbot, (Qt.Key.Key_Right, NONE))
    window.doc.undo_stack.undo()  # tanh1 is back: the same step is shown, locked
    window.training.controller.worker.traced.emit(traces[0])
    assert window.stepper.active and window.doc.structure_locked
