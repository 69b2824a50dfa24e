"""A network too large for this machine's memory to train (its weights and their gradients
alone: 8 bytes a parameter) is a problem of the graph, named at its largest node, before
Train: in the inspector, on the canvas, in `layerlab check`, and refused by the Trainer
(rather than failing as it starts, or having the system end the program)."""

from __future__ import annotations

import os

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSpinBox

from layerlab.app import document
from layerlab.cli import main
from layerlab.core.errors import GraphError, format_error
from layerlab.core.memory import machine_memory, memory_problems
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.trainer import Trainer

from conftest import EXAMPLES
from helpers import chain_graph

GB = 10**9


def test_the_sentence_names_the_largest_node_and_the_sizes():
    counts = {"small": 1_000, "big": 5 * GB, "other": 0}
    need = 8 * (5 * GB + 1_000)
    assert memory_problems(counts, need) == []  # exactly fits
    assert memory_problems(counts, need - 1) == [
        ("big", "training needs 40 GB for the network's weights and their gradients "
                "(5,000,001,000 parameters, 5,000,000,000 of them here), more than this "
                "machine's 40 GB of memory; make it smaller")]
    assert memory_problems(counts, None) == []  # a system that does not say: no guess
    assert memory_problems({}, 0) == []
    # every node with a tenth or more, largest first
    tenth = {"a": 200, "b": 300, "c": 600, "d": 199, "e": 701}  # 2,000 in all
    assert [node for node, _ in memory_problems(tenth, 0)] == ["e", "c", "b", "a"]


def test_the_machine_memory_is_what_the_kernel_reports():
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("no /proc/meminfo here")
    with open("/proc/meminfo") as meminfo:
        name, kb, _ = meminfo.readline().split()
    assert name == "MemTotal:" and machine_memory() == int(kb) * 1024


def _huge():
    """A Linear of 2**44 units: a few digits too many (5 * 2**44 + 2 parameters in all)."""
    return chain_graph([2], ("Linear", {"out_features": 2**44}), ("ReLU", {}),
                       ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")


def test_the_trainer_refuses_before_building_anything():
    project = Project(graph=_huge())
    with pytest.raises(GraphError) as caught:
        Trainer(project, settings_from(project.training))
    assert caught.value.errors == memory_problems({"n0": 3 * 2**44, "n2": 2 * 2**44 + 2},
                                                  machine_memory())
    assert [node for node, _ in caught.value.errors] == ["n0", "n2"]


def test_check_lists_it_and_fails(tmp_path, capsys):
    path = tmp_path / "huge.layerlab.json"
    Project(graph=_huge()).save(path)
    assert main(["check", str(path)]) == 1
    problems = memory_problems({"n0": 3 * 2**44, "n2": 2 * 2**44 + 2}, machine_memory())
    assert capsys.readouterr().err.splitlines() == [f"{path}: {format_error(*p)}"
                                                    for p in problems]


def test_the_window_shows_it_before_train_and_undo_clears_it(window, qtbot, monkeypatch):
    """fc1's out_features typed with a few digits too many on an 8 GB machine: the
    inspector lists it at fc2 (fed by fc1's units: the largest) and at fc1, the canvas
    marks both, Train is refused; undo clears it all."""
    monkeypatch.setattr(document, "machine_memory", lambda: 8 * GB)
    assert window.open_path(EXAMPLES / "spiral.layerlab.json", confirmed=True)
    window.scene.select_only(["fc1"])
    spin = window.inspector.findChild(QSpinBox, "param_out_features")
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, "1600000000")  # 16, and seven zeros too many
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    counts = window.doc.counts
    assert counts["fc1"] == 3 * 1_600_000_000 and counts["fc2"] == 16 * 1_600_000_000 + 16
    problems = memory_problems(counts, 8 * GB)
    assert [node for node, _ in problems] == ["fc2", "fc1"]
    assert window.doc.analysis.errors == problems
    assert window.scene.nodes["fc1"].errors and window.scene.nodes["fc2"].errors
    window.scene.clearSelection()
    items = [window.inspector.errors.item(i).text()
             for i in range(window.inspector.errors.count())]
    assert items == [format_error(*problem) for problem in problems]
    assert window.valid_label.text() == "✗ 2 problem(s)"
    qtbot.keyClick(window, Qt.Key.Key_F5)  # Train
    assert window.training.controller.state == "idle"
    assert window.training.error.text() == \
        "the graph has problems; fix them first (see the inspector)"
    window.doc.undo_stack.undo()
    assert window.doc.analysis.ok and window.valid_label.text() == "✓ valid"
