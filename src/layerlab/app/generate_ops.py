"""Run ▸ Generate… (F9): the Generate panel as a dock, and the worker that writes text in the
torch thread with the current weights (the trainer's, as the last run or a weights file left
them), sending each token as it is drawn. The worker is a thin adapter over
core/text_model.py; it also carries the trained weights when a block is opened into its
parts (app/parts_ops.py)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import QMenu

from layerlab.app.generate_panel import GeneratePanel
from layerlab.app.training_worker import TrainingWorker, describe
from layerlab.core.datasets import Dataset, load_dataset, project_folder
from layerlab.core.errors import GraphError
from layerlab.core.generate import GenerateError
from layerlab.core.health_watch import HealthWatch
from layerlab.core.project import Project
from layerlab.core.text_model import carry_weights, generation_problem, same_model, write
from layerlab.core.trainer import Trainer

if TYPE_CHECKING:
    from layerlab.app.main_window import MainWindow

SHORTCUT = "F9"
TRAIN_FIRST = ("There are no trained weights yet: train the model first (Run ▸ Train, F5) "
               "or load weights (File ▸ Load Weights…), then generate.")
CHANGED = ("The graph has changed since its weights were trained: train it again "
           "(Run ▸ Train, F5), then generate.")
BUSY = ("Training is under way: stop it (Run ▸ Stop, Shift+F5) or let it finish, then "
        "generate.")


@dataclass(frozen=True)
class GenerateRequest:
    project: Project  # a snapshot of the document
    prompt: str
    n: int
    temperature: float
    seed: int


class _Stopped(Exception):
    """The person pressed Stop: the tokens written so far stay."""


class GenerateWorker(QObject):
    """Lives in the torch thread beside the training worker, whose trainer holds the
    weights."""

    token = Signal(str, float)  # a token as it is drawn, and its probability
    finished = Signal(str)  # a sentence about what was written
    refused = Signal(str)  # why nothing (more) was written
    carried = Signal(str)  # what became of the trained weights when the graph was redrawn

    def __init__(self, training: TrainingWorker) -> None:
        super().__init__()
        self.training = training
        self.given: Trainer | None = None  # a trainer whose weights came from elsewhere
        self.stopping = threading.Event()  # set by the GUI thread: stop after this token
        training.done.connect(self._loaded, Qt.ConnectionType.DirectConnection)

    def _loaded(self, kind: str, report: str) -> None:
        """Weights loaded from a file count as trained weights."""
        if kind == "weights" and report.startswith("Weights from"):
            self.given = self.training.trainer

    def _trained(self) -> Trainer | None:
        trainer = self.training.trainer
        if trainer is not None and (trainer.step > 0 or trainer is self.given):
            return trainer
        return None

    @Slot(object)
    def generate(self, request: GenerateRequest) -> None:
        written: list[float] = []

        def heard(token: int, p: float) -> None:
            written.append(p)
            self.token.emit(vocab[token], p)
            if self.stopping.is_set():
                raise _Stopped

        try:
            trainer = self._source(request.project)
            vocab = trainer.data.vocab
            write(trainer.model, trainer.data, trainer.project.graph, request.prompt,
                  request.n, seed=request.seed, temperature=request.temperature,
                  on_token=heard)
        except _Stopped:
            pass
        except GenerateError as exc:
            self.refused.emit(str(exc))
            return
        except Exception as exc:  # the thread boundary: nothing escapes a slot
            self.refused.emit(describe(exc))
            return
        mean = sum(written) / len(written)
        stopped = f"Stopped after {len(written)} of {request.n}" if len(written) < request.n \
            else f"Wrote {len(written)}"
        self.finished.emit(f"{stopped} tokens (mean probability {mean:.3f}) "
                           f"at temperature {request.temperature:g}, seed {request.seed}.")

    def _source(self, project: Project) -> Trainer:
        """The trainer whose weights write, or GenerateError saying what to do first."""
        trainer = self._trained()
        if trainer is not None and same_model(trainer.project.graph, project.graph):
            return trainer
        dataset = project.training["dataset"]
        data: Dataset = load_dataset(dataset["name"], dataset.get("options", {}),
                                     base=project_folder(project.path))
        problem = generation_problem(data)  # the advice that matters most comes first
        raise GenerateError(problem or (CHANGED if trainer is not None else TRAIN_FIRST))

    @Slot(object, object, object)
    def carry(self, before: nx.DiGraph, project: Project, mapping: dict[str, str]) -> None:
        """The graph was redrawn (`before` → `project`, the same model with its weights'
        keys renamed by `mapping`): a trained trainer's weights go to a trainer of the new
        graph, so that Generate, Export and the next run start from them."""
        trainer = self._trained()
        if trainer is None or not same_model(trainer.project.graph, before):
            return
        try:
            self.training.reset()
            fresh = self.training._ensure_trainer(project)  # the trainer the next run uses
            carry_weights(trainer.model, fresh.model, mapping)
            self.training.health = HealthWatch(fresh)  # judged from the carried weights
        except Exception as exc:  # the thread boundary: nothing escapes a slot
            self.carried.emit(f"The trained weights could not be carried over: "
                              f"{describe(exc)}")
            return
        self.given = fresh
        self.carried.emit("The trained weights were carried over.")


class GenerateOps(QObject):
    """The panel's dock, its action, and the requests to the torch thread."""

    generateRequested = Signal(object)
    carryRequested = Signal(object, object, object)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        controller = window.training.controller
        self.worker = GenerateWorker(controller.worker)
        self.worker.moveToThread(controller.thread)
        self.generateRequested.connect(self.worker.generate)
        self.carryRequested.connect(self.worker.carry)
        self.panel = GeneratePanel()
        self.dock = window.add_dock("generateDock", "Generate", self.panel,
                                    Qt.DockWidgetArea.BottomDockWidgetArea)
        window.tabifyDockWidget(window.training_dock, self.dock)
        self.dock.hide()  # shown by Run ▸ Generate…
        self.panel.requested.connect(self.ask)
        self.panel.stopRequested.connect(self.worker.stopping.set)
        self.worker.token.connect(self.panel.add_token)
        self.worker.finished.connect(self.panel.finish)
        self.worker.refused.connect(self.panel.refuse)
        self.worker.carried.connect(self._carried)
        window.doc.reset.connect(self._forget)
        controller.started.connect(self._training_started)
        self.action = window.action(
            "actionGenerate", "&Generate…", self.show_panel, SHORTCUT,
            "Type a prompt and see the trained model continue it, token by token")
        window.run_menu.addSeparator()
        window.run_menu.addAction(self.action)
        view = window.menuBar().findChild(QMenu, "viewMenu")
        toggle = self.dock.toggleViewAction()
        toggle.setObjectName("actionGenerateDock")
        view.addAction(toggle)

    def _forget(self) -> None:
        """Another project: a generation under way stops, and its text goes."""
        self.worker.stopping.set()
        self.panel.forget()

    def _training_started(self) -> None:
        """Train while text is being written: the writing stops after its token, so the run
        starts at once (it would wait behind the writing in the torch thread, shown as
        running), and the panel says how far it got."""
        self.worker.stopping.set()

    def _carried(self, report: str) -> None:
        self.window.statusBar().showMessage(report, 8000)

    def show_panel(self) -> None:
        self.dock.show()
        self.dock.raise_()
        self.panel.prompt.setFocus()

    def ask(self, prompt: str, n: int, temperature: float, seed: int) -> None:
        """Send a generation to the torch thread, unless a run holds it."""
        if self.window.training.controller.state != "idle":
            self.panel.refuse(BUSY)
            return
        try:
            project = self.window.training.controller.snapshot()
        except GraphError as exc:
            self.panel.refuse(f"The training settings have problems "
                              f"({'; '.join(m for _, m in exc.errors)}): fix them in the "
                              "Training panel, then generate.")
            return
        self.panel.begin(prompt)
        self.worker.stopping.clear()
        self.generateRequested.emit(GenerateRequest(project, prompt, n, temperature, seed))

    def carry(self, before: nx.DiGraph, mapping: dict[str, str]) -> None:
        """The document's graph was redrawn from `before`; the weights follow (torch thread)."""
        self.carryRequested.emit(before, self.window.training.controller.snapshot(), mapping)


def install(window: MainWindow) -> GenerateOps:
    return GenerateOps(window)
