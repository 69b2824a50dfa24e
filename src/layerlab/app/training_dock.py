"""The training dock: settings (stored in the project), run controls, progress, live plots
above the project's runs table, the decision boundary, a dataset preview and the results of
a run.

The settings form asks core what each field means: a value core refuses is marked on its
field (and Train says why it is off) and never reaches the document or the undo stack, so
every file the window saves opens again.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.commands import SetTraining
from layerlab.app.data_panel import DataPanel
from layerlab.app.document import Document
from layerlab.app.plots import RunPlots
from layerlab.app.runs_table import RunsTable
from layerlab.app.statistics_view import StatisticsStore
from layerlab.app.training_controller import TrainingController
from layerlab.app.training_form import (
    ARGUMENTS,
    FORM_STYLE,
    IntSpin,
    format_args,
    mark,
    owner,
    parse_args,
    with_field,
)
from layerlab.app.views import BoundaryView, DatasetPreview, ResultsView
from layerlab.core.catalogue import CATALOGUE, OPTIMIZERS, REGULARISERS
from layerlab.core.datasets import DATASETS
from layerlab.core.insight import BoundaryRecord, PreviewRecord, ResultsRecord
from layerlab.core.standardize import StatisticsRecord
from layerlab.core.trainer import EpochRecord, StepRecord
from layerlab.core.validation import FIELDS, lookup, training_problems

MESSAGE_HEIGHT = 96  # the message area scrolls beyond this; the form keeps its height
SETTINGS_WIDTH = 345


def devices() -> list[str]:
    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


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
        self.controller.refused.connect(self.show_failure)
        self.controller.stateChanged.connect(self._state_changed)
        self.controller.started.connect(self._run_started)
        self.controller.run_started.connect(self._run_began)
        self.controller.ended.connect(self._run_ended)
        self.statistics = StatisticsStore(self.controller.adapt)  # Standardize nodes'
        self.actions: dict[str, QAction] = {}
        self.fields: dict[str, QWidget] = {}
        self.tips: dict[str, str] = {}  # each field's own tooltip, shown while it is valid
        self.reasons: dict[str, str] = {}  # field (or file location) → why it cannot be used
        self._filling = False
        self._file_problems = False  # the message area lists an opened file's problems
        self._position = ""  # "epoch 3/150 · step 120": where the run stands
        self._start_time = 0.0
        self._thumbnails = False  # the canvas shows node thumbnails (the window says)
        self._build()
        self.tabs.currentChanged.connect(lambda _index: self.watch_boundary())
        self.watch_boundary()
        doc.reset.connect(self.clear_run_views)
        doc.trainingChanged.connect(self.fill)
        doc.trainingChanged.connect(self.controller.preview)
        doc.analysisChanged.connect(self._show_loss)
        self.fill()
        self.controller.preview()

    # -- layout -----------------------------------------------------------------------
    def _build(self) -> None:
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
        left = QVBoxLayout()
        left.addLayout(self._form())
        self.data_panel = DataPanel(self.doc)  # the user's own table or image folder
        left.addWidget(self.data_panel)
        left.addLayout(buttons)
        left.addWidget(self.progress)
        left.addWidget(self._message_area())
        left.addStretch(1)
        self.boundary = BoundaryView()
        self.preview = DatasetPreview()
        self.results = ResultsView()
        self.tabs = QTabWidget()
        self.tabs.setObjectName("trainingTabs")
        self.tabs.addTab(self._curves(), "Curves")
        self.tabs.addTab(self.boundary, "Decision boundary")
        self.tabs.addTab(self.preview, "Dataset")
        self.tabs.addTab(self.results, "Results")
        panel = QWidget()
        panel.setLayout(left)
        panel.setStyleSheet(FORM_STYLE)
        # a short dock scrolls the settings rather than squash their fields
        self.settings = settings = QScrollArea()
        settings.setObjectName("trainingSettings")
        settings.setAccessibleName("Training settings")
        settings.setWidget(panel)
        settings.setWidgetResizable(True)
        settings.setFrameShape(QFrame.Shape.NoFrame)
        settings.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        settings.setFixedWidth(SETTINGS_WIDTH)
        layout = QHBoxLayout(self)
        layout.addWidget(settings)
        layout.addWidget(self.tabs, 1)

    def _curves(self) -> QSplitter:
        """The curves above the project's runs table, whose rows they follow."""
        self.plots = RunPlots()
        self.controller.drawTurn.connect(self.plots.redraw_if_due)
        self.runs_table = RunsTable()
        curves = QSplitter(Qt.Orientation.Vertical)
        curves.setObjectName("curvesSplitter")
        curves.setAccessibleName("Curves and runs")
        curves.addWidget(self.plots)
        curves.addWidget(self.runs_table)
        curves.setStretchFactor(0, 3)
        curves.setStretchFactor(1, 2)
        curves.setSizes([600, 400])  # in proportion: the table shows a few runs at once
        curves.setChildrenCollapsible(False)
        return curves

    def _form(self) -> QFormLayout:
        self.dataset = self._combo("dataset", "dataset.name", list(DATASETS))
        self.split = self._line("validationSplit", "dataset.validation_split")
        self.optimizer = self._combo("optimizer", "optimizer.name", list(OPTIMIZERS))
        self.rule = self._note("optimizerRule")
        self.opt_args = self._line("optimizerArguments", ARGUMENTS,
                                   "The optimizer's other arguments, by torch's names: "
                                   "momentum=0.9, betas=(0.9, 0.999), eps=1e-08, "
                                   "weight_decay=0")
        self.lr = self._line("learningRate", "optimizer.lr")
        self.batch = self._spin("batchSize", "batch_size")
        self.epochs = self._spin("epochs", "epochs")
        self.l1 = self._line("l1", "l1", REGULARISERS["l1"])
        self.l2 = self._line("l2", "l2", REGULARISERS["l2"])
        self.seed = self._spin("seed", "seed")
        self.device = self._combo("device", "device", devices())
        self.loss = self._note("lossDescription")
        form = QFormLayout()
        for key, widget in self.fields.items():
            form.addRow("arguments" if key == ARGUMENTS else _label(key), widget)
            if key == "optimizer.name":
                form.addRow("", self.rule)
        form.addRow("loss", self.loss)
        return form

    def _message_area(self) -> QScrollArea:
        """Why a run failed or cannot start: it wraps and scrolls, the form keeps its size."""
        self.error = QLabel()
        self.error.setObjectName("trainingError")
        self.error.setAccessibleName("Training error")
        self.error.setWordWrap(True)
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.error.setStyleSheet("color: #e0443e;")
        self.message_area = QScrollArea()
        self.message_area.setObjectName("trainingMessages")
        self.message_area.setAccessibleName("Training messages")
        self.message_area.setWidget(self.error)
        self.message_area.setWidgetResizable(True)
        self.message_area.setFrameShape(QFrame.Shape.NoFrame)
        self.message_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.message_area.setFixedHeight(MESSAGE_HEIGHT)
        self.message_area.hide()
        return self.message_area

    def _note(self, name: str) -> QLabel:
        label = QLabel()
        label.setObjectName(name)
        label.setWordWrap(True)
        return label

    def _field(self, widget: QWidget, name: str, key: str, tip: str) -> None:
        widget.setProperty("field", key)
        widget.setObjectName(name)
        widget.setAccessibleName(_label(key))
        widget.setToolTip(tip)
        self.fields[key] = widget
        self.tips[key] = tip

    def _combo(self, name: str, key: str, items: list[str]) -> QComboBox:
        combo = QComboBox()
        self._field(combo, name, key, "")
        combo.addItems(items)
        combo.currentTextChanged.connect(self._edited)
        return combo

    def _line(self, name: str, key: str, tip: str = "") -> QLineEdit:
        edit = QLineEdit()
        self._field(edit, name, key, tip)
        edit.textChanged.connect(self._refresh)
        edit.editingFinished.connect(self._edited)
        return edit

    def _spin(self, name: str, key: str) -> QSpinBox:
        spin = IntSpin()
        self._field(spin, name, key, "")
        spin.lineEdit().textChanged.connect(self._refresh)  # every keystroke, even "-"
        spin.editingFinished.connect(self._refresh)  # left with letters: its number is back
        spin.valueChanged.connect(self._edited)
        return spin

    def bind(self, actions: dict[str, QAction]) -> None:
        """Give the buttons the window's Run actions, so menu, keys and buttons agree."""
        self.actions = actions
        self._train_tip = actions["train"].toolTip()
        for name, button in self.buttons.items():
            button.setDefaultAction(actions[name])
        self._state_changed("idle")

    def clear_run_views(self) -> None:
        """Another project: the last one's boundary, results and progress no longer apply."""
        self.boundary.clear_boundary()
        self.latest_boundary = None
        self.boundaryChanged.emit()
        self.results.clear_results()
        self.statistics.clear()
        self.progress.reset()
        self.progress.setFormat("ready")
        self._position = ""
        self.show_message("")

    # -- settings ---------------------------------------------------------------------
    def fill(self) -> None:
        """Show the document's settings, as they are (a file may hold values to fix)."""
        t = self.doc.project.training
        self._filling = True
        for key, widget in self.fields.items():
            _show(widget, key, format_args(t["optimizer"]) if key == ARGUMENTS
                  else lookup(t, key)[1])
        self.opt_args.setCursorPosition(0)
        spec = OPTIMIZERS.get(t["optimizer"].get("name", ""))
        self.rule.setText(f"<small>{spec.title}: {spec.rule}</small>" if spec else "")
        self._filling = False
        self._refresh()
        self._show_loss()

    def _show_loss(self) -> None:
        node = self.doc.analysis.loss_node
        spec = CATALOGUE[self.doc.graph.nodes[node]["type"]] if node in self.doc.graph else None
        self.loss.setText(f"<small>{spec.type}: {spec.formula}</small>" if spec else
                          "<small>no loss node: add one to train</small>")

    def _value(self, key: str) -> Any:
        """What field `key` holds, as the file stores it; ValueError says why not."""
        widget = self.fields[key]
        if isinstance(widget, QComboBox):
            return widget.currentText() if widget.currentIndex() >= 0 else \
                lookup(self.doc.project.training, key)[1]  # the file's value, marked
        text = widget.text()  # type: ignore[attr-defined]
        return parse_args(text) if key == ARGUMENTS else FIELDS[key].parse(text)

    def _refresh(self) -> None:
        """Mark every field core refuses, as typed; Train says why while any is marked."""
        if self._filling:
            return
        t = self.doc.project.training
        reasons: dict[str, str] = {}
        for key in self.fields:
            try:
                t = with_field(t, key, self._value(key))
            except ValueError as exc:
                reasons[key] = str(exc)
        for where, message in training_problems(t):
            reasons.setdefault(owner(where) or where, message)
        self.reasons = reasons
        for key, widget in self.fields.items():
            mark(widget, reasons.get(key), self.tips[key])
        if self._file_problems and not reasons:
            self._file_problems = False
            self.show_message("")  # all fixed: the file's list no longer applies
        self._update_actions()

    def _edited(self) -> None:
        """A field's edit ended (a bound method: nothing arrives once the dock is gone)."""
        self._commit(self.sender().property("field"))

    def _commit(self, key: str) -> None:
        """One field was edited: its value goes to the document (one undo step) only when
        core accepts it."""
        if self._filling:
            return
        self._refresh()
        if key in self.reasons:
            return
        old = self.doc.project.training
        value = self._value(key)
        if key == ARGUMENTS and value == parse_args(format_args(old["optimizer"])):
            return  # the defaults as shown, untouched
        new = with_field(old, key, value)
        if new != old:
            self.doc.undo_stack.push(SetTraining(self.doc, old, new, f"Change {_label(key)}"))

    def _update_actions(self) -> None:
        if not self.actions:
            return
        idle = self.controller.state == "idle"
        blocked = "; ".join(self.reasons.values())
        train = self.actions["train"]
        train.setEnabled(idle and not blocked)
        train.setToolTip(f"Cannot train: {blocked}" if blocked else self._train_tip)
        self.actions["step"].setEnabled(self.controller.state == "paused" or
                                        (idle and not blocked))

    # -- runs -------------------------------------------------------------------------
    def start(self) -> None:
        if self._can_start():
            self.controller.train()

    def step(self) -> None:
        """Train on one batch: a run that cannot start is refused as Train refuses it."""
        if self.controller.state != "idle" or self._can_start():
            self.controller.step()

    def _can_start(self) -> bool:
        """Whether a run may start now; if not, the reason is shown."""
        if self.doc.analysis.errors:
            self.show_failure("the graph has problems; fix them first (see the inspector)")
            return False
        if self.doc.structure_locked:  # step-through shows a step, or one is being recorded
            self.show_failure("leave step-through first (F11), then train")
            return False
        return True

    def _run_started(self) -> None:
        self.plots.prepare_run()  # while the torch thread builds the trainer
        self.show_message("")
        self._start_time = time.perf_counter()
        self._position = ""  # the last run's place is not this one's
        self._show_state(self.controller.state)

    def _run_began(self, key: str, label: str, colour: str) -> None:
        """The run's folder exists: its curves go on from here (a continued run's too)."""
        self.plots.add_run(key, label, colour)

    def _run_ended(self, outcome: str) -> None:
        self.progress.setValue(max(self.progress.value(), 0))  # a bar never started shows no text
        self._show_state(outcome)

    def _show_state(self, state: str) -> None:
        """The progress line: the run's state (running, paused, stopped, finished, failed),
        then where it stands."""
        self.progress.setFormat(f"{state} · {self._position}" if self._position else state)

    def watch_boundary(self, thumbnails: bool | None = None) -> None:
        """Boundary probes during a run only while they are on screen: the boundary tab, or
        the canvas's node thumbnails (`thumbnails`, as the window says)."""
        if thumbnails is not None:
            self._thumbnails = thumbnails
        self.controller.worker.watch_boundary = (self._thumbnails
                                                 or self.tabs.currentWidget() is self.boundary)

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
            elif isinstance(record, StatisticsRecord):
                self.statistics.update(record)
        if steps:
            if self.controller.state == "idle":  # a traced step
                self.plots.add_between_runs(steps)
            else:
                self.plots.add(steps)
            self._progress(steps)

    def _progress(self, records: list[object]) -> None:
        last = next((r for r in reversed(records) if isinstance(r, StepRecord)), None)
        if last is None:
            return
        epochs = self.controller.epochs if self.controller.state != "idle" else \
            self.doc.project.training.get("epochs", 1)
        total = epochs * last.batches
        done = (last.epoch - 1) * last.batches + last.batch
        self.progress.setMaximum(total)
        self.progress.setValue(done)
        self._position = f"epoch {last.epoch}/{epochs} · step {last.step}"
        if self.controller.state == "idle":  # a single traced step, not a run
            self.progress.setFormat(self._position)
        elif self.controller.state == "paused":
            self._show_state("paused")
        else:
            elapsed = time.perf_counter() - self._start_time
            eta = elapsed / max(done, 1) * (total - done)
            self.progress.setFormat(f"running · {self._position} · "
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

    def show_message(self, text: str) -> None:
        """Show `text` below the controls (it wraps and scrolls), or hide the area."""
        self._file_problems = False
        self.error.setText(text)
        self.message_area.setVisible(bool(text))
        self.message_area.verticalScrollBar().setValue(0)
        if text:
            QTimer.singleShot(0, self._reveal_message)  # once the layout made room for it

    def _reveal_message(self) -> None:
        self.settings.ensureWidgetVisible(self.message_area, 0, 0)

    def show_file_problems(self, name: str, problems: list[str]) -> None:
        """List the problems of a file just opened, until the form has none left."""
        self.show_message(f"{name} has problems to fix before training:\n"
                          + "\n".join(f"• {problem}" for problem in problems))
        self._file_problems = True

    def show_failure(self, message: str) -> None:
        self.show_message(message)
        self.window().statusBar().showMessage("Training stopped: the reason is below the "
                                              "training controls.", 10_000)

    def _state_changed(self, state: str) -> None:
        if state != "idle":
            self._show_state(state)
        if not self.actions:
            return
        idle = state == "idle"
        self.actions["pause"].setEnabled(not idle)
        self.actions["pause"].setText("Resume" if state == "paused" else "Pause")
        self.actions["stop"].setEnabled(not idle)
        self.actions["reset"].setEnabled(idle)
        for widget in (self.dataset, self.split, self.optimizer, self.batch, self.device,
                       self.seed):
            widget.setEnabled(idle)
        self._update_actions()

    def toggle_pause(self) -> None:
        if self.controller.state == "running":
            self.controller.pause()
        elif self.controller.state == "paused":
            self.controller.resume()


def _label(key: str) -> str:
    return "optimizer arguments" if key == ARGUMENTS else FIELDS[key].label


def _show(widget: QWidget, key: str, value: Any) -> None:
    """Put a value of the file into its field; one the field cannot hold is shown as text
    (a spin box) or as no choice (a combo box), and marked."""
    if isinstance(widget, QComboBox):
        if value not in [widget.itemText(i) for i in range(widget.count())] and \
                isinstance(value, str) and FIELDS[key].problem(value) is None:
            widget.addItem(value)  # a valid device this machine lacks: show the truth
        widget.setCurrentIndex(widget.findText(value) if isinstance(value, str) else -1)
    elif isinstance(widget, QSpinBox):
        if isinstance(value, int) and not isinstance(value, bool) and \
                widget.minimum() <= value <= widget.maximum():
            widget.setValue(value)
        widget.lineEdit().setText(str(value))
    elif isinstance(widget, QLineEdit):
        widget.setText(str(value))
