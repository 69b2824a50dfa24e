"""File ▸ Import Model… in the window: a refusal is one sentence in the dialog, which stays
open; an import replaces the canvas with the model's graph, opens its groups collapsed, and
loads its weights into the model the next run trains."""

from __future__ import annotations

import textwrap

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialog, QLabel, QLineEdit, QPushButton

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    """Sized for the default example's data (the spiral: 2 features, 2 classes)."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 16), nn.Tanh())
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        return self.head(torch.flatten(self.conv(x), 1))


class Odd(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()
'''


def _fill_and_import(qtbot, source: str, shape: str, args: str) -> QDialog:
    """Type into the open Import dialog and press Import; returns the dialog."""
    dialog = QApplication.activeModalWidget()
    assert dialog is not None and dialog.objectName() == "importDialog"
    for name, text in (("importSource", source), ("importShape", shape), ("importArgs", args)):
        field = dialog.findChild(QLineEdit, name)
        field.clear()
        qtbot.keyClicks(field, text)
    qtbot.mouseClick(dialog.findChild(QPushButton, "importButton"), Qt.MouseButton.LeftButton)
    return dialog


def test_import_dialog_refuses_in_one_sentence_then_imports_with_weights(window, qtbot,
                                                                         tmp_path):
    model = tmp_path / "model.py"
    model.write_text(textwrap.dedent(NET))
    reports: list[tuple[str, str]] = []
    window.show_report = lambda title, text: reports.append((title, text))
    errors: list[str] = []

    def refused_then_fixed() -> None:
        dialog = _fill_and_import(qtbot, f"{model}:Odd", "3,8,8", "")
        errors.append(dialog.findChild(QLabel, "importError").text())
        assert dialog.isVisible()  # stays open to be corrected
        _fill_and_import(qtbot, f"{model}:Net", "2", '{"num_classes": 2}')

    QTimer.singleShot(0, refused_then_fixed)
    qtbot.keyClick(window, Qt.Key.Key_I, Qt.KeyboardModifier.ControlModifier)
    assert errors and "torch.fft.rfft" in errors[0] and "model.py:" in errors[0]
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    graph = window.doc.project.graph
    assert graph.nodes["head"]["params"]["out_features"] == 2
    assert graph.nodes["body_0"]["type"] == "Linear"
    assert graph.nodes["loss"]["type"] == "CrossEntropyLoss"
    assert [g["name"] for g in window.doc.project.groups.values()] == ["body"]
    assert "equal within" in window.statusBar().currentMessage()
    qtbot.waitUntil(lambda: bool(reports), timeout=20_000)
    _, text = reports[-1]
    assert "loaded 4 tensor(s)" in text and "missing" not in text and "skipped" not in text


def test_import_whose_data_does_not_fit_says_where_its_weights_are(window, qtbot, tmp_path):
    model = tmp_path / "model.py"
    model.write_text(textwrap.dedent(NET))
    QTimer.singleShot(0, lambda: _fill_and_import(qtbot, f"{model}:Conv", "3,8,8", ""))
    window.actions["actionImport"].trigger()
    assert window.doc.project.graph.nodes["conv"]["type"] == "Conv2d"
    message = window.statusBar().currentMessage()
    assert "weights.safetensors" in message and "[3, 8, 8]" in message
    assert "Load Weights" in message
