"""A Standardize node's statistics in the inspector, and its "Adapt to data" button.

The statistics live with the model in the torch thread; the worker sends them (after a run,
and after Adapt to data) as a StatisticsRecord, which the store keeps for the inspector."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from layerlab.core.standardize import Statistics, StatisticsRecord

SHOWN = 50  # features listed at most


class StatisticsStore(QObject):
    """The latest statistics of each Standardize node, and how to ask for new ones."""

    changed = Signal()

    def __init__(self, adapt: Callable[[], None]) -> None:
        super().__init__()
        self.adapt = adapt
        self.stats: dict[str, Statistics] = {}
        self.features: tuple[str, ...] = ()

    def update(self, record: StatisticsRecord) -> None:
        self.stats, self.features = dict(record.stats), record.features
        self.changed.emit()

    def clear(self) -> None:
        if self.stats:
            self.stats, self.features = {}, ()
            self.changed.emit()


class StatisticsView(QWidget):
    """Mean and standard deviation per feature of one Standardize node."""

    def __init__(self, store: StatisticsStore, node: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("standardizeStatistics")
        self.store, self.node = store, node
        self.note = QLabel()
        self.note.setObjectName("statisticsNote")
        self.note.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.setObjectName("statisticsTable")
        self.table.setAccessibleName("Standardize statistics")
        self.table.setHorizontalHeaderLabels(["mean", "std"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.button = QPushButton("Adapt to data")
        self.button.setObjectName("adaptToData")
        self.button.setAccessibleName("Adapt to data")
        self.button.setToolTip("Measure the mean and standard deviation of what reaches this "
                               "node on the training rows (never the validation rows)")
        self.button.clicked.connect(store.adapt)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note)
        layout.addWidget(self.table)
        layout.addWidget(self.button)
        store.changed.connect(self.fill)
        self.fill()

    def fill(self) -> None:
        stats = self.store.stats.get(self.node)
        if stats is None or stats.count == 0:
            self.note.setText("Not adapted yet: a run on fresh weights measures the training "
                              "rows at its start, or press Adapt to data.")
            self.table.hide()
            return
        self.note.setText(f"Measured on {stats.count:,} training rows.")
        names = self.store.features if len(self.store.features) == len(stats.mean) else \
            tuple(str(i) for i in range(len(stats.mean)))
        rows = min(len(stats.mean), SHOWN)
        self.table.setRowCount(rows)
        self.table.setVerticalHeaderLabels(list(names[:rows]))
        for i in range(rows):
            self.table.setItem(i, 0, QTableWidgetItem(f"{stats.mean[i]:.4g}"))
            self.table.setItem(i, 1, QTableWidgetItem(f"{stats.std[i]:.4g}"))
        self.table.show()
