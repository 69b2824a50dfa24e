"""Comparisons in the window: Run ▸ Compare… and the lessons queue planned runs through
the window's own training controller, one after another, each with its live curves and its
row in the runs table; when the last has ended, the one with the lowest final validation
loss is marked.

One run at a time in the window is the fast way on a small machine: two threads running
torch in one process each slow to about half speed (shared/measurements.md), so a second
run beside the first would only make both late.
"""

from __future__ import annotations

from functools import partial
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMenu, QToolBar, QToolButton, QWidget

from layerlab.app import lessons_dialog
from layerlab.app.compare_dialog import CompareDialog
from layerlab.core.errors import GraphError
from layerlab.core.runs import read_run
from layerlab.core.sweep import PlannedRun

if TYPE_CHECKING:
    from layerlab.app.main_window import MainWindow

_html = partial(escape, quote=False)  # Qt's rich text knows no &#x27;

SHORTCUT = "Ctrl+Shift+K"


class WrappedText(QLabel):
    """A wrapping label exactly as tall as its text at its width (in a toolbar, a wrapping
    label asks for a near-square and the strip grows three times too tall)."""

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.fit()

    def fit(self) -> None:
        height = self.heightForWidth(max(self.width(), 200))
        if height > 0:  # -1 while it holds no text
            self.setFixedHeight(height)


class Banner(QToolBar):
    """A strip across the top of the window: what is being compared, what to look for,
    which run is training; Stop ends the comparison, × hides the strip once it is over."""

    stopRequested = Signal()

    def __init__(self) -> None:
        super().__init__("Comparison")
        self.setObjectName("compareBanner")
        self.setAccessibleName("Comparison")
        self.setMovable(False)
        self.setFloatable(False)
        self.toggleViewAction().setVisible(False)  # it shows itself while it has news
        self.text = WrappedText()
        self.text.setObjectName("compareBannerText")
        self.text.setAccessibleName("Comparison progress")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.stop = self._button("compareStop", "Stop", "Stop this run and the rest of the "
                                 "comparison", self.stopRequested.emit)
        self.close_button = self._button("compareClose", "×", "Hide this strip", self.hide)
        box = QWidget()
        layout = QHBoxLayout(box)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.stop)
        layout.addWidget(self.close_button)
        self.addWidget(box)
        self.setStyleSheet("QToolBar#compareBanner { background: #fff4d6; "
                           "border-bottom: 1px solid #e0c070; } "
                           "QLabel { color: #3a3000; }")
        self.hide()

    def _button(self, name: str, text: str, tip: str, slot: object) -> QToolButton:
        button = QToolButton()
        button.setObjectName(name)
        button.setText(text)
        button.setAccessibleName(tip)
        button.setToolTip(tip)
        button.clicked.connect(slot)
        return button

    def show_text(self, title: str, look_for: str, progress: str, running: bool) -> None:
        lines = [f"<b>{_html(title)}</b> — {_html(progress)}"]
        if look_for:
            lines.append(f"<i>What to look for:</i> {_html(look_for)}")
        self.text.setText("<br>".join(lines))
        self.stop.setVisible(running)
        self.close_button.setVisible(not running)
        self.show()
        self.text.fit()


class CompareQueue(QObject):
    """Planned runs trained one after another by the window's controller."""

    finished = Signal(str)  # the best run's key, or "" when none finished

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.controller = window.training.controller
        self.banner = Banner()
        self.banner.stopRequested.connect(self.stop)
        self.plans: list[PlannedRun] = []
        self.ended: list[tuple[str, str]] = []  # (key, how it ended) of each run, in order
        self.title = self.look_for = ""
        self.active = False
        self._key = ""  # the running run's folder, once it began
        self._in_flight = False  # one of the queue's runs was sent and has not ended
        self.controller.run_started.connect(self._started)
        self.controller.run_ended.connect(self._ended)
        window.doc.reset.connect(self._project_replaced)

    def start(self, plans: list[PlannedRun], title: str, look_for: str = "") -> bool:
        """Queue `plans`; False (and a status message) when a run is going already."""
        if self.active or self.controller.state != "idle":
            self.window.statusBar().showMessage("A run is going: stop it first, then "
                                                "compare.", 6000)
            return False
        self.plans, self.title, self.look_for = plans, title, look_for
        self.ended = []
        self.active = True
        self.window.training.plots.mark_best(None)
        self.window.training.runs_table.mark_best(None)
        self._next()
        return True

    def _next(self) -> None:
        if not self.active:
            return
        if len(self.ended) == len(self.plans):
            self._finish(stopped=False)
            return
        plan = self.plans[len(self.ended)]
        self._show(f"run {len(self.ended) + 1} of {len(self.plans)}: {plan.label}", True)
        self.controller.reset()  # every run starts from its own seed's initialisation
        self._key, self._in_flight = "", True
        weights = None if plan.init_weights is None else str(plan.init_weights)
        if not self.controller.train(project=plan.project, label=plan.label,
                                     varied=plan.varied, init_weights=weights):
            self._in_flight = False
            self._finish(stopped=True, why=f"{plan.label} could not start")

    def _project_replaced(self) -> None:
        """Another project: the last comparison's outcome no longer applies."""
        if not self.active:
            self.banner.hide()

    def _started(self, key: str, label: str, colour: str) -> None:
        if self._in_flight:
            self._key = key

    def _ended(self, key: str, status: str) -> None:
        """The queue's run ended ("" as its key when it ended before it began)."""
        if not self._in_flight:
            return
        self._in_flight = False
        self.ended.append((key or self._key, status))
        if status == "stopped":
            self._finish(stopped=True)
        else:  # after every other listener of this run's end has had it
            QTimer.singleShot(0, self._next)

    def stop(self) -> None:
        """Stop the running run and drop the rest of the queue."""
        if self._in_flight:
            self.controller.stop()
        elif self.active:
            self._finish(stopped=True)

    def _finish(self, stopped: bool, why: str = "") -> None:
        self.active = False
        best = self.best()
        self.window.training.plots.mark_best(best)
        self.window.training.runs_table.mark_best(best)
        done = sum(status == "finished" for _, status in self.ended)
        failed = sum(status == "failed" for _, status in self.ended)
        head = (f"{why}; " if why else "") + (
            f"stopped after {done} of {len(self.plans)} runs" if stopped
            else f"{len(self.plans)} runs done") + (f", {failed} failed" if failed else "")
        tail = f"best (lowest final validation loss): {_best_text(best)}" if best \
            else "no run finished"
        self._show(f"{head} · {tail}", False)
        self.finished.emit(best or "")

    def best(self) -> str | None:
        """The finished run of this queue with the lowest final validation loss."""
        losses = {}
        for key, status in self.ended:
            loss = read_run(Path(key)).final_val_loss if key and status == "finished" \
                else None
            if loss is not None:
                losses[key] = loss
        return min(losses, key=losses.__getitem__) if losses else None

    def _show(self, progress: str, running: bool) -> None:
        if not self.window.toolBarBreak(self.banner):  # a line of its own, whatever the
            self.window.insertToolBarBreak(self.banner)  # window's saved layout says
        self.banner.show_text(self.title, self.look_for, progress, running)


def _best_text(key: str) -> str:
    run = read_run(Path(key))
    return f"{run.label} ({run.final_val_loss:.4g})"


def open_compare(window: MainWindow, queue: CompareQueue) -> CompareDialog | None:
    """Run ▸ Compare…: the dialog, window-modal; its runs are queued when it is accepted."""
    if window.doc.analysis.errors:
        window.statusBar().showMessage("Fix the graph's problems first.", 5000)
        return None
    try:
        project = window.training.controller.snapshot()
    except GraphError as exc:
        window.training.show_failure("; ".join(message for _, message in exc.errors))
        return None
    dialog = CompareDialog(project, window)
    dialog.accepted.connect(lambda: queue.start(dialog.plans, dialog.title()))
    dialog.finished.connect(dialog.deleteLater)
    dialog.open()
    return dialog


def install(window: MainWindow) -> CompareQueue:
    """Run ▸ Compare… and Help ▸ Lessons, the banner, and the queue behind both."""
    queue = CompareQueue(window)
    window.addToolBarBreak()
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, queue.banner)
    window.run_menu.addSeparator()
    compare = window.action("actionCompare", "&Compare…", lambda: open_compare(window, queue),
                            SHORTCUT, "Train every combination of one or two settings and "
                            "compare their curves")
    window.run_menu.addAction(compare)

    lessons = window.action("actionLessons", "&Lessons…",
                            lambda: lessons_dialog.show_lessons(window, queue),
                            tip="Ready experiments that show, on real runs, what the "
                            "optimizers, regularisation, activations, initialisation and "
                            "pre-training do")
    help_menu = window.menuBar().findChild(QMenu, "helpMenu")
    help_menu.insertAction(window.actions["actionAbout"], lessons)
    help_menu.insertSeparator(window.actions["actionAbout"])

    def enable() -> None:
        idle = window.training.controller.state == "idle" and not queue.active
        compare.setEnabled(idle)
        lessons.setEnabled(idle)

    window.training.controller.stateChanged.connect(enable)
    queue.finished.connect(enable)
    return queue
