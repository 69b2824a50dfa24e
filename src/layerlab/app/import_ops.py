"""File ▸ Import…: a PyTorch or ONNX model onto the canvas (core/importer.py), its weights
loaded into the model the next run trains.

The dialog asks what `layerlab import` asks: the source, the input shape and the
arguments. A model that cannot be imported is said in one sentence in the dialog, which
stays open to be corrected.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.naming import named
from layerlab.core.fit import dataset_fit
from layerlab.core.import_source import parse_kwargs, parse_shape
from layerlab.core.importer import ImportRefused, ImportResult, import_model
from layerlab.core.weights import save_weights

if TYPE_CHECKING:
    from layerlab.app.main_window import MainWindow


log = logging.getLogger("layerlab")


class ImportDialog(QDialog):
    """Source, input shape and arguments; Import runs the import and keeps the result."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("importDialog")
        self.setWindowTitle("Import Model")
        self.setAccessibleName("Import model")
        self.result_: ImportResult | None = None
        self.source = named(QLineEdit(), "importSource", "Model source",
                             "model.py:Net (a class or factory in a file), "
                             "torchvision.models:resnet18 (an importable factory), or an "
                             ".onnx file")
        self.source.setPlaceholderText("model.py:Net, torchvision.models:resnet18, model.onnx")
        browse = named(QToolButton(), "importBrowse", "Choose a model file",
                        "Choose a Python or ONNX file")
        browse.setText("…")
        browse.clicked.connect(self._browse)
        self.shape = named(QLineEdit(), "importShape", "Input shape",
                            "One sample's shape, batch excluded; empty: 3,224,224, or the "
                            "ONNX file's own")
        self.shape.setPlaceholderText("3,224,224")
        self.args = named(QLineEdit(), "importArgs", "Arguments",
                           "Keyword arguments for the class or factory, as JSON")
        self.args.setPlaceholderText('{"num_classes": 10}')
        self.error = named(QLabel(), "importError", "Import problem", "")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c0392b;")
        self._layout(browse)

    def _layout(self, browse: QToolButton) -> None:
        row = QHBoxLayout()
        row.addWidget(self.source, 1)
        row.addWidget(browse)
        form = QFormLayout()
        label = QLabel("&Model:")
        label.setBuddy(self.source)  # a row holding a layout gets no buddy of its own
        form.addRow(label, row)
        form.addRow("Input &shape:", self.shape)
        form.addRow("&Arguments:", self.args)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        go = buttons.addButton("&Import", QDialogButtonBox.ButtonRole.AcceptRole)
        go.setObjectName("importButton")
        go.setDefault(True)
        go.setToolTip("Trace the model, map it onto LayerLab's layers and check that it "
                      "computes what the original computes")
        buttons.accepted.connect(self.run_import)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.resize(560, 200)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model", "",
                                              "Models (*.py *.onnx);;All files (*)")
        if path:
            self.source.setText(path + (":" if path.endswith(".py") else ""))
            self.source.setFocus()

    def run_import(self) -> None:
        """Import; on success accept, otherwise say why in one sentence and stay open."""
        self.error.clear()
        QGuiApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            source = self.source.text().strip()
            if not source:
                raise ImportRefused("name a model: model.py:Net, "
                                    "torchvision.models:resnet18 or model.onnx")
            self.result_ = import_model(source, parse_shape(self.shape.text()),
                                        parse_kwargs(self.args.text()))
        except ImportRefused as exc:
            self.error.setText(str(exc))
            return
        except Exception as exc:  # a bug of ours or torch's: said, logged, never lost
            log.error("import failed", exc_info=exc)
            first = next(iter(str(exc).splitlines()), "")
            self.error.setText(f"The import failed: {type(exc).__name__}: {first}")
            return
        finally:
            QGuiApplication.restoreOverrideCursor()
        self.accept()


def run_dialog(window: MainWindow) -> ImportResult | None:
    """File ▸ Import…: the imported project replaces the window's (after the usual question
    about unsaved changes), and its weights are loaded for training."""
    if not window.confirm_discard():
        return None
    dialog = ImportDialog(window)
    if dialog.exec() != QDialog.DialogCode.Accepted or dialog.result_ is None:
        return None
    show(window, dialog.result_)
    return dialog.result_


def show(window: MainWindow, result: ImportResult) -> Path:
    """Put an import on the canvas and load its weights into the model the next run trains,
    once the project's data fits it (the window trains on data); returns the weights file,
    kept in a folder of the session's for File ▸ Load Weights… when the data is chosen."""
    folder = Path(tempfile.mkdtemp(prefix="layerlab-import-"))
    weights = folder / "weights.safetensors"
    save_weights(result.model, weights)
    window.set_project(result.project)
    problems = dataset_fit(result.project).problems
    if problems:
        window.statusBar().showMessage(
            f"Imported {result.project.name}; its weights are in {weights}: choose data that "
            f"fits ({problems[0][1]}), then File ▸ Load Weights…", 30_000)
        return weights
    window.training.controller.load_weights(str(weights))
    window.statusBar().showMessage(f"Imported {result.project.name} with its weights: "
                                   f"{result.comparison.sentence()}", 15_000)
    return weights


def install(window: MainWindow) -> QAction:
    """File ▸ Import… (Ctrl+I), after New from Data…"""
    action = window.action("actionImport", "&Import Model…", lambda: run_dialog(window),
                           QKeySequence("Ctrl+I"),
                           "A PyTorch or ONNX model onto the canvas, with its weights")
    file_menu = window.actions["actionOpen"].associatedObjects()
    menu = next(m for m in file_menu if m.objectName() == "fileMenu")
    menu.insertAction(window.actions["actionOpen"], action)  # type: ignore[attr-defined]
    return action
