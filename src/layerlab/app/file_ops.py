"""Files for the main window: new, open, save, recent files, examples, crash recovery."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from layerlab.app.document import Document
from layerlab.app.runs_ops import RunsOps
from layerlab.app.training_dock import TrainingDock
from layerlab.core.atomic import atomic_write_text
from layerlab.core.errors import GraphError, ProjectFileError, format_error
from layerlab.core.examples import example_text
from layerlab.core.project import Project, load_project_lenient, parse_json

MAX_RECENT = 8
FILE_FILTER = "LayerLab projects (*.layerlab.json *.json);;All files (*)"


def recovery_path() -> Path:
    folder = Path(QStandardPaths.writableLocation(
        QStandardPaths.StandardLocation.AppDataLocation))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "recovery.layerlab.json"


def example_project(name: str) -> Project:
    return Project.from_dict(json.loads(example_text(name)), name)


def describe_load_error(path: Path, exc: Exception) -> str:
    if isinstance(exc, GraphError):
        return f"{path} has problems:\n" + "\n".join(format_error(n, m) for n, m in exc.errors)
    return str(exc)


class FilesMixin:
    """The File menu's work; mixed into MainWindow (which provides doc, settings, …)."""

    doc: Document
    settings: QSettings
    training: TrainingDock
    runs: RunsOps

    def confirm_discard(self) -> bool:
        """True when there are no unsaved changes, or the person saved or discarded them.
        A field still being edited is committed first, so its edit is asked about too."""
        focus = QApplication.focusWidget()
        if focus is not None:
            focus.clearFocus()  # a line edit commits (editingFinished) as it loses focus
        if self.doc.undo_stack.isClean() and not self.runs.unsaved():
            return True
        answer = self.ask_save_changes()
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def ask_save_changes(self) -> QMessageBox.StandardButton:
        return QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to {self.doc.project.name}?" + (
                " Its runs are kept only if it is saved." if self.runs.unsaved() else ""),
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save)

    def show_error(self, title: str, text: str) -> None:
        QMessageBox.warning(self, title, text)

    def new_file(self) -> None:
        if self.confirm_discard():
            self.set_project(Project(name="Untitled"))

    def open_dialog(self) -> None:
        if not self.confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open project", self._last_dir(),
                                              FILE_FILTER)
        if path:
            self.open_path(Path(path), confirmed=True)

    def open_path(self, path: Path, confirmed: bool = False) -> bool:
        """Open a project file, with any problems a person can fix listed (its training
        settings, its name; the graph's own show in the inspector). Only a file that cannot
        be read as a project changes nothing, and a dialog says why."""
        if not confirmed and not self.confirm_discard():
            return False
        try:
            project, problems = load_project_lenient(path)
        except (ProjectFileError, GraphError) as exc:
            self.show_error("Cannot open project", describe_load_error(path, exc))
            return False
        self.set_project(project)
        self.opened(path, problems)
        return True

    def opened(self, path: Path, problems: list[tuple[str | None, str]]) -> None:
        """Remember a file just opened and list its problems below the training controls
        (each also marks its field)."""
        self._remember(path)
        if problems:
            self.training.show_file_problems(path.name, [message for _, message in problems])
            self.statusBar().showMessage(f"Opened {path.name} with {len(problems)} "
                                         "problem(s): see the training panel.", 10_000)

    def open_example(self, name: str) -> None:
        if self.confirm_discard():
            self.set_project(example_project(name))

    def save(self) -> bool:
        if self.doc.project.path is None:
            return self.save_as()
        return self._write(self.doc.project.path)

    def save_as(self) -> bool:
        path, _ = QFileDialog.getSaveFileName(self, "Save project as", self._last_dir(),
                                              FILE_FILTER)
        if not path:
            return False
        if not path.endswith(".json"):
            path += ".layerlab.json"
        return self._write(Path(path))

    def _write(self, path: Path) -> bool:
        before = self.doc.project.path
        try:
            self.doc.project.save(path)
        except OSError as exc:
            self.show_error("Cannot save", f"{path}: {exc.strerror}")
            return False
        self.doc.undo_stack.setClean()
        self.runs.saved(before)
        self._remember(path)
        self.update_title()
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    def _last_dir(self) -> str:
        recent = self.recent_files()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def recent_files(self) -> list[str]:
        value = self.settings.value("recentFiles", [])
        return [value] if isinstance(value, str) else list(value or [])

    def _remember(self, path: Path) -> None:
        files = [str(path)] + [f for f in self.recent_files() if f != str(path)]
        self.settings.setValue("recentFiles", files[:MAX_RECENT])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for i, path in enumerate(self.recent_files()):
            act = self.recent_menu.addAction(Path(path).name)
            act.setObjectName(f"actionRecent{i}")
            act.setToolTip(path)
            act.triggered.connect(lambda checked=False, p=path: self.open_path(Path(p)))
        self.recent_menu.setEnabled(bool(self.recent_files()))

    # -- crash recovery ---------------------------------------------------------------
    def write_recovery(self) -> None:
        if not self.doc.undo_stack.isClean():
            data = self.doc.project.to_dict()
            data["recovery_of"] = str(self.doc.project.path or "")
            atomic_write_text(recovery_path(), json.dumps(data))

    def offer_recovery(self) -> None:
        path = recovery_path()
        if not path.exists():
            return
        try:
            data = parse_json(path.read_bytes(), str(path))
            origin = data.pop("recovery_of", "")
            project, _ = Project.read(data, str(path))
        except (ProjectFileError, GraphError):
            path.unlink(missing_ok=True)
            return
        if self.ask_recover(project.name):
            self.set_project(project)
            project.path = Path(origin) if origin else None
            self.runs.reload()  # the runs kept beside that file
            self.doc.undo_stack.resetClean()  # recovered work is unsaved work
            self.update_title()
        path.unlink(missing_ok=True)

    def ask_recover(self, name: str) -> bool:
        return QMessageBox.question(
            self, "Recover unsaved work",
            f"LayerLab did not close cleanly last time. Recover the unsaved changes to "
            f"{name}?") == QMessageBox.StandardButton.Yes

