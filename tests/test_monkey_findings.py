"""Regressions for what the monkey test (tests/monkey.py) found, each driven through the
real widgets."""

import json
import math

from PySide6.QtWidgets import QLineEdit

from monkey_gestures import type_into


def strict_json(text):
    """JSON as the file format means it: Infinity and NaN are not numbers there."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


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
