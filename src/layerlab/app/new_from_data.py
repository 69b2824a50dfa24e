"""File ▸ New from Data…: pick a table or an image folder, look at it (the first rows, or a
grid of images), choose the target, see the detected task and the class balance, and get
the starter project `layerlab new` would write (core/starter.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QImage, QKeyEvent, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.naming import named
from layerlab.core.datasets import Dataset, DatasetError
from layerlab.core.project import Project
from layerlab.core.starter import VALIDATION, DataSummary, starter, summarise
from layerlab.core.tables import TableError, read_table

if TYPE_CHECKING:
    from layerlab.app.main_window import MainWindow

PREVIEW_ROWS = 20
GRID = 6  # images per side of the preview grid
TASKS = ("auto", "classification", "regression")


class NewFromDataDialog(QDialog):
    """Choose data; `project()` is the starter project for it once the data can be used."""

    def __init__(self, parent: QWidget | None = None, start: str = "") -> None:
        super().__init__(parent)
        self.setObjectName("newFromDataDialog")
        self.setWindowTitle("New from Data")
        self.setAccessibleName("New from Data")
        self.summary: DataSummary | None = None
        self.data: Dataset | None = None
        self._start = start
        self._filling = False
        self._build()
        self.resize(720, 560)

    def _build(self) -> None:
        self.path = named(QLineEdit(), "newDataPath", "Data path",
                           "A table (CSV, TSV, …) or a folder with one sub-folder of images "
                           "per class")
        self.path.editingFinished.connect(self.reload)
        self.path.installEventFilter(self)
        file_button = named(QToolButton(), "newDataFile", "Choose a table", "Choose a table")
        file_button.setText("Table…")
        file_button.clicked.connect(self.choose_file)
        folder_button = named(QToolButton(), "newDataFolder", "Choose an image folder",
                               "Choose a folder of class sub-folders of images")
        folder_button.setText("Image folder…")
        folder_button.clicked.connect(self.choose_folder)
        self.target = named(QComboBox(), "newDataTarget", "Target column",
                             "The column the network learns to predict")
        self.target.currentTextChanged.connect(self._option_changed)
        self.task = named(QComboBox(), "newDataTask", "Task",
                           "auto: classes when the target is text or at most 20 distinct "
                           "whole numbers; otherwise regression")
        self.task.addItems(TASKS)
        self.task.currentTextChanged.connect(self._option_changed)
        self.table = named(QTableWidget(), "newDataPreview", "Table preview",
                            f"The first {PREVIEW_ROWS} rows")
        self.images = named(QLabel(), "newDataImages", "Image preview",
                             "The first images, one class after another")
        self.images.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview = QStackedWidget()
        self.preview.addWidget(self.table)
        self.preview.addWidget(self.images)
        self.verdict = named(QLabel(), "newDataSummary", "What the data is", "")
        self.verdict.setWordWrap(True)
        self.verdict.setTextFormat(Qt.TextFormat.PlainText)
        self.buttons = self._buttons()
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(file_button)
        row.addWidget(folder_button)
        form = QFormLayout()
        form.addRow("data", row)
        form.addRow("target", self.target)
        form.addRow("task", self.task)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.verdict)
        layout.addWidget(self.buttons)
        self._update_ok()

    def _buttons(self) -> QDialogButtonBox:
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Create Project")
        named(ok, "newDataCreate", "Create project", "Make the starter project for this data")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        return buttons

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Enter in the path field reads the data; it does not create the project yet."""
        if watched is self.path and event.type() == QEvent.Type.KeyPress and \
                isinstance(event, QKeyEvent) and \
                event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.reload()
            return True
        return super().eventFilter(watched, event)

    # -- choosing ---------------------------------------------------------------------
    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Table", self._start,
                                              "Tables (*.csv *.tsv *.txt);;All files (*)")
        if path:
            self.set_path(path)

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Image folder", self._start)
        if path:
            self.set_path(path)

    def set_path(self, path: str) -> None:
        self.path.setText(path)
        self.reload()

    def _option_changed(self) -> None:
        if not self._filling:
            self._analyse()

    def reload(self) -> None:
        """A new path: its columns, its preview, then what it is."""
        path = Path(self.path.text().strip()).expanduser()
        self._filling = True
        self.target.clear()
        self.task.setCurrentText("auto")
        self._filling = False
        if path.is_file():
            self._table_preview(path)
        self.target.setEnabled(path.is_file())
        self.task.setEnabled(path.is_file())
        self._analyse()

    def _table_preview(self, path: Path) -> None:
        try:
            table = read_table(path)
        except TableError:
            self.table.clear()
            return  # the analysis says why
        self._filling = True
        self.target.addItems(list(table.header))
        self.target.setCurrentText(table.header[-1])
        self._filling = False
        rows = table.rows[:PREVIEW_ROWS]
        self.table.clear()
        self.table.setColumnCount(len(table.header))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels(list(table.header))
        for i, row in enumerate(rows):
            for j, cell in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(cell))
        self.preview.setCurrentWidget(self.table)

    def _analyse(self) -> None:
        text = self.path.text().strip()
        self.summary = self.data = None
        if not text:
            self.verdict.setText("Choose a table or a folder of images.")
            self._update_ok()
            return
        path = Path(text).expanduser()
        task = self.task.currentText()
        try:
            if not path.exists():
                raise DatasetError(f"{path}: no such file or folder")
            self.summary, self.data = summarise(path, self.target.currentText() or None,
                                                None if task == "auto" else task)
        except DatasetError as exc:
            self.verdict.setText(str(exc))
        else:
            self.verdict.setText(describe(self.summary))
            if self.summary.kind == "images":
                self._image_grid(self.data)
        self._update_ok()

    def _image_grid(self, data: Dataset) -> None:
        """The first images of each class, side by side, as one picture."""
        per_class = max(1, GRID * GRID // max(1, len(data.classes)))
        picks = [int(i) for k in range(len(data.classes))
                 for i in (data.y == k).nonzero().flatten()[:per_class]][:GRID * GRID]
        x = data.x[picks].numpy()  # (n, C, H, W) in [0, 1]
        n, channels, h, w = x.shape
        grid = np.ones((GRID * (h + 2), GRID * (w + 2), 3), dtype=np.uint8) * 255
        for k in range(n):
            r, c = divmod(k, GRID)
            pixels = np.repeat(x[k], 3 // channels, axis=0).transpose(1, 2, 0)
            grid[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = pixels * 255
        rows = (n + GRID - 1) // GRID
        grid = np.ascontiguousarray(grid[:rows * (h + 2)])
        image = QImage(grid.data, grid.shape[1], grid.shape[0], grid.strides[0],
                       QImage.Format.Format_RGB888).copy()
        scale = max(1, 360 // max(grid.shape[:2]))
        self.images.setPixmap(QPixmap.fromImage(image).scaled(
            grid.shape[1] * scale, grid.shape[0] * scale))
        self.preview.setCurrentWidget(self.images)

    def _update_ok(self) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(
            self.summary is not None)

    def project(self) -> Project | None:
        """The starter project for the chosen data (its path absolute: it has no file yet)."""
        if self.summary is None or self.data is None:
            return None
        path = Path(self.path.text().strip()).expanduser().resolve()
        options = {**self.summary.options, "path": str(path)}
        summary = DataSummary(self.summary.kind, options, self.summary.task,
                              self.summary.features, self.summary.sample_shape,
                              self.summary.classes, self.summary.balance, self.summary.targets)
        rows = len(self.data) - round(len(self.data) * VALIDATION)
        return starter(summary, path.stem if path.is_file() else path.name, rows)


def describe(summary: DataSummary) -> str:
    """The detected task, the input and the class balance, in a sentence or two."""
    shape = "[" + ", ".join(map(str, summary.sample_shape)) + "]"
    if summary.task == "classification":
        total = sum(summary.balance.values()) or 1
        balance = ", ".join(f"{name} {count} ({100 * count / total:.0f}%)"
                            for name, count in summary.balance.items())
        return (f"Classification into {len(summary.classes)} classes from inputs of shape "
                f"{shape}. Class balance: {balance}.")
    return (f"Regression of {summary.targets} value(s) from inputs of shape {shape}.")


def run_dialog(window: MainWindow) -> None:
    """File ▸ New from Data…: the starter project replaces the window's (after the usual
    question about unsaved changes)."""
    if not window.confirm_discard():
        return
    dialog = NewFromDataDialog(window)
    if dialog.exec() == QDialog.DialogCode.Accepted:
        project = dialog.project()
        if project is not None:
            window.set_project(project)
            window.statusBar().showMessage(f"New project for {project.name}: train it with "
                                           "Train (F5), or adjust it first.", 10_000)
