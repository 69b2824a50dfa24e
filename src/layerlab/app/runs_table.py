"""The runs table: one row per run folder of the project, sortable, with what a person does to
a run (hide its curves, rename, delete, restore its settings, load its weights) on a toolbar
and the context menu. It only shows and asks: what happens to the folders is runs_ops's."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QPoint, Qt, Signal
from PySide6.QtGui import QAction, QColor, QFont, QIcon, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QMenu,
    QTableWidget,
    QTableWidgetItem,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from layerlab.core.runs import RunInfo

COLUMNS = ("run", "status", "settings that differ", "best val loss", "final val loss",
           "best val accuracy", "final val accuracy", "time")
TIPS = ("The run's label (double-click or F2 to rename); the box shows or hides its curves",
        "running, paused, stopped, finished or failed",
        "What differs from the project's saved settings",
        "The lowest validation loss of any epoch", "The validation loss after the last epoch",
        "The highest validation accuracy of any epoch",
        "The validation accuracy after the last epoch", "Training time, pauses excluded")
KEY = Qt.ItemDataRole.UserRole  # the run's key (its folder as text), on the label item
SORT = Qt.ItemDataRole.UserRole + 1  # the value a column sorts by


class _Item(QTableWidgetItem):
    """A cell that sorts by its value (numbers as numbers; a missing one last)."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(SORT), other.data(SORT)
        if isinstance(mine, (int, float)) and isinstance(theirs, (int, float)):
            return mine < theirs
        return str(mine).lower() < str(theirs).lower()


def varied_text(run: RunInfo) -> str:
    return " ".join(f"{key}={value}" for key, value in run.varied.items())


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else \
        f"{minutes // 60} h {minutes % 60:02d} min"


def _number(value: float | None, percent: bool = False) -> tuple[str, float]:
    """The text shown and the value sorted by (a missing value sorts after every other)."""
    if value is None or not math.isfinite(value):
        return "—", math.inf
    return (f"{100 * value:.1f}%" if percent else f"{value:.4f}"), value


def runs_csv(runs: list[RunInfo]) -> str:
    """The table as CSV: one row per run, numbers unrounded, empty where a run has none."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "status", "varied", "best_val_loss", "final_val_loss",
                     "best_val_accuracy", "final_val_accuracy", "seconds", "started",
                     "folder"])
    for run in runs:
        numbers = (run.best_val_loss, run.final_val_loss, run.best_val_accuracy,
                   run.final_val_accuracy)
        writer.writerow([run.label, run.status, varied_text(run),
                         *("" if v is None else repr(v) for v in numbers),
                         f"{run.seconds:.6g}", run.started, str(run.folder)])
    return buffer.getvalue()


GREY = "#7a7a7a"  # a run without a colour of its own


def swatch(colour: str) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(colour))
    return QIcon(pixmap)


class RunsTable(QWidget):
    """Rows of runs. Signals carry the run's key (its folder as text)."""

    visibilityChanged = Signal(str, bool)
    renamed = Signal(str, str)
    deleteRequested = Signal(list)  # keys
    restoreRequested = Signal(str)
    loadWeightsRequested = Signal(str)
    exportRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("runsTable")
        self.setAccessibleName("Runs")
        self.runs: dict[str, RunInfo] = {}
        self.hidden: set[str] = set()
        self.live: tuple[str, str] = ("", "")  # the live run's key and state
        self.best = ""
        self._looks: dict[str, tuple[object, ...]] = {}  # what each row was filled with
        self._filling = False
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("runsGrid")
        self.table.setAccessibleName("Runs of this project")
        self.table.setToolTip("Every run of this project, kept beside its file: click a "
                              "header to sort, double-click a label to rename")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        for column, tip in enumerate(TIPS):
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                   | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # oldest first until asked
        self.table.setSortingEnabled(True)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.itemChanged.connect(self._item_changed)
        self.table.itemSelectionChanged.connect(self._update_actions)
        self.actions: dict[str, QAction] = {}
        self.toolbar = QToolBar("Runs")
        self.toolbar.setObjectName("runsToolbar")
        self.toolbar.setAccessibleName("Runs toolbar")
        self._make_actions()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.table)
        self._update_actions()

    def _make_actions(self) -> None:
        for name, text, tip, slot, key in (
                ("runsToggle", "Hide / Show", "Hide or show the selected runs' curves "
                 "(Space on a run's box does the same)", self._toggle, None),
                ("runsRename", "Rename", "Rename the selected run (its run.json keeps the "
                 "label)", self._rename, "F2"),
                ("runsRestore", "Restore These Settings", "Set the project's training "
                 "settings to the selected run's (one undo step)",
                 lambda: self.restoreRequested.emit(self.current()), None),
                ("runsLoadWeights", "Load These Weights", "Load the selected run's weights "
                 "into the model: the next run starts from them",
                 lambda: self.loadWeightsRequested.emit(self.current()), None),
                ("runsDelete", "Delete…", "Delete the selected runs' folders (asks first)",
                 lambda: self.deleteRequested.emit(self.selected()), None),
                ("runsExport", "Export CSV…", "Save this table as a CSV file",
                 self.exportRequested.emit, None)):
            self._action(name, text, tip, slot, key)

    def _action(self, name: str, text: str, tip: str, slot: Callable[[], object],
                key: str | None) -> None:
        act = QAction(text, self)
        act.setObjectName(name)
        act.setToolTip(tip + (f" ({key})" if key else ""))
        act.setStatusTip(tip)
        if key:
            act.setShortcut(QKeySequence(key))
            act.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        act.triggered.connect(slot)
        self.table.addAction(act)  # its keys work while the table has the focus
        self.toolbar.addAction(act)
        button = self.toolbar.widgetForAction(act)
        button.setObjectName(f"tool_{name}")
        button.setAccessibleName(text.rstrip("…"))
        self.actions[name] = act

    # -- contents ---------------------------------------------------------------------
    def refresh(self, runs: list[RunInfo], colours: dict[str, str]) -> None:
        """Show these runs (oldest first, unless a header sorts them), in their colours;
        hidden runs stay hidden, the selection stays on the same runs. Only rows whose
        contents changed are filled again (a run beginning adds one row; one ending changes
        one): the GUI thread holds the interpreter lock meanwhile, and the training thread
        waits for it as a run begins."""
        selected = set(self.selected())
        self.runs = {str(run.folder): run for run in runs}
        self.hidden &= set(self.runs)
        looks = {key: self._look(run, colours.get(key, GREY)) for key, run in self.runs.items()}
        self._filling = True
        self.table.setSortingEnabled(False)
        rows = {self.key_at(row): row for row in range(self.table.rowCount())}
        if self._refill_all(list(looks), rows):
            self.table.setRowCount(0)
            rows, self._looks = {}, {}
        for key, run in self.runs.items():
            if self._looks.get(key) == looks[key]:
                continue
            if key not in rows:
                rows[key] = self.table.rowCount()
                self.table.insertRow(rows[key])
            self._fill_row(rows[key], run, colours.get(key, GREY))
        self._looks = looks
        self.table.setSortingEnabled(True)
        self.table.clearSelection()
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        for row in range(self.table.rowCount()):
            if self.key_at(row) in selected:  # each row added to the selection, not instead
                self.table.selectionModel().select(self.table.model().index(row, 0), flags)
        self._filling = False
        self._update_actions()

    def _refill_all(self, keys: list[str], rows: dict[str, int]) -> bool:
        """Whether the rows must be filled anew: a run went, the rows are not what was
        filled, or a new run would not come last (oldest first, when no header sorts)."""
        if set(self._looks) - set(keys) or set(rows) != set(self._looks):
            return True
        new = [key for key in keys if key not in rows]
        return bool(new) and keys[-len(new):] != new

    def _look(self, run: RunInfo, colour: str) -> tuple[object, ...]:
        """Everything a run's row shows: the row is filled again when this changes."""
        key = str(run.folder)
        return (run.label, run.started, self._status(run), varied_text(run),
                run.best_val_loss, run.final_val_loss, run.best_val_accuracy,
                run.final_val_accuracy, run.seconds, colour, key in self.hidden)

    def _fill_row(self, row: int, run: RunInfo, colour: str) -> None:
        key = str(run.folder)
        label = _Item(run.label)
        label.setData(SORT, run.label)
        label.setData(KEY, key)
        label.setIcon(swatch(colour))
        label.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                       | Qt.ItemFlag.ItemIsEditable | Qt.ItemFlag.ItemIsUserCheckable)
        label.setCheckState(Qt.CheckState.Unchecked if key in self.hidden
                            else Qt.CheckState.Checked)
        label.setToolTip(f"{run.label}\nstarted {run.started}\n{run.folder}")
        cells = [label, self._cell(self._status(run), self._status(run))]
        cells.append(self._cell(varied_text(run) or "—", varied_text(run)))
        for value, percent in ((run.best_val_loss, False), (run.final_val_loss, False),
                               (run.best_val_accuracy, True), (run.final_val_accuracy, True)):
            cells.append(self._cell(*_number(value, percent)))
        cells.append(self._cell(duration(run.seconds), run.seconds))
        for column, item in enumerate(cells):
            if key == self.best:
                font = QFont(item.font())
                font.setBold(True)
                item.setFont(font)
            self.table.setItem(row, column, item)

    def _status(self, run: RunInfo) -> str:
        return self.live[1] if self.live[0] == str(run.folder) and self.live[1] else \
            run.status

    @staticmethod
    def _cell(text: str, value: object) -> _Item:
        item = _Item(text)
        item.setData(SORT, value)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        if isinstance(value, float):
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return item

    def set_live(self, key: str, state: str) -> None:
        """The live run's state as the controller knows it (its run.json follows)."""
        self.live = (key, state)
        if key in self._looks:
            self._looks[key] = ()  # filled again by the next refresh
        row = self.row_of(key)
        if row is not None:
            self._filling = True
            self.table.item(row, 1).setText(state)
            self.table.item(row, 1).setData(SORT, state)
            self._filling = False
        self._update_actions()

    def set_shown(self, key: str, on: bool) -> None:
        """Tick or untick a run's row as its curves were shown or hidden beside the plots
        (their list or legend): the table then tells the plots, which have it already."""
        row = self.row_of(key)
        if row is not None:
            self.table.item(row, 0).setCheckState(Qt.CheckState.Checked if on
                                                  else Qt.CheckState.Unchecked)

    def mark_best(self, key: str | None) -> None:
        """Set the best run's row in bold (None: no row)."""
        self.best = key or ""
        self._filling = True
        for row in range(self.table.rowCount()):
            bold = self.key_at(row) == self.best
            for column in range(self.table.columnCount()):
                item = self.table.item(row, column)
                font = QFont(item.font())
                font.setBold(bold)
                item.setFont(font)
        self._filling = False

    # -- rows -------------------------------------------------------------------------
    def key_at(self, row: int) -> str:
        item = self.table.item(row, 0)
        return item.data(KEY) if item is not None else ""

    def row_of(self, key: str) -> int | None:
        return next((row for row in range(self.table.rowCount()) if self.key_at(row) == key),
                    None)

    def selected(self) -> list[str]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.key_at(row) for row in rows]

    def current(self) -> str:
        keys = self.selected()
        return keys[0] if keys else ""

    def _update_actions(self) -> None:
        keys = self.selected()
        one = len(keys) == 1
        live = self.live[0] in keys and self.live[1] in ("running", "paused")
        weights = one and (Path(keys[0]) / "weights.safetensors").exists()
        for name, on in (("runsToggle", bool(keys)), ("runsRename", one),
                         ("runsRestore", one), ("runsLoadWeights", weights and not live),
                         ("runsDelete", bool(keys) and not live),
                         ("runsExport", bool(self.runs))):
            self.actions[name].setEnabled(on)

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 0:
            return
        key = item.data(KEY)
        run = self.runs.get(key)
        if run is None:
            return
        shown = item.checkState() == Qt.CheckState.Checked
        if shown == (key in self.hidden):
            self.hidden.symmetric_difference_update({key})
            self.visibilityChanged.emit(key, shown)
        label = item.text().strip()
        if item.text() != run.label and key in self._looks:
            self._looks[key] = ()  # the next refresh shows the label the run has (if refused)
        if label != run.label:
            if label:
                self.renamed.emit(key, label)
            else:  # a run keeps a name
                self._filling = True
                item.setText(run.label)
                self._filling = False

    def _toggle(self) -> None:
        keys = self.selected()
        show = all(key in self.hidden for key in keys)
        for key in keys:
            row = self.row_of(key)
            if row is not None:
                self.table.item(row, 0).setCheckState(
                    Qt.CheckState.Checked if show else Qt.CheckState.Unchecked)

    def _rename(self) -> None:
        row = self.row_of(self.current())
        if row is not None:
            self.table.editItem(self.table.item(row, 0))

    def _context_menu(self, pos: QPoint) -> None:
        row = self.table.rowAt(pos.y())
        if row >= 0 and self.key_at(row) not in self.selected():
            self.table.selectRow(row)
        menu = QMenu(self)
        menu.setObjectName("runsMenu")
        for name in ("runsToggle", "runsRename", "runsRestore", "runsLoadWeights",
                     "runsDelete"):
            menu.addAction(self.actions[name])
        menu.addSeparator()
        menu.addAction(self.actions["runsExport"])
        menu.popup(self.table.viewport().mapToGlobal(pos))
