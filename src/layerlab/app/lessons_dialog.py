"""Help ▸ Lessons: ready experiments that show the seed's claims on real runs.

Open writes the lesson's project to a file of its own (so its runs are kept beside it, as
any project's are), opens it, and queues the lesson's comparison with the same queue as
Run ▸ Compare…; the lesson's two sentences of what to look for stay in the banner. A lesson
with a pre-training run queues it alone first, then, once it has finished, the variants
that start from its weights (so the best run is picked among those alone).
"""

from __future__ import annotations

from functools import partial
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QStandardPaths, Qt, QTimer
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from layerlab.core.errors import GraphError
from layerlab.core.lessons import (
    PRETRAIN_LABEL,
    WEIGHTS,
    Lesson,
    lesson_plans,
    lessons,
    pretrain_plan,
    write_lesson_project,
)
from layerlab.core.sweep import SweepError

if TYPE_CHECKING:
    from layerlab.app.compare_ops import CompareQueue
    from layerlab.app.main_window import MainWindow

_html = partial(escape, quote=False)  # Qt's rich text knows no &#x27;


def lessons_folder() -> Path:
    """Where opened lessons are written: the application's data folder, not the package."""
    folder = Path(QStandardPaths.writableLocation(
        QStandardPaths.StandardLocation.AppDataLocation)) / "lessons"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class LessonsDialog(QDialog):
    """The lessons, each with its two sentences; `chosen` and `epochs` once Open is pressed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("lessonsDialog")
        self.setAccessibleName("Lessons")
        self.setWindowTitle("Lessons")
        self.lessons = lessons()
        self.list = QListWidget()
        self.list.setObjectName("lessonsList")
        self.list.setAccessibleName("Lessons")
        for number, lesson in enumerate(self.lessons, 1):
            item = QListWidgetItem(f"{number}. {lesson.title}")
            item.setToolTip(lesson.look_for)
            self.list.addItem(item)
        self.list.setMinimumWidth(self.list.sizeHintForColumn(0) + 24)
        self.details = QLabel()
        self.details.setObjectName("lessonDetails")
        self.details.setAccessibleName("What to look for")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.details.setMinimumWidth(340)
        self.epochs = QSpinBox()
        self.epochs.setObjectName("lessonEpochs")
        self.epochs.setAccessibleName("Epochs of each run")
        self.epochs.setToolTip("How long each of the lesson's runs trains (fewer: sooner, "
                               "but the effect may not have shown yet)")
        self.epochs.setRange(1, 100_000)
        self._lay_out()
        self.list.currentRowChanged.connect(self._show)
        self.list.itemActivated.connect(lambda item: self.accept())
        self.resize(760, 340)
        self.list.setCurrentRow(0)
        self.open_button.setEnabled(bool(self.lessons))

    def _lay_out(self) -> None:
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.open_button = buttons.addButton("Open", QDialogButtonBox.ButtonRole.AcceptRole)
        self.open_button.setObjectName("lessonOpen")
        self.open_button.setToolTip("Open the lesson's project and train its runs, one "
                                    "after another")
        self.open_button.setDefault(True)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        epochs = QHBoxLayout()
        epochs.addWidget(QLabel("epochs of each run"))
        epochs.addWidget(self.epochs)
        epochs.addStretch(1)
        right = QVBoxLayout()
        right.addWidget(self.details, 1)
        right.addLayout(epochs)
        body = QHBoxLayout()
        body.addWidget(self.list)
        body.addLayout(right, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(body)
        layout.addWidget(buttons)

    @property
    def chosen(self) -> Lesson:
        return self.lessons[self.list.currentRow()]

    def _show(self, row: int) -> None:
        if row < 0:
            return
        lesson = self.lessons[row]
        self.epochs.setValue(lesson.epochs or int(lesson.project().training["epochs"]))
        first = [f"{PRETRAIN_LABEL} ({lesson.pretrain.epochs} epochs), then:"] \
            if lesson.pretrain else []
        steps = [*lesson.sets, *first, *(variant.label for variant in lesson.variants)]
        sets = "".join(f"<br>&nbsp;&nbsp;<code>{_html(s)}</code>" for s in steps)
        self.details.setText(
            f"<b>{_html(lesson.title)}</b><p>{_html(lesson.look_for)}</p>"
            f"<p>{lesson.runs} runs, one after another:{sets}</p>"
            f"<p><small>From the command line: <code>layerlab lessons {lesson.name}</code>"
            "</small></p>")


def open_lesson(window: MainWindow, queue: CompareQueue, lesson: Lesson,
                epochs: int) -> bool:
    """Open the lesson's project (as its own file) and queue its runs."""
    if queue.active or window.training.controller.state != "idle":
        window.statusBar().showMessage("A run is going: stop it first, then open the "
                                       "lesson.", 6000)
        return False
    if not _may_replace(window, lessons_folder() / f"{lesson.name}.layerlab.json", lesson):
        return False
    try:
        path = write_lesson_project(lesson, lessons_folder())
    except OSError as exc:
        window.show_error("Cannot open the lesson", f"{lessons_folder()}: {exc.strerror}")
        return False
    if not window.open_path(path):
        return False
    _hide_earlier_runs(window)
    if lesson.pretrain is not None:
        return _pretrain_first(window, queue, lesson, epochs, path)
    return _start_runs(window, queue, lesson, epochs)


def _start_runs(window: MainWindow, queue: CompareQueue, lesson: Lesson, epochs: int,
                pretrained: Path | None = None) -> bool:
    try:
        plans = lesson_plans(lesson, window.training.controller.snapshot(), epochs,
                             pretrained)
    except (SweepError, GraphError) as exc:
        window.show_error("Cannot run the lesson", str(exc))
        return False
    return queue.start(plans, lesson.title, lesson.look_for)


def _pretrain_first(window: MainWindow, queue: CompareQueue, lesson: Lesson, epochs: int,
                    path: Path) -> bool:
    """Queue the pre-training run; once it has finished, its weights start the variants
    (a pre-training stopped or failed starts nothing). Its curves step aside then (unticked,
    still listed): a language model's loss would squash the variants' on a shared axis."""
    try:
        first = pretrain_plan(lesson, path)
    except (SweepError, GraphError) as exc:
        window.show_error("Cannot run the lesson", str(exc))
        return False

    def then(key: str) -> None:
        queue.finished.disconnect(then)
        if key:  # after the queue's other listeners have had its end
            QTimer.singleShot(0, lambda: fine_tune(Path(key) / WEIGHTS))

    def fine_tune(weights: Path) -> None:
        _hide_earlier_runs(window)
        _start_runs(window, queue, lesson, epochs, weights)

    queue.finished.connect(then)
    if queue.start([first], lesson.title, lesson.look_for):
        return True
    queue.finished.disconnect(then)
    return False


def _hide_earlier_runs(window: MainWindow) -> None:
    """A lesson opened again: its runs of an earlier time stay listed but unticked (as a
    person unticks them), so the new comparison's curves stand alone."""
    rows = window.training.runs_table.table
    for row in range(rows.rowCount()):
        rows.item(row, 0).setCheckState(Qt.CheckState.Unchecked)


def _may_replace(window: MainWindow, path: Path, lesson: Lesson) -> bool:
    """A copy of the lesson that the person changed and saved is replaced only if they say
    so (its runs stay beside it either way)."""
    try:
        changed = path.read_text(encoding="utf-8") != lesson.project_text()
    except OSError:  # not there yet (or unreadable: writing it will say why)
        return True
    return not changed or QMessageBox.question(
        window, "Start the lesson again",
        f"{path} holds your changes to the lesson's project. Replace them with the "
        "lesson's own project?") == QMessageBox.StandardButton.Yes


def show_lessons(window: MainWindow, queue: CompareQueue) -> LessonsDialog:
    """Help ▸ Lessons, window-modal; Open opens the lesson and starts its runs."""
    dialog = LessonsDialog(window)
    dialog.accepted.connect(lambda: open_lesson(window, queue, dialog.chosen,
                                                dialog.epochs.value()))
    dialog.finished.connect(dialog.deleteLater)
    dialog.open()
    return dialog
