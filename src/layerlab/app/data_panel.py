"""The user's own data in the training panel: the csv or imagefolder path (typed or chosen
with Browse), the table's target column, and where the data and the graph disagree, listed
before Train with a one-click, undoable "Fit graph to data".

The data is read in the GUI thread: a person's table or image folder, read once per change
of its settings (a cache keeps repeated analyses free).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.commands import SetAttribute, SetTraining
from layerlab.app.document import Document
from layerlab.core.datafit import Change, graph_changes
from layerlab.core.datasets import (
    FILE_DATASETS,
    Dataset,
    DatasetError,
    data_path,
    load_dataset,
    project_folder,
    with_data,
)
from layerlab.core.tables import TableError, read_table

TABLE_FILTER = "Tables (*.csv *.tsv *.txt);;All files (*)"
TEXT_FILTER = "Text (*.txt *.md);;All files (*)"


class DataPanel(QWidget):
    """Path, target and fit of the project's own data; hidden for built-in datasets."""

    def __init__(self, doc: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("dataPanel")
        self.doc = doc
        self.changes: list[Change] = []
        self._cache: tuple[str, Dataset | str] | None = None
        self._filling = False
        self._build()
        doc.trainingChanged.connect(self.refresh)
        doc.analysisChanged.connect(self._graph_changed)  # the data is read once, cached
        self.refresh()

    def _build(self) -> None:
        self.path = QLineEdit()
        _name(self.path, "dataPath", "Data path", "The table, or the folder of class "
              "sub-folders of images; relative to the project file")
        self.path.editingFinished.connect(self._path_edited)
        self.browse = QToolButton()
        self.browse.setText("Browse…")
        _name(self.browse, "dataBrowse", "Browse for data", "Choose the file or folder")
        self.browse.clicked.connect(self.choose)
        self.target = QComboBox()
        _name(self.target, "dataTarget", "Target column", "The column the network predicts")
        self.target.currentTextChanged.connect(self._target_chosen)
        self.problems = QLabel()
        self.problems.setObjectName("dataFitProblems")
        self.problems.setAccessibleName("Data and graph")
        self.problems.setWordWrap(True)
        self.problems.setTextFormat(Qt.TextFormat.PlainText)
        self.problems.setStyleSheet("color: #b8661a;")
        self.fit = QPushButton("Fit graph to data")
        _name(self.fit, "fitGraphButton", "Fit graph to data", "Set the Input's shape, the "
              "output's width and the loss to what the data needs (one undo step)")
        self.fit.clicked.connect(self.fit_graph)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.path, 1)
        row.addWidget(self.browse)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("data", row)
        form.addRow("target", self.target)
        self.target_label = form.labelForField(self.target)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.problems)
        layout.addWidget(self.fit)

    # -- what the document holds ------------------------------------------------------
    def _dataset(self) -> tuple[str, dict[str, Any]]:
        dataset = self.doc.project.training.get("dataset", {})
        return str(dataset.get("name", "")), dict(dataset.get("options", {}))

    def refresh(self) -> None:
        name, options = self._dataset()
        own = name in FILE_DATASETS
        self.setVisible(own)
        if not own:
            self.changes = []
            return
        self._filling = True
        if not self.path.hasFocus():
            self.path.setText(str(options.get("path", "")))
        table = name == "csv"
        self.target.setVisible(table)
        if self.target_label is not None:
            self.target_label.setVisible(table)
        if table:
            self._fill_targets(options)
        self._filling = False
        self._show_fit()

    def _graph_changed(self) -> None:
        if self._dataset()[0] in FILE_DATASETS:
            self._show_fit()

    def _fill_targets(self, options: dict[str, Any]) -> None:
        base = project_folder(self.doc.project.path)
        try:
            header = list(read_table(data_path(options.get("path", ""), base),
                                     options.get("header", "auto")).header)
        except (TableError, OSError):
            header = []
        chosen = options.get("target") or (header[-1] if header else "")
        if chosen and chosen not in header:
            header.append(chosen)  # as the file says, even where the table lacks it
        self.target.clear()
        self.target.addItems(header)
        self.target.setCurrentText(chosen)

    def data(self) -> Dataset | str:
        """The dataset as the project describes it, or why it cannot be read."""
        name, options = self._dataset()
        base = project_folder(self.doc.project.path)
        where = data_path(str(options.get("path", "")), base)
        stamp = where.stat().st_mtime_ns if where.exists() else 0
        key = json.dumps([name, options, str(base), stamp], sort_keys=True, default=str)
        if self._cache is None or self._cache[0] != key:
            try:
                result: Dataset | str = load_dataset(name, options, base=base)
            except DatasetError as exc:
                result = str(exc)
            self._cache = (key, result)
        return self._cache[1]

    def _show_fit(self) -> None:
        name, options = self._dataset()
        if not options.get("path"):
            self.changes = []
            what = {"csv": "table", "text": "text file"}.get(name, "image folder")
            self.problems.setText(f"Choose the {what} to train on.")
            self.fit.hide()
            return
        data = self.data()
        if isinstance(data, str):
            self.changes = []
            self.problems.setText(data)
            self.fit.hide()
            return
        self.changes = graph_changes(self.doc.graph, self.doc.analysis, data)
        self.problems.setText("\n".join(f"• {c.reason}" for c in self.changes))
        self.problems.setVisible(bool(self.changes))
        self.fit.setVisible(bool(self.changes))

    # -- edits ------------------------------------------------------------------------
    def choose(self) -> None:
        name, options = self._dataset()
        start = str(data_path(str(options.get("path", "")), project_folder(
            self.doc.project.path)).parent)
        if name == "imagefolder":
            path = QFileDialog.getExistingDirectory(self, "Image folder", start)
        elif name == "text":
            path, _ = QFileDialog.getOpenFileName(self, "Text file", start, TEXT_FILTER)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Table", start, TABLE_FILTER)
        if path:
            self.set_path(path)

    def _path_edited(self) -> None:
        if not self._filling and self.path.text() != self._dataset()[1].get("path", ""):
            self.set_path(self.path.text())

    def set_path(self, path: str) -> None:
        """Read the data at `path` (one undo step); relative to the project's folder where
        the project has one."""
        folder = project_folder(self.doc.project.path)
        if folder is not None and Path(path).is_absolute() and \
                Path(path).resolve().is_relative_to(folder):  # elsewhere: kept absolute
            path = Path(path).resolve().relative_to(folder).as_posix()
        old = self.doc.project.training
        new = with_data(old, path)
        if new["dataset"].get("name") == "csv":
            new["dataset"]["options"].pop("target", None)  # another table: its last column
            new["dataset"]["options"].pop("categories", None)
        if new != old:
            self.doc.undo_stack.push(SetTraining(self.doc, old, new, "Change data path"))

    def _target_chosen(self, column: str) -> None:
        if self._filling or not column:
            return
        old = self.doc.project.training
        new = with_data(old, None, column)
        new["dataset"]["options"].pop("categories", None)  # the old target's classes
        if new != old:
            self.doc.undo_stack.push(SetTraining(self.doc, old, new, "Change target column"))

    def fit_graph(self) -> None:
        """Apply every listed change as one undo step."""
        if not self.changes:
            return
        stack = self.doc.undo_stack
        stack.beginMacro("Fit graph to data")
        for change in self.changes:
            stack.push(SetAttribute(self.doc, change.node, change.key, change.old,
                                    change.new, f"Fit {change.node} to the data"))
            params = self.doc.graph.nodes[change.node].get("params")
            if change.key == "type" and params:  # the old loss's own settings do not apply
                stack.push(SetAttribute(self.doc, change.node, "params", params, {},
                                        f"Fit {change.node} to the data"))
        stack.endMacro()


def _name(widget: QWidget, name: str, accessible: str, tip: str) -> None:
    widget.setObjectName(name)
    widget.setAccessibleName(accessible)
    widget.setToolTip(tip)
