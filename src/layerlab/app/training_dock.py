"""The training dock: settings (stored in the project), run controls, progress, live plots,
the decision boundary, a dataset preview and the results of a run."""

from __future__ import annotations

import ast
import copy
import re
import time
from typing import Any

import torch
from PySide6.QtCore import QObject, QThread, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QSpinBox,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.commands import SetTraining
from layerlab.app.document import Document
from layerlab.app.plots import RunPlots
from layerlab.app.training_worker import TrainingWorker
from layerlab.app.views import BoundaryView, DatasetPreview, ResultsView
from layerlab.core.catalogue import CATALOGUE, OPTIMIZERS, REGULARISERS
from layerlab.core.datasets import DATASETS
from layerlab.core.insight import BoundaryRecord, PreviewRecord, ResultsRecord
from layerlab.core.project import Project
from layerlab.core.trainer import Control, EpochRecord, StepRecord


def devices() -> list[str]:
    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


class TrainingController(QObject):
    """Owns the torch thread and its worker; turns button presses into requests."""

    startRequested = Signal(object, object)
    previewRequested = Signal(object)
    exportRequested = Signal(object, str, str)
    traceRequested = Signal(object, int)
    sampleTraceRequested = Signal(object, int)
    loadRequested = Signal(object, str)
    stateChanged = Signal(str)  # idle, running, paused

    def __init__(self, doc: Document) -> None:
        super().__init__()
        self.doc = doc
        self.thread = QThread()
        self.thread.setObjectName("torchThread")
        self.worker = TrainingWorker()
        self.worker.moveToThread(self.thread)
        self.startRequested.connect(self.worker.start)
        self.previewRequested.connect(self.worker.preview)
        self.exportRequested.connect(self.worker.export)
        self.traceRequested.connect(self.worker.trace)
        self.sampleTraceRequested.connect(self.worker.trace_sample)
        self.loadRequested.connect(self.worker.load)
        self.worker.stopped.connect(self._ended)
        self.worker.failed.connect(lambda message: self._ended("failed"))
        self.thread.start()
        self.control: Control | None = None
        self.state = "idle"

    def snapshot(self) -> Project:
        return Project.from_dict(copy.deepcopy(self.doc.project.to_dict()))

    def train(self, paused: bool = False) -> bool:
        if self.state != "idle":
            return False
        self.control = Control()
        if paused:
            self.control.pause()
        self.doc.set_locked(True)
        self._set_state("paused" if paused else "running")
        self.startRequested.emit(self.snapshot(), self.control)
        return True

    def pause(self) -> None:
        if self.control is not None and self.state == "running":
            self.control.pause()
            self._set_state("paused")

    def resume(self) -> None:
        if self.control is not None and self.state == "paused":
            self.control.resume()
            self._set_state("running")

    def step(self) -> None:
        if self.state == "idle":
            self.train(paused=True)
        if self.control is not None and self.state == "paused":
            self.control.step()

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()

    def reset(self) -> None:
        if self.state == "idle":
            self.worker.reset()

    def preview(self) -> None:
        self.previewRequested.emit(self.snapshot())

    def export(self, fmt: str, path: str) -> None:
        """In the torch thread: ONNX export and its onnxruntime check take seconds."""
        self.exportRequested.emit(self.snapshot(), fmt, path)

    def trace(self, keep: int) -> bool:
        """Record the next training step (only between runs)."""
        if self.state != "idle":
            return False
        self.traceRequested.emit(self.snapshot(), keep)
        return True

    def trace_sample(self, index: int) -> bool:
        """Record one chosen sample of the dataset, without training on it."""
        if self.state != "idle":
            return False
        self.sampleTraceRequested.emit(self.snapshot(), index)
        return True

    def load_weights(self, path: str) -> None:
        self.loadRequested.emit(self.snapshot(), path)

    def _ended(self, state: str) -> None:
        self.doc.set_locked(False)
        self._set_state("idle")

    def _set_state(self, state: str) -> None:
        self.state = state
        self.stateChanged.emit(state)

    def shutdown(self) -> None:
        """Stop any run and end the thread; the window does this when it closes."""
        self.stop()
        self.thread.quit()
        self.thread.wait(10_000)


class TrainingDock(QWidget):
    boundaryChanged = Signal()

    def __init__(self, doc: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.latest_boundary: BoundaryRecord | None = None
        self.setObjectName("trainingPanel")
        self.doc = doc
        self.controller = TrainingController(doc)
        self.controller.worker.records.connect(self.receive)
        self.controller.worker.failed.connect(self.show_failure)
        self.controller.stateChanged.connect(self._state_changed)
        self.actions: dict[str, QAction] = {}
        self._filling = False
        self._start_time = 0.0
        self._build()
        doc.reset.connect(self.clear_run_views)
        doc.trainingChanged.connect(self.fill)
        doc.trainingChanged.connect(self.controller.preview)
        doc.analysisChanged.connect(self._show_loss)
        self.fill()
        self.controller.preview()

    # -- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        form = QFormLayout()
        self.dataset = self._combo("dataset", list(DATASETS))
        self.split = self._line("validationSplit", "validation split")
        self.optimizer = self._combo("optimizer", list(OPTIMIZERS))
        self.rule = QLabel()
        self.rule.setObjectName("optimizerRule")
        self.rule.setWordWrap(True)
        self.opt_args = self._line("optimizerArguments", "optimizer arguments")
        self.opt_args.setToolTip("The optimizer's other arguments, by torch's names: "
                                 "momentum=0.9, betas=(0.9, 0.999), eps=1e-08, weight_decay=0")
        self.lr = self._line("learningRate", "learning rate")
        self.batch = self._spin("batchSize", 1, 1_000_000)
        self.epochs = self._spin("epochs", 1, 100_000)
        self.l1 = self._line("l1", "L1 strength λ₁")
        self.l1.setToolTip(REGULARISERS["l1"])
        self.l2 = self._line("l2", "L2 strength λ₂")
        self.l2.setToolTip(REGULARISERS["l2"])
        self.seed = self._spin("seed", 0, 2**31 - 1)
        self.device = self._combo("device", devices())
        self.loss = QLabel()
        self.loss.setObjectName("lossDescription")
        self.loss.setWordWrap(True)
        for text, widget in (("dataset", self.dataset), ("validation split", self.split),
                             ("optimizer", self.optimizer), ("", self.rule),
                             ("arguments", self.opt_args),
                             ("learning rate", self.lr), ("batch size", self.batch),
                             ("epochs", self.epochs), ("L1 λ", self.l1), ("L2 λ", self.l2),
                             ("seed", self.seed), ("device", self.device),
                             ("loss", self.loss)):
            form.addRow(text, widget)
        buttons = QHBoxLayout()
        self.buttons: dict[str, QToolButton] = {}
        for name in ("train", "pause", "step", "stop", "reset"):
            button = QToolButton()
            button.setObjectName(f"{name}Button")
            button.setAccessibleName(name.capitalize())
            self.buttons[name] = button
            buttons.addWidget(button)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainingProgress")
        self.progress.setAccessibleName("Training progress")
        self.progress.setFormat("ready")
        self.progress.setTextVisible(True)
        self.error = QLabel()
        self.error.setObjectName("trainingError")
        self.error.setAccessibleName("Training error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #e0443e;")
        left = QVBoxLayout()
        left.addLayout(form)
        left.addLayout(buttons)
        left.addWidget(self.progress)
        left.addWidget(self.error)
        left.addStretch(1)
        self.plots = RunPlots()
        self.boundary = BoundaryView()
        self.preview = DatasetPreview()
        self.results = ResultsView()
        self.tabs = QTabWidget()
        self.tabs.setObjectName("trainingTabs")
        self.tabs.addTab(self.plots, "Curves")
        self.tabs.addTab(self.boundary, "Decision boundary")
        self.tabs.addTab(self.preview, "Dataset")
        self.tabs.addTab(self.results, "Results")
        panel = QWidget()
        panel.setLayout(left)
        panel.setMaximumWidth(330)
        layout = QHBoxLayout(self)
        layout.addWidget(panel)
        layout.addWidget(self.tabs, 1)

    def _combo(self, name: str, items: list[str]) -> QComboBox:
        combo = QComboBox()
        combo.setObjectName(name)
        combo.setAccessibleName(name)
        combo.addItems(items)
        combo.currentTextChanged.connect(self._edited)
        return combo

    def _line(self, name: str, title: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setObjectName(name)
        edit.setAccessibleName(title)
        edit.editingFinished.connect(self._edited)
        return edit

    def _spin(self, name: str, low: int, high: int) -> QSpinBox:
        spin = QSpinBox()
        spin.setObjectName(name)
        spin.setAccessibleName(name)
        spin.setRange(low, high)
        spin.setKeyboardTracking(False)
        spin.valueChanged.connect(self._edited)
        return spin

    def bind(self, actions: dict[str, QAction]) -> None:
        """Give the buttons the window's Run actions, so menu, keys and buttons agree."""
        self.actions = actions
        for name, button in self.buttons.items():
            button.setDefaultAction(actions[name])
        self._state_changed("idle")

    def clear_run_views(self) -> None:
        """Another project: the last one's boundary, results and progress no longer apply."""
        self.boundary.clear_boundary()
        self.latest_boundary = None
        self.boundaryChanged.emit()
        self.results.clear_results()
        self.progress.reset()
        self.progress.setFormat("ready")
        self.error.setText("")

    # -- settings ---------------------------------------------------------------------
    def fill(self) -> None:
        t = self.doc.project.training
        self._filling = True
        self.dataset.setCurrentText(t["dataset"].get("name", "spiral"))
        self.split.setText(str(t["dataset"].get("validation_split", 0.1)))
        self.optimizer.setCurrentText(t["optimizer"].get("name", "adam"))
        spec = OPTIMIZERS.get(t["optimizer"].get("name", ""))
        self.rule.setText(f"<small>{spec.title}: {spec.rule}</small>" if spec else "")
        self.lr.setText(str(t["optimizer"].get("lr", 0.001)))
        self.opt_args.setText(format_args(t["optimizer"]))
        self.opt_args.setCursorPosition(0)
        self.batch.setValue(int(t.get("batch_size", 32)))
        self.epochs.setValue(int(t.get("epochs", 10)))
        self.l1.setText(str(t.get("l1", 0.0)))
        self.l2.setText(str(t.get("l2", 0.0)))
        self.seed.setValue(int(t.get("seed", 0)))
        self.device.setCurrentText(t.get("device", "auto"))
        self._filling = False
        self._show_loss()

    def _show_loss(self) -> None:
        node = self.doc.analysis.loss_node
        spec = CATALOGUE[self.doc.graph.nodes[node]["type"]] if node in self.doc.graph else None
        self.loss.setText(f"<small>{spec.type}: {spec.formula}</small>" if spec else
                          "<small>no loss node: add one to train</small>")

    def _edited(self) -> None:
        if self._filling:
            return
        old = self.doc.project.training
        new = copy.deepcopy(old)
        changed = self._read_form(new)
        if changed and new != old:
            self.doc.undo_stack.push(SetTraining(self.doc, old, new, f"Change {changed}"))

    def _read_form(self, t: dict[str, Any]) -> str:
        """Copy the form into `t`; returns the name of the changed setting ('' if none)."""
        fields: list[tuple[str, Any, Any]] = [
            ("dataset", t["dataset"].get("name"), self.dataset.currentText()),
            ("validation split", t["dataset"].get("validation_split"), _float(self.split)),
            ("optimizer", t["optimizer"].get("name"), self.optimizer.currentText()),
            ("learning rate", t["optimizer"].get("lr"), _float(self.lr)),
            ("optimizer arguments", parse_args(format_args(t["optimizer"])),
             parse_args(self.opt_args.text())),
            ("batch size", t.get("batch_size"), self.batch.value()),
            ("epochs", t.get("epochs"), self.epochs.value()),
            ("L1", t.get("l1"), _float(self.l1)), ("L2", t.get("l2"), _float(self.l2)),
            ("seed", t.get("seed"), self.seed.value()),
            ("device", t.get("device"), self.device.currentText()),
        ]
        changed = next((name for name, old, new in fields if new is not None and old != new),
                       "")
        if not changed:
            return ""
        values = {name: new for name, _, new in fields if new is not None}
        if values["dataset"] != t["dataset"].get("name"):
            t["dataset"] = {"name": values["dataset"], "options": {},
                            "validation_split": t["dataset"].get("validation_split", 0.1)}
        t["dataset"]["validation_split"] = values.get("validation split",
                                                      t["dataset"]["validation_split"])
        if values["optimizer"] != t["optimizer"].get("name"):
            t["optimizer"] = {"name": values["optimizer"], "lr": t["optimizer"].get("lr")}
        t["optimizer"]["lr"] = values.get("learning rate", t["optimizer"]["lr"])
        if changed == "optimizer arguments":
            t["optimizer"] = {"name": t["optimizer"]["name"], "lr": t["optimizer"]["lr"],
                              **values["optimizer arguments"]}
        t["batch_size"], t["epochs"] = values["batch size"], values["epochs"]
        t["l1"], t["l2"] = values.get("L1", t["l1"]), values.get("L2", t["l2"])
        t["seed"], t["device"] = values["seed"], values["device"]
        return changed

    # -- runs -------------------------------------------------------------------------
    def start(self) -> None:
        if self.doc.analysis.errors:
            self.show_failure("the graph has problems; fix them first (see the inspector)")
            return
        self.error.setText("")
        if self.controller.train():
            self.plots.new_run()
            self._start_time = time.perf_counter()

    def receive(self, records: list[object]) -> None:
        steps = []
        for record in records:
            if isinstance(record, (StepRecord, EpochRecord)):
                steps.append(record)
            elif isinstance(record, BoundaryRecord):
                self.boundary.set_boundary(record.image, record.extent)
                self.latest_boundary = record
                self.boundaryChanged.emit()
            elif isinstance(record, PreviewRecord):
                self._preview(record)
            elif isinstance(record, ResultsRecord):
                self.results.show_results(record)
        if steps:
            self.plots.add(steps)
            self._progress(steps)

    def _progress(self, records: list[object]) -> None:
        last = next((r for r in reversed(records) if isinstance(r, StepRecord)), None)
        if last is None:
            return
        total = self.doc.project.training.get("epochs", 1) * last.batches
        done = (last.epoch - 1) * last.batches + last.batch
        self.progress.setMaximum(total)
        self.progress.setValue(done)
        if self.controller.state == "idle":  # a single traced step, not a run
            self.progress.setFormat(f"epoch {last.epoch} · step {last.step}")
            return
        elapsed = time.perf_counter() - self._start_time
        eta = elapsed / max(done, 1) * (total - done)
        self.progress.setFormat(f"epoch {last.epoch} · step {last.step} · "
                                f"{last.samples_per_s:,.0f} samples/s · ETA {eta:.0f} s")

    def _preview(self, record: PreviewRecord) -> None:
        if record.kind == "points":
            self.preview.show_points(record.x, record.y)
            self.boundary.set_points(record.x, record.y, record.val)
        elif record.kind == "images":
            self.preview.show_images(record.x)
        elif record.kind == "table":
            self.preview.show_table(list(record.header), record.x.tolist())
        else:
            self.preview.show_message(record.message)

    def show_failure(self, message: str) -> None:
        self.error.setText(message)
        self.window().statusBar().showMessage(f"Training stopped: {message}", 10_000)

    def _state_changed(self, state: str) -> None:
        if not self.actions:
            return
        idle, running = state == "idle", state == "running"
        self.actions["train"].setEnabled(idle)
        self.actions["pause"].setEnabled(not idle)
        self.actions["pause"].setText("Resume" if state == "paused" else "Pause")
        self.actions["step"].setEnabled(not running)
        self.actions["stop"].setEnabled(not idle)
        self.actions["reset"].setEnabled(idle)
        for widget in (self.dataset, self.split, self.optimizer, self.batch, self.device,
                       self.seed):
            widget.setEnabled(idle)
        if idle and self.progress.format().startswith("epoch"):
            self.progress.setFormat(self.progress.format().split(" · ETA")[0] + " · done")

    def toggle_pause(self) -> None:
        if self.controller.state == "running":
            self.controller.pause()
        elif self.controller.state == "paused":
            self.controller.resume()


ARG = re.compile(r"(\w+)\s*=\s*(\([^)]*\)|\[[^\]]*\]|[^,]+)")


def _args(optimizer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in optimizer.items() if k not in ("name", "lr")}


def format_args(optimizer: dict[str, Any]) -> str:
    """The optimizer's arguments besides lr: the project's, else torch's defaults."""
    spec = OPTIMIZERS.get(optimizer.get("name", ""))
    defaults = {k: v for k, v in (spec.defaults if spec else {}).items() if k != "lr"}
    merged = {**defaults, **_args(optimizer)}
    return ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}"
                     for k, v in merged.items())


def parse_args(text: str) -> dict[str, Any] | None:
    """`momentum=0.9, betas=(0.9, 0.999)` as JSON values, or None when it does not parse."""
    try:
        values = {k: ast.literal_eval(v.strip()) for k, v in ARG.findall(text)}
    except (ValueError, SyntaxError):
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _float(edit: QLineEdit) -> float | None:
    try:
        return float(edit.text())
    except ValueError:
        return None
