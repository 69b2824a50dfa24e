"""Run ▸ Compare…: pick one or two settings to vary and the values to try; every
combination becomes a run.

The dialog only gathers text in the form `layerlab sweep --set` takes (`lr=0.001,0.01`,
`drop1.p=0,0.5`): core reads and checks it (core/sweep.py), so the window and the command
line accept exactly the same values and say the same things about the wrong ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.training_form import FORM_STYLE, mark
from layerlab.core.catalogue import CATALOGUE, INIT_FORMULAS, OPTIMIZERS
from layerlab.core.project import Project
from layerlab.core.sweep import PlannedRun, SweepError, parse_sets, plan_sweep

MAX_SETTINGS = 2
MAX_RUNS = 100
SEED_OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")  # the lessons' five
# a hidden layer's choices (Softmax and LogSoftmax turn scores into probabilities)
ACTIVATIONS = tuple(t for t, spec in CATALOGUE.items()
                    if spec.group == "activation" and t not in ("Softmax", "LogSoftmax"))


class ChoiceBoxes(QWidget):
    """A checkbox per choice, three to a row; `changed` on every tick."""

    changed = Signal()

    def __init__(self, name: str, choices: dict[str, str], ticked: tuple[str, ...]) -> None:
        super().__init__()
        self.setObjectName(name)
        self.boxes: dict[str, QCheckBox] = {}
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        for i, (choice, tip) in enumerate(choices.items()):
            box = QCheckBox(choice)
            box.setObjectName(f"{name}_{choice}")
            box.setAccessibleName(choice)
            box.setToolTip(tip)
            box.toggled.connect(self.changed)
            grid.addWidget(box, i // 3, i % 3)
            self.boxes[choice] = box
        self.tick(ticked)

    def tick(self, ticked: tuple[str, ...]) -> None:
        for choice, box in self.boxes.items():
            box.setChecked(choice in ticked)

    def values(self) -> list[str]:
        return [c for c, box in self.boxes.items() if box.isChecked()]


class Setting:
    """One row of the dialog: a checkbox that says "vary this", a node picker for a node's
    setting, and the values to try."""

    def __init__(self, key: str, label: str, tip: str, editor: QWidget,
                 values: Callable[[], list[str]], nodes: list[str] | None = None) -> None:
        self.key, self.label, self.tip = key, label, tip
        self.editor, self._values = editor, values
        self.check = QCheckBox(label)
        self.check.setObjectName(f"vary_{key}")
        self.check.setAccessibleName(f"Vary {label}")
        self.check.setToolTip(tip)
        editor.setToolTip(tip)
        editor.setAccessibleName(f"{label} values")
        self.node: QComboBox | None = None
        if nodes is not None:
            self.node = QComboBox()
            self.node.setObjectName(f"node_{key}")
            self.node.setAccessibleName(f"{label}: node")
            self.node.setToolTip(f"The node whose {label} varies")
            self.node.addItems(nodes)
            if not nodes:
                self.check.setToolTip(f"{tip} (the project has no node with this setting)")
        self.set_enabled(False)
        self.check.toggled.connect(self.set_enabled)

    @property
    def available(self) -> bool:
        """False for a node's setting when the project has no node with it."""
        return self.node is None or self.node.count() > 0

    def set_enabled(self, on: bool) -> None:
        self.editor.setEnabled(on)
        if self.node is not None:
            self.node.setEnabled(on)

    def values(self) -> list[str]:
        return self._values()

    def set_text(self) -> str:
        """The setting as `layerlab sweep --set` takes it."""
        prefix = f"{self.node.currentText()}.{self.key}" if self.node is not None else self.key
        return f"{prefix}={','.join(self.values())}"


def _items(edit: QLineEdit) -> Callable[[], list[str]]:
    return lambda: [item.strip() for item in edit.text().split(",") if item.strip()]


def _numbers(*values: float) -> str:
    """'0.001, 0.01, 0.1': the values in order, each once."""
    return ", ".join(f"{v:g}" for v in sorted(set(values)))


class CompareDialog(QDialog):
    """Asks which settings to vary; `plans` holds the runs once the person pressed Run."""

    def __init__(self, project: Project, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("compareDialog")
        self.setAccessibleName("Compare runs")
        self.setWindowTitle("Compare runs")
        self.setStyleSheet(FORM_STYLE)
        self.project = project
        self.plans: list[PlannedRun] = []
        self.settings = self._training_settings() + self._node_settings()
        self._build()
        for setting in self.settings:
            setting.check.toggled.connect(self._changed)
            _on_change(setting.editor, self._changed)
            if setting.node is not None:
                setting.node.currentTextChanged.connect(self._changed)
        self._changed()

    # -- the settings -----------------------------------------------------------------
    def _line(self, name: str, text: str) -> QLineEdit:
        edit = QLineEdit(text)
        edit.setObjectName(name)
        return edit

    def _training_settings(self) -> list[Setting]:
        t = self.project.training
        lr, batch, epochs = float(t["optimizer"]["lr"]), int(t["batch_size"]), int(t["epochs"])
        optimizers = ChoiceBoxes("optimizerChoices", {
            name: f"{spec.title}: {spec.rule}" for name, spec in OPTIMIZERS.items()},
            SEED_OPTIMIZERS)
        lrs = self._line("lrValues", _numbers(lr / 10, lr, lr * 10))
        batches = self._line("batchValues", _numbers(max(1, batch // 2), batch, batch * 2))
        l1 = self._line("l1Values", "0, 0.0001, 0.001")
        l2 = self._line("l2Values", "0, 0.0001, 0.001")
        epoch_values = self._line("epochValues", _numbers(max(1, epochs // 2), epochs))
        self.repeats = QSpinBox()
        self.repeats.setObjectName("seedRepeats")
        self.repeats.setRange(1, MAX_RUNS)
        self.repeats.setValue(3)
        self.repeats.setSuffix(" seeds")
        seed = int(t["seed"])
        return [
            Setting("optimizer", "optimizer", "Each ticked optimizer is one run, with the "
                    "project's learning rate", optimizers, optimizers.values),
            Setting("lr", "learning rate", "Learning rates to try, separated by commas",
                    lrs, _items(lrs)),
            Setting("batch_size", "batch size", "Batch sizes to try, separated by commas",
                    batches, _items(batches)),
            Setting("l1", "L1 λ", "L1 strengths to try (0: none), separated by commas",
                    l1, _items(l1)),
            Setting("l2", "L2 λ", "L2 strengths to try (0: none), separated by commas",
                    l2, _items(l2)),
            Setting("epochs", "epochs", "Numbers of epochs to try, separated by commas",
                    epoch_values, _items(epoch_values)),
            Setting("seed", "seed (repeats)", f"The same run with seeds {seed}, {seed + 1}, "
                    "…: how much of a difference is chance", self.repeats,
                    lambda: [str(seed + i) for i in range(self.repeats.value())]),
        ]

    def _node_settings(self) -> list[Setting]:
        g = self.project.graph
        types = {n: g.nodes[n]["type"] for n in g}
        dropouts = [n for n, t in types.items() if t == "Dropout"]
        activations = [n for n, t in types.items() if t in ACTIVATIONS]
        inits = [n for n, t in types.items() if t in CATALOGUE and CATALOGUE[t].has_init]
        p = self._line("dropoutValues", "0, 0.25, 0.5")
        self.activation_types = ChoiceBoxes("activationChoices", {
            name: f"{name}: {CATALOGUE[name].formula}" for name in ACTIVATIONS}, ())
        self.init_choices = ChoiceBoxes("initChoices", dict(INIT_FORMULAS),
                                        ("default", "xavier_uniform", "kaiming_uniform"))
        settings = [
            Setting("p", "Dropout p", "Dropout probabilities to try for the chosen node",
                    p, _items(p), dropouts),
            Setting("type", "activation", "Activation functions to try at the chosen node",
                    self.activation_types, self.activation_types.values, activations),
            Setting("init", "init", "Weight initialisations to try for the chosen node",
                    self.init_choices, self.init_choices.values, inits),
        ]
        node = settings[1].node
        assert node is not None
        node.currentTextChanged.connect(self._activation_node)
        self._activation_node(node.currentText())
        return settings

    def _activation_node(self, node: str) -> None:
        """The chosen node's own function against the usual alternative (ReLU, or Sigmoid
        against a ReLU)."""
        if node in self.project.graph:
            own = self.project.graph.nodes[node]["type"]
            self.activation_types.tick((own, "Sigmoid" if own == "ReLU" else "ReLU"))

    # -- layout -----------------------------------------------------------------------
    def _build(self) -> None:
        intro = QLabel("Tick one or two settings and the values to try: every combination "
                       "is trained as its own run, one after another, and the run with the "
                       "lowest final validation loss is marked.")
        intro.setWordWrap(True)
        grid = QGridLayout()
        for row, setting in enumerate(self.settings):
            grid.addWidget(setting.check, row, 0, Qt.AlignmentFlag.AlignTop)
            if setting.node is not None:
                grid.addWidget(setting.node, row, 1, Qt.AlignmentFlag.AlignTop)
                grid.addWidget(setting.editor, row, 2)
            else:
                grid.addWidget(setting.editor, row, 1, 1, 2)
        grid.setColumnStretch(2, 1)
        self.epochs = QSpinBox()
        self.epochs.setObjectName("compareEpochs")
        self.epochs.setAccessibleName("Epochs of each run")
        self.epochs.setToolTip("How long each run trains (the project keeps its own setting)")
        self.epochs.setRange(1, 100_000)
        self.epochs.setValue(int(self.project.training["epochs"]))
        self.epochs.valueChanged.connect(self._changed)
        epochs = QHBoxLayout()
        epochs.addWidget(QLabel("epochs of each run"))
        epochs.addWidget(self.epochs)
        epochs.addStretch(1)
        self.count = QLabel()
        self.count.setObjectName("compareCount")
        self.count.setAccessibleName("Number of runs")
        self.count.setStyleSheet("font-weight: bold;")
        self.error = QLabel()
        self.error.setObjectName("compareError")
        self.error.setAccessibleName("Why the comparison cannot run")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #e0443e;")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.run_button = self.buttons.addButton("Run", QDialogButtonBox.ButtonRole.AcceptRole)
        self.run_button.setObjectName("compareRun")
        self.run_button.setToolTip("Train every combination, one run after another")
        self.run_button.setDefault(True)
        self.buttons.accepted.connect(self.run)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(grid)
        layout.addLayout(epochs)
        layout.addWidget(self.count)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

    # -- state ------------------------------------------------------------------------
    def chosen(self) -> list[Setting]:
        return [s for s in self.settings if s.check.isChecked()]

    def title(self) -> str:
        """What is compared, in words: 'Comparing optimizer × Dropout p of drop1'."""
        return "Comparing " + " × ".join(s.label + (f" of {s.node.currentText()}" if s.node
                                                    else "") for s in self.chosen())

    def _changed(self) -> None:
        """At most two settings vary; the count says how many runs that makes."""
        chosen = self.chosen()
        for setting in self.settings:
            setting.check.setEnabled(setting.available and (
                setting.check.isChecked() or len(chosen) < MAX_SETTINGS))
        self.epochs.setEnabled(not any(s.key == "epochs" for s in chosen))
        counts = [len(s.values()) for s in chosen]
        total = math.prod(counts) if counts else 0
        self.count.setText("Tick a setting to vary." if not counts else
                           f"{' × '.join(map(str, counts))} = {total} runs" if len(counts) > 1
                           else f"{total} run{'s' if total != 1 else ''}")
        self.run_button.setEnabled(total > 0)
        self.error.clear()
        for setting in self.settings:
            mark(setting.editor, None, setting.tip)

    def run(self) -> None:
        """Plan every combination; a value core refuses is marked and named, and the
        dialog stays open."""
        chosen = self.chosen()
        for setting in chosen:
            reason = self._problem(setting)
            if reason:
                mark(setting.editor, reason, setting.tip)
                self.error.setText(reason)
                setting.editor.setFocus()
                return
        base = {} if any(s.key == "epochs" for s in chosen) else \
            {"epochs": self.epochs.value()}
        try:
            plans = plan_sweep(self.project, parse_sets([s.set_text() for s in chosen],
                                                        self.project), base)
        except SweepError as exc:
            self.error.setText(_sentence(exc))
            return
        if len(plans) > MAX_RUNS:
            self.error.setText(f"That makes {len(plans)} runs; at most {MAX_RUNS} at once.")
            return
        self.plans = plans
        self.accept()

    def _problem(self, setting: Setting) -> str | None:
        """Why core refuses this setting's values (one sentence naming the field), or None."""
        values = setting.values()
        if not values:
            return f"{setting.label}: give at least one value to try."
        if len(set(values)) < len(values):
            return f"{setting.label}: each value once, please ({', '.join(values)})."
        try:
            parse_sets([setting.set_text()], self.project)
        except SweepError as exc:
            return _sentence(exc)
        return None


def _sentence(exc: SweepError) -> str:
    """Core's sentence without the command line's `--set KEY: ` (it names the field)."""
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("--set ") and ": " in text else text


def _on_change(editor: QWidget, slot: Callable[[], None]) -> None:
    if isinstance(editor, ChoiceBoxes):
        editor.changed.connect(slot)
    elif isinstance(editor, QLineEdit):
        editor.textChanged.connect(slot)
    elif isinstance(editor, QSpinBox):
        editor.valueChanged.connect(slot)
