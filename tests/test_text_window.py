"""A text file chosen in the training panel stays a text dataset, and the window shows it."""

import json

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QLineEdit

from conftest import EXAMPLES


def test_a_text_file_typed_in_the_panel_is_read_as_text(window, qtbot, tmp_path):
    project = json.loads((EXAMPLES / "tiny-gpt.layerlab.json").read_text())
    project["training"]["dataset"] = {"name": "text", "options": {"context": 8}}
    out = tmp_path / "gpt.layerlab.json"
    out.write_text(json.dumps(project))
    (tmp_path / "poem.txt").write_text("12+30=042\n" * 20, encoding="utf-8")
    window.open_path(out, confirmed=True)
    panel = window.training.data_panel
    assert panel.isVisible()
    problems = panel.findChild(QLabel, "dataFitProblems")
    assert problems.text() == "Choose the text file to train on."
    edit = panel.findChild(QLineEdit, "dataPath")
    qtbot.keyClicks(edit, str(tmp_path / "poem.txt"))
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    dataset = window.doc.project.training["dataset"]
    assert dataset["name"] == "text"  # not read as a table
    assert dataset["options"] == {"context": 8, "path": "poem.txt"}  # beside the project
    assert problems.text() == ""  # 8 characters, windows of 8: the tiny GPT fits
    window.actions["actionUndo"].trigger()
    assert window.doc.project.training["dataset"]["options"] == {"context": 8}
