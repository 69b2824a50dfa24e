"""The window's runs: the runs table and the plots follow the project's run folders (listed
when a project opens, again as each run begins and ends, and after the runs moved with a
saved project); what a person does in the table happens to the folders here.

A project never saved keeps its runs in the session's folder; its first Save moves them
beside the file (NAME.runs/), and Save As copies a saved project's runs to the new place.
Closing, or opening another project, with runs that were never saved asks the unsaved-changes
question (file_ops.confirm_discard): Discard forgets them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QMessageBox

from layerlab.app.commands import SetTraining
from layerlab.app.runs_table import runs_csv
from layerlab.core.atomic import atomic_write_text
from layerlab.core.datasets import absolute_data, project_folder
from layerlab.core.runs import RunError, RunInfo, delete_run, rename_run, runs_folder

if TYPE_CHECKING:
    from layerlab.app.main_window import MainWindow


class RunsOps(QObject):
    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.setObjectName("runsOps")
        self.window = window
        self.doc = window.doc
        self.controller = window.training.controller
        self.table = window.training.runs_table
        self.plots = window.training.plots
        table = self.table
        table.visibilityChanged.connect(self._visibility)
        self.plots.visibilityChanged.connect(table.set_shown)  # ticked beside the plots
        table.renamed.connect(self.rename)
        table.deleteRequested.connect(self.delete)
        table.restoreRequested.connect(self.restore)
        table.loadWeightsRequested.connect(self.load_weights)
        table.exportRequested.connect(self.export_dialog)
        self.controller.run_started.connect(self._run_started)
        self.controller.run_ended.connect(lambda key, status: self.reload())
        self.controller.stateChanged.connect(self._state_changed)
        self.controller.worker.moved.connect(self._moved)
        self.doc.reset.connect(self._project_replaced)
        self.reload()

    # -- listing ------------------------------------------------------------------------
    def reload(self, live: str = "") -> None:
        """Table and plots from the run folders; the live run's curves stay as they grow."""
        runs = self.controller.runs()
        keys = {run.key for run in runs}
        plotted = {run.key for run in self.plots.runs}
        for key in plotted - keys - {live}:
            self.plots.remove_run(key)
        for run in runs:
            if run.key != live:
                self.plots.load_run(run.key, run.label, self.controller.colour(run.key),
                                    run.metrics)
                if run.key not in plotted and run.key in self.table.hidden:
                    self.plots.set_run_visible(run.key, False)  # drawn anew, still hidden
        self.table.refresh(runs, {run.key: self.controller.colour(run.key) for run in runs})

    def _run_started(self, key: str, label: str, colour: str) -> None:
        self.table.live = (key, self.controller.state)
        self.reload(live=key)

    def _state_changed(self, state: str) -> None:
        if state != "idle":
            self.table.set_live(self.controller.run_key, state)
        else:
            self.table.live = ("", "")

    def _project_replaced(self) -> None:
        """Another project: its runs replace the last one's, on the plots and in the table."""
        self.plots.clear()
        self.table.hidden.clear()
        self.table.mark_best(None)
        self.reload()

    def saved(self, before: Path | None) -> None:
        """The project was just saved (from `before`, its last file): its settings are the
        base of new labels, and its runs go with it to a new place."""
        self.controller.base_training = copy.deepcopy(self.doc.project.training)
        if before != self.doc.project.path:
            self.controller.move_runs(before)

    def _moved(self, report: str) -> None:
        if report:
            self.window.show_error("Runs not moved", report)
        self.plots.clear()  # new keys: drawn again from their files, as on opening
        self.reload()

    def unsaved(self) -> bool:
        return self.controller.unsaved_runs()

    # -- what a person does to a run -----------------------------------------------------
    def _plotted(self, key: str) -> bool:
        return any(run.key == key for run in self.plots.runs)

    def _visibility(self, key: str, on: bool) -> None:
        if self._plotted(key):
            self.plots.set_run_visible(key, on)

    def rename(self, key: str, label: str) -> None:
        try:
            rename_run(key, label)
        except (RunError, OSError) as exc:
            self.window.show_error("Cannot rename the run", _sentence(exc))
        if self._plotted(key):
            self.plots.rename_run(key, label)
        self.reload(live=self.controller.run_key if self.controller.state != "idle" else "")

    def delete(self, keys: list[str]) -> None:
        runs = [self.table.runs[key] for key in keys if key in self.table.runs]
        if not runs or not self.ask_delete([run.label for run in runs]):
            return
        for run in runs:
            if run.key == self.controller.run_key:
                self.controller.forgetRequested.emit()  # Train starts afresh, not into it
            try:
                delete_run(run.folder)
            except (RunError, OSError) as exc:
                self.window.show_error("Cannot delete the run", _sentence(exc))
                break
            if self._plotted(run.key):
                self.plots.remove_run(run.key)
        self.reload()

    def ask_delete(self, labels: list[str]) -> bool:
        what = f"run “{labels[0]}”" if len(labels) == 1 else f"{len(labels)} runs"
        return QMessageBox.question(
            self.window, "Delete runs",
            f"Delete {what} with its folder (weights, metrics, checkpoint)? This cannot be "
            "undone.", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel) == QMessageBox.StandardButton.Yes

    def restore(self, key: str) -> None:
        """The project's training settings become the run's: one undoable command."""
        run = self.table.runs.get(key)
        if run is None:
            return
        if self.controller.state != "idle":
            self.window.statusBar().showMessage("Stop the run first, then restore settings.",
                                                5000)
            return
        if not run.training:
            self.window.show_error("Cannot restore settings",
                                   f"{run.folder} has no readable project.layerlab.json.")
            return
        old = self.doc.project.training
        new = restored_training(run, old, project_folder(self.doc.project.path))
        if new == old:
            self.window.statusBar().showMessage(f"The settings are already those of "
                                                f"“{run.label}”.", 5000)
            return
        self.doc.undo_stack.push(SetTraining(self.doc, old, new,
                                             f"Restore Settings of {run.label}"))

    def load_weights(self, key: str) -> None:
        self.controller.load_weights(str(Path(key) / "weights.safetensors"))

    def export_dialog(self) -> None:
        project = self.controller.runs_project()
        suggested = project.parent / f"{runs_folder(project).stem} runs.csv" \
            if self.doc.project.path else Path.home() / "runs.csv"
        path, _ = QFileDialog.getSaveFileName(self.window, "Export runs table",
                                              str(suggested), "CSV (*.csv);;All files (*)")
        if path:
            self.export(Path(path))

    def export(self, path: Path) -> None:
        """The table's rows as shown (sorted as they are) to CSV."""
        rows = [self.table.runs[self.table.key_at(row)]
                for row in range(self.table.table.rowCount())]
        try:
            atomic_write_text(path, runs_csv(rows))
        except OSError as exc:
            self.window.show_error("Cannot export the runs", f"{path}: {_sentence(exc)}")
            return
        self.window.statusBar().showMessage(f"Wrote {path}", 4000)


def restored_training(run: RunInfo, current: dict[str, Any], folder: Path | None) \
        -> dict[str, Any]:
    """The run's settings, keeping the project's own way of naming the same data file (a
    run's snapshot names it absolutely)."""
    new = copy.deepcopy(run.training)
    if absolute_data(current, folder).get("dataset") == new.get("dataset"):
        new["dataset"] = copy.deepcopy(current["dataset"])
    return new


def _sentence(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def install(window: MainWindow) -> RunsOps:
    return RunsOps(window)
