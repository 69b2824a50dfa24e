"""The layer palette: the catalogue by group, searchable; drag a layer onto the canvas, or
double-click it to add it after the selected node."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLineEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.canvas.view import layer_mime
from layerlab.app.style import group_icon
from layerlab.core.catalogue import by_group, describe

TYPE_ROLE = Qt.ItemDataRole.UserRole
KEYWORDS_ROLE = Qt.ItemDataRole.UserRole + 1  # more words the search finds a layer by


class LayerTree(QTreeWidget):
    def mimeData(self, items: Sequence[QTreeWidgetItem]) -> QMimeData:
        type_name = items[0].data(0, TYPE_ROLE) if items else None
        return layer_mime(type_name) if type_name else QMimeData()


class Palette(QWidget):
    activated = Signal(str)  # a layer type, double-clicked

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setObjectName("paletteSearch")
        self.search.setAccessibleName("Search layers")
        self.search.setPlaceholderText("Search layers…")
        self.search.setClearButtonEnabled(True)
        self.tree = LayerTree()
        self.tree.setObjectName("paletteTree")
        self.tree.setAccessibleName("Layer palette")
        self.tree.setHeaderHidden(True)
        self.tree.setDragEnabled(True)
        self.tree.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addWidget(self.tree)
        self.items: dict[str, QTreeWidgetItem] = {}
        for group, specs in by_group().items():
            parent = QTreeWidgetItem([group.capitalize()])
            parent.setIcon(0, group_icon(group))
            parent.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.tree.addTopLevelItem(parent)
            for spec in specs:
                child = QTreeWidgetItem([spec.type])
                child.setData(0, TYPE_ROLE, spec.type)
                child.setIcon(0, group_icon(group, 16))
                child.setToolTip(0, describe(spec.type))
                child.setData(0, KEYWORDS_ROLE, " ".join(spec.keywords).lower())
                child.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                               | Qt.ItemFlag.ItemIsDragEnabled)
                parent.addChild(child)
                self.items[spec.type] = child
        self.tree.expandAll()
        self.search.textChanged.connect(self.filter)
        self.tree.itemDoubleClicked.connect(self._double_clicked)

    def filter(self, text: str) -> None:
        needle = text.strip().lower()
        for i in range(self.tree.topLevelItemCount()):
            group = self.tree.topLevelItem(i)
            visible = 0
            for j in range(group.childCount()):
                child = group.child(j)
                match = not needle or needle in child.text(0).lower() or \
                    needle in child.toolTip(0).lower() or needle in child.data(0, KEYWORDS_ROLE)
                child.setHidden(not match)
                visible += match
            group.setHidden(visible == 0)

    def _double_clicked(self, item: QTreeWidgetItem) -> None:
        type_name = item.data(0, TYPE_ROLE)
        if type_name:
            self.activated.emit(type_name)
