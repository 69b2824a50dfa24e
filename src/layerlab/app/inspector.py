"""The inspector: one editor per catalogue parameter of the selected node, generated from its
declaration; with nothing selected, the model summary and every error."""

from __future__ import annotations

import json
import math
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from layerlab.app.commands import Rename, SetAttribute, set_param
from layerlab.app.document import Document
from layerlab.app.group_page import GroupPage
from layerlab.app.mask_view import mask_view
from layerlab.app.statistics_view import StatisticsStore, StatisticsView
from layerlab.core.catalogue import CATALOGUE, INIT_FORMULAS
from layerlab.core.compiler import param_counts
from layerlab.core.errors import format_error
from layerlab.core.lora import FORMULA as LORA_FORMULA
from layerlab.core.ops import node_title
from layerlab.core.shapes import valid_id_error
from layerlab.core.spec import Param

INT_LIMIT = 2**31 - 1
SUMMARY_DELAY_MS = 250
BAD_STYLE = "border: 1px solid #e0443e;"
COMBO_CHARS = 8  # a choice box asks for this much room, not for its longest choice


def parse_value(param: Param, text: str) -> Any:
    """What a person typed, as the JSON value the parameter takes (ValueError if it is not)."""
    text = text.strip()
    if text == "":
        if param.nullable:
            return None
        raise ValueError("a value is needed")
    if param.kind == "text":
        return text
    if param.kind == "json":  # an Op node's arguments, as the file writes them
        return _finite(json.loads(text))
    if param.kind == "padding" and text in ("same", "valid"):
        return text
    if param.kind == "float":
        return _finite(float(text))
    if param.kind == "int":
        return int(text)
    value = _finite(json.loads(text if text.startswith("[") else f"[{text}]"))
    if param.kind in ("size", "padding", "dims") and len(value) == 1:
        return value[0]
    return value


def _finite(value: Any) -> Any:
    """`value` unless it holds inf or nan ("1e309", "nan", "[Infinity]"): the project file
    is JSON, which has no such numbers, so they must never reach the document."""
    if isinstance(value, (list, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            _finite(item)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def format_value(value: Any, kind: str = "") -> str:
    if kind == "json":
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def label(text: str = "", name: str = "") -> QLabel:
    widget = QLabel(text)
    widget.setWordWrap(True)
    widget.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if name:
        widget.setObjectName(name)
        widget.setAccessibleName(name)
    return widget


class Inspector(QStackedWidget):
    selectNode = Signal(str)

    def __init__(self, doc: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspector")
        self.setAccessibleName("Inspector")
        self.doc = doc
        self.node: str | None = None
        self.editors: dict[str, QWidget] = {}
        self.statistics: StatisticsStore | None = None  # Standardize nodes' (the window's)
        self._build_summary()
        self.node_page = QWidget()
        self.node_scroll = QScrollArea()
        self.node_scroll.setWidgetResizable(True)
        self.node_scroll.setWidget(self.node_page)
        self.addWidget(self.node_scroll)
        self.group_page = GroupPage(doc)
        self.addWidget(self.group_page)
        self.summary_timer = QTimer(self)
        self.summary_timer.setObjectName("summaryTimer")
        self.summary_timer.setSingleShot(True)
        self.summary_timer.setInterval(SUMMARY_DELAY_MS)
        self.summary_timer.timeout.connect(self._show_summary)
        doc.analysisChanged.connect(self.refresh)
        doc.nodeRenamed.connect(self._renamed)
        doc.reset.connect(lambda: self.show_node(None))
        self.show_node(None)

    # -- the summary page -------------------------------------------------------------
    def _build_summary(self) -> None:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.summary = label(name="modelSummary")
        self.errors = QListWidget()
        self.errors.setObjectName("errorList")
        self.errors.setAccessibleName("Errors")
        self.errors.setWordWrap(True)  # a problem is a sentence: all of it shows
        self.errors.itemClicked.connect(self._error_clicked)
        layout.addWidget(label("<b>Model</b>"))
        layout.addWidget(self.summary)
        layout.addWidget(label("<b>Problems</b> (click one to select its node)"))
        layout.addWidget(self.errors, 1)
        self.addWidget(page)
        self.summary_page = page

    def _error_clicked(self, item: QListWidgetItem) -> None:
        node = item.data(Qt.ItemDataRole.UserRole)
        if node and node in self.doc.graph:
            self.selectNode.emit(node)

    def _show_summary(self) -> None:
        s = self.doc.summary()
        flops = "—" if s.flops is None else f"{s.flops:,}"
        self.summary.setText(
            f"{self.doc.graph.number_of_nodes()} nodes, {self.doc.graph.number_of_edges()} "
            f"edges<br>parameters: {s.parameters:,} (trainable {s.trainable:,})<br>"
            f"weights: {s.weight_bytes / 2**20:.2f} MiB (float32)<br>"
            f"FLOPs per sample (forward): {flops}")
        self._show_problems()

    def _show_problems(self) -> None:
        self.errors.clear()
        for node, message in self.doc.analysis.errors:
            item = QListWidgetItem(format_error(node, message))
            item.setData(Qt.ItemDataRole.UserRole, node)
            self.errors.addItem(item)
        if not self.doc.analysis.errors:
            self.errors.addItem("No problems: the network is ready to train.")

    # -- the node page ----------------------------------------------------------------
    def show_node(self, node: str | None) -> None:
        self.node = node if node in self.doc.graph else None
        if self.node is None:  # the problems now; the model's size once edits pause (FLOPs
            self._show_problems()  # take seconds on a 1,000-node graph)
            self.summary_timer.start()
            self.setCurrentWidget(self.summary_page)
            return
        self._build_node_form(self.node)
        self.setCurrentWidget(self.node_scroll)

    def show_group(self, group: str) -> None:
        """A selected group (its block, or all of its nodes): its name and state."""
        self.node = None
        self.group_page.show_group(group)
        self.setCurrentWidget(self.group_page)

    def _renamed(self, old: str, new: str) -> None:
        if self.node == old:
            self.show_node(new)

    def refresh(self) -> None:
        """After an edit: the node's fields at once; the summary (FLOPs need a model built
        on the meta device) a moment later, once the edits pause."""
        if self.node is not None and self.node not in self.doc.graph:
            self.node = None
        if self.currentWidget() is self.group_page and self.group_page.refresh():
            return
        if self.node is None:
            self.setCurrentWidget(self.summary_page)
            self.summary_timer.start()
        else:
            self._fill_node(self.node)

    def _build_node_form(self, node: str) -> None:
        page = QWidget()
        form = QFormLayout(page)
        # at the dock's default width every field fits: a long row puts its field under
        # its label rather than asking for a horizontal scrollbar
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        data = self.doc.graph.nodes[node]
        spec = CATALOGUE.get(data.get("type", ""))
        self.editors = {}
        self.id_edit = QLineEdit(node)
        self.id_edit.setObjectName("nodeId")
        self.id_edit.setAccessibleName("Node id")
        self.id_edit.editingFinished.connect(self._rename)
        form.addRow("id", self.id_edit)
        self.id_error = label(name="nodeIdError")
        self.id_error.setStyleSheet("color: #e0443e;")
        form.addRow("", self.id_error)
        title = node_title(data)
        form.addRow(label(f"<b>{title}</b>"))
        if spec:
            self.description = label(name="layerDescription")
            form.addRow(self.description)
            for param in spec.params:
                editor = self._editor(node, param)
                editor.setToolTip(param.help)
                editor.setObjectName(f"param_{param.name}")
                editor.setAccessibleName(param.name)
                self.editors[param.name] = editor
                form.addRow(param.name, editor)
            if spec.type == "Standardize" and self.statistics is not None:
                form.addRow(StatisticsView(self.statistics, node))
            if (mask := mask_view(self.doc, node)) is not None:  # causal attention's mask
                form.addRow(mask)
        self.frozen = QCheckBox("frozen (kept out of training)")
        self.frozen.setObjectName("nodeFrozen")
        self.frozen.setAccessibleName("Frozen")
        self.frozen.setToolTip("A frozen layer keeps its weights: the optimizer skips it")
        self.frozen.toggled.connect(self._set_frozen)
        form.addRow(self.frozen)
        self.shapes = label(name="nodeShapes")
        form.addRow("shapes", self.shapes)
        self.count = label(name="nodeParameters")
        form.addRow("parameters", self.count)
        self.node_errors = label(name="nodeErrors")
        self.node_errors.setStyleSheet("color: #e0443e;")
        form.addRow(self.node_errors)
        self.node_page = page
        self.node_scroll.setWidget(page)
        self._fill_node(node)

    def _editor(self, node: str, param: Param) -> QWidget:
        if param.kind == "bool":
            box = QCheckBox()
            box.toggled.connect(lambda v, p=param: self._set(p, v))
            return box
        if param.kind == "choice":
            combo = QComboBox()
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(COMBO_CHARS)
            combo.addItems(list(param.choices))
            if param.name == "init":  # each initialiser with its formula, where it is chosen
                for i, scheme in enumerate(param.choices):  # a Parameter's: in its help
                    combo.setItemData(i, INIT_FORMULAS.get(scheme, param.help),
                                      Qt.ItemDataRole.ToolTipRole)
            combo.currentTextChanged.connect(lambda v, p=param: self._set(p, v))
            return combo
        if param.kind == "int" and not param.nullable:
            spin = QSpinBox()
            spin.setRange(int(param.minimum) if param.minimum is not None else -INT_LIMIT,
                          int(param.maximum) if param.maximum is not None else INT_LIMIT)
            spin.setKeyboardTracking(False)
            spin.valueChanged.connect(lambda v, p=param: self._set(p, v))
            return spin
        edit = QLineEdit()
        edit.setPlaceholderText("default" if param.nullable else "")
        edit.editingFinished.connect(lambda p=param, e=edit: self._typed(p, e))
        return edit

    def _fill_node(self, node: str) -> None:
        data = self.doc.graph.nodes[node]
        spec = CATALOGUE.get(data.get("type", ""))
        params = data.get("params", {}) if isinstance(data.get("params"), dict) else {}
        if self.id_edit.text() != node and not self.id_edit.hasFocus():
            self.id_edit.setText(node)
        if spec:  # a LoRA layer also shows how its adapter adds to the formula
            lora = f"<br><code>{LORA_FORMULA}</code>" if params.get("lora_rank") else ""
            self.description.setText(f"<code>{spec.formula}</code>{lora}<br>{spec.description}")
        for name, editor in self.editors.items():
            param = spec.param(name) if spec else None
            if param is None:
                continue
            value = params.get(name, param.initial)
            editor.blockSignals(True)
            if isinstance(editor, QCheckBox):
                editor.setChecked(bool(value))
            elif isinstance(editor, QComboBox):
                editor.setCurrentText(str(value))
            elif isinstance(editor, QSpinBox):
                if isinstance(value, int):
                    editor.setValue(value)
            elif isinstance(editor, QLineEdit) and not editor.hasFocus():
                editor.setText(format_value(value, param.kind))
                editor.setStyleSheet("")
            editor.blockSignals(False)
        self.frozen.blockSignals(True)
        self.frozen.setChecked(bool(data.get("frozen")))
        self.frozen.blockSignals(False)
        a = self.doc.analysis
        inputs = [e[0] for e in sorted(self.doc.graph.in_edges(node, data=True),
                                       key=lambda e: e[2].get("port", 0))]
        ctx = a.contexts.get(node)
        if ctx is not None:  # by value key: the second port of a Split reads split:1
            ins = ", ".join(f"{key} {list(shape)}"
                            for key, shape in zip(ctx.in_ids, ctx.in_shapes, strict=True))
        else:
            ins = ", ".join(f"{src} {list(a.shapes[src]) if src in a.shapes else '?'}"
                            for src in inputs)
        self.shapes.setText(f"in: {ins or 'none'}<br>out: {a.shown(node)}")
        count = self.doc.counts.get(node, 0)
        free = param_counts(self.doc.graph, a, trainable=True).get(node, count)
        self.count.setText(f"{count:,}" if free == count or self.doc.graph.nodes[node].get(
            "frozen") else f"{count:,} (trainable {free:,})")
        self.node_errors.setText("<br>".join(a.errors_of(node)))

    # -- edits become commands --------------------------------------------------------
    def _set(self, param: Param, value: Any) -> None:
        if self.node is None:
            return
        command = set_param(self.doc, self.node, param.name, value)
        if command is not None:
            self.doc.undo_stack.push(command)

    def _typed(self, param: Param, edit: QLineEdit) -> None:
        try:
            value = parse_value(param, edit.text())
        except (ValueError, json.JSONDecodeError):
            edit.setStyleSheet(BAD_STYLE)
            edit.setToolTip(f"{param.name}: not a valid value. {param.help}")
            return
        problem = param.check(value)
        edit.setStyleSheet(BAD_STYLE if problem else "")
        edit.setToolTip(f"{param.name} {problem}" if problem else param.help)
        self._set(param, value)

    def _set_frozen(self, value: bool) -> None:
        if self.node is None:
            return
        old = self.doc.graph.nodes[self.node].get("frozen")
        new = True if value else None
        text = f"{'Freeze' if value else 'Unfreeze'} {self.node}"
        self.doc.undo_stack.push(SetAttribute(self.doc, self.node, "frozen", old, new, text))

    def _rename(self) -> None:
        if self.node is None:
            return
        new = self.id_edit.text().strip()
        if new == self.node:
            self.id_error.setText("")
            return
        problem = valid_id_error(new) or (f"'{new}' is already taken"
                                          if new in self.doc.graph else None)
        if problem:
            self.id_error.setText(problem)
            self.id_edit.setText(self.node)
            return
        self.id_error.setText("")
        self.doc.undo_stack.push(Rename(self.doc, self.node, new))
