"""The inspector's page for a group (core/groups.py): its name, what it holds, collapsed or
not. Each committed change is one undo step."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QFormLayout, QLabel, QLineEdit, QWidget

from layerlab.app.commands import EditGroups
from layerlab.app.document import Document
from layerlab.core import groups as core_groups


class GroupPage(QWidget):
    def __init__(self, doc: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("groupPage")
        self.setAccessibleName("Group")
        self.doc = doc
        self.group: str | None = None
        form = QFormLayout(self)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.name = QLineEdit()
        self.name.setObjectName("groupName")
        self.name.setAccessibleName("Group name")
        self.name.setToolTip("The name the group's block shows (Enter to rename)")
        self.name.editingFinished.connect(self._rename)
        form.addRow("group", self.name)
        self.members = QLabel()
        self.members.setObjectName("groupMembers")
        self.members.setAccessibleName("Group members")
        self.members.setWordWrap(True)
        form.addRow("layers", self.members)
        self.collapsed = QCheckBox("collapsed")
        self.collapsed.setObjectName("groupCollapsed")
        self.collapsed.setAccessibleName("Collapsed")
        self.collapsed.setToolTip("Drawn as one block on the canvas; double-click the "
                                   "block or the frame's title to toggle")
        self.collapsed.toggled.connect(self._set_collapsed)
        form.addRow(self.collapsed)
        note = QLabel("A group only changes how the canvas draws the graph; the model is "
                      "the same. Ctrl+Shift+G ungroups.")
        note.setWordWrap(True)  # at the dock's width, never wider
        form.addRow(note)

    def show_group(self, group: str) -> None:
        self.group = group
        self.refresh()

    def refresh(self) -> bool:
        """Show the group as it is now; False when it is gone."""
        data = self.doc.project.groups.get(self.group or "")
        nodes = core_groups.members(self.doc.graph, self.group or "")
        if data is None or not nodes:
            self.group = None
            return False
        if not self.name.hasFocus():
            self.name.setText(str(data.get("name", self.group)))
        self.members.setText(", ".join(nodes))
        self.collapsed.blockSignals(True)
        self.collapsed.setChecked(bool(data.get("collapsed")))
        self.collapsed.blockSignals(False)
        return True

    def _change(self, key: str, value: object, text: str) -> None:
        if self.group is None:
            return
        data = dict(self.doc.project.groups[self.group])
        if data.get(key) != value:
            data[key] = value
            self.doc.undo_stack.push(EditGroups(self.doc, {}, {self.group: data}, text))

    def _rename(self) -> None:
        name = self.name.text().strip()
        if name:
            self._change("name", name, f"Rename group to {name}")

    def _set_collapsed(self, value: bool) -> None:
        self._change("collapsed", value, "Collapse group" if value else "Expand group")
