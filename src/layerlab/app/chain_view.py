"""The chain-rule tab of the step-through dock: a node's backward rule with one sample's
numbers, checked against autograd. It shows what core computes (layerlab.explain_node).

Every term is a row of a table with its first values written out; the rows selected (at
most three, the rule's first pictures to begin with) are drawn as heatmaps beside it. A
composite layer's parts (Q, K, V, scores, …; gates) are rows too, each with its gradient.
The rule is worked out in a thread of its own: on a big batch it takes seconds, and the
window must not stop meanwhile.
"""

from __future__ import annotations

import html
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from layerlab import NodeExplanation, explain_node
from layerlab.app.heatmap import Heatmap
from layerlab.core.tracer import StepTrace

SHOWN = 8  # entries of a tensor written out in the table
PICTURES = 3  # heatmaps beside the table


def vector(t: torch.Tensor) -> str:
    if t.dim() == 0:
        return f"{float(t):.4g}"
    values = ", ".join(f"{v:.4g}" for v in t.flatten()[:SHOWN].tolist())
    more = f", … ({t.numel()} in all)" if t.numel() > SHOWN else ""
    return f"[{values}{more}]"


def shape_text(t: torch.Tensor) -> str:
    return "×".join(map(str, t.shape)) or "scalar"


@dataclass(frozen=True)
class Term:
    """One row: a named tensor for the sample (or the batch), and what it is."""

    name: str
    value: torch.Tensor
    note: str = ""
    pair: str = ""  # the row drawn beside it when it is chosen (a part's gradient)


def explanation_terms(e: NodeExplanation) -> list[Term]:
    """The rule's terms for the sample, then what it gives back: dL/d(each input) for the
    sample and dL/d(each parameter) over the batch, then a composite layer's parts."""
    terms = [Term(name, t.detach().float()) for name, t in e.terms.items()]
    for source, grad in zip(e.inputs, e.grad_inputs, strict=True):
        if grad is not None and f"dL/d{source}" not in e.terms:
            terms.append(Term(f"dL/d{source}", grad.float(), "given back, by the rule"))
    for key, grad in (e.param_grads or {}).items():
        terms.append(Term(f"dL/d{key}", grad.float(), "whole batch, by the rule"))
    for part in e.parts:
        grad = f"dL/d({part.name})"
        terms.append(Term(part.name, part.value.float(), part.formula, grad))
        terms.append(Term(grad, part.grad.float(), "", part.name))
    return terms


def check_text(e: NodeExplanation) -> str:
    if e.max_diff is None and e.type == "Input":
        return (f"autograd keeps no gradient for the data: dL/d{e.node} is what the layers it "
                "feeds send back" if f"dL/d{e.node}" in e.terms else "")
    if e.max_diff is None:
        return "nothing recorded by autograd to compare with here"
    if e.matches:
        return f"✓ autograd agrees (max diff {e.max_diff:.1g})"
    return f"✗ autograd differs: max diff {e.max_diff:.3g} on values up to {e.scale:.3g}"


def picture(heatmap: Heatmap, term: Term) -> None:
    """A term as a heatmap: channels of pictures tiled, anything else as a matrix."""
    t = term.value
    if t.dim() >= 3 and min(t.shape[-2:]) > 1:
        images = t.reshape(-1, *t.shape[-2:]).numpy()
        heatmap.show_tiles(images, f"{term.name} · {len(images)} × "
                                   f"{t.shape[-2]}×{t.shape[-1]}, row by row")
    else:
        rows, columns = ("", "entry") if t.dim() <= 1 else \
            ("row", "column") if t.dim() == 2 else (f"{t.shape[0]}", "the rest, flattened")
        heatmap.show_matrix(t.numpy(), term.name, rows, columns)


class _Courier(QObject):
    """Brings an answer from the explaining thread to the GUI thread (a queued signal)."""

    explained = Signal(int, object)  # ticket, (node, NodeExplanation or a sentence)


class ChainView(QWidget):
    """The chain rule at the node in view, for the sample chosen."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("chainView")
        self.sample = QSpinBox()
        self.sample.setObjectName("chainSample")
        self.sample.setAccessibleName("Sample")
        self.sample.setToolTip("Which of the kept samples the rule is shown for")
        self.title = QLabel("The chain rule of the node in view appears here.")
        self.title.setObjectName("chainTitle")
        self.check = QLabel()
        self.check.setObjectName("chainCheck")
        self.check.setAccessibleName("Check against autograd")
        self.formula = QLabel()
        self.formula.setObjectName("chainRule")
        self.formula.setAccessibleName("Backward rule")
        self.formula.setWordWrap(True)
        self.formula.setTextFormat(Qt.TextFormat.RichText)  # escaped text: ' shows as '
        big = QFont()
        big.setPointSizeF(big.pointSizeF() * 1.2)
        self.formula.setFont(big)
        self.formula.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = self._make_table()
        self.heatmaps = [Heatmap(f"chainHeatmap{i}", "A term of the rule as colours, white "
                                 "at zero; choose which in the table") for i in range(PICTURES)]
        pictures = QWidget()
        row = QHBoxLayout(pictures)
        row.setContentsMargins(0, 0, 0, 0)
        for heatmap in self.heatmaps:
            row.addWidget(heatmap)
        split = QSplitter()
        split.addWidget(self.table)
        split.addWidget(pictures)
        split.setSizes([520, 800])
        top = QHBoxLayout()
        top.addWidget(QLabel("sample"))
        top.addWidget(self.sample)
        top.addWidget(self.title, 1)
        top.addWidget(self.check)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.formula)
        layout.addWidget(split, 1)
        self.explanation: NodeExplanation | None = None
        self.terms: list[Term] = []
        self.pictured: list[str] = []  # the names of the rows drawn as heatmaps
        self.busy = False  # a rule is being worked out
        self._ticket = 0  # the newest request; older answers are dropped
        self._courier = _Courier()
        self._courier.explained.connect(self._explained)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")

    def _make_table(self) -> QTableWidget:
        table = QTableWidget(0, 4)
        table.setObjectName("chainTerms")
        table.setAccessibleName("Terms of the rule")
        table.setToolTip("Select up to three rows (Ctrl+click) to see them as heatmaps")
        table.setHorizontalHeaderLabels(["term", "shape", "values", "what"])
        table.verticalHeader().hide()
        table.horizontalHeader().setStretchLastSection(True)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.itemSelectionChanged.connect(self._selected)
        return table

    def values(self) -> dict[str, np.ndarray]:
        """Each row's numbers, by its name (what the table and heatmaps show)."""
        return {term.name: term.value.numpy() for term in self.terms}

    def clear(self) -> None:
        """Nothing shown, and any answer still being worked out dropped."""
        self._ticket += 1
        self.busy = False
        self.explanation = None
        self.title.setText("The chain rule of the node in view appears here.")
        self.formula.setText("")
        self.check.setText("")
        self._fill([])

    def show_node(self, trace: StepTrace, graph: nx.DiGraph, node: str) -> None:
        """Work out the rule in a thread of its own (a big batch takes seconds) and show it
        when it is ready, unless another node or sample was asked for meanwhile."""
        self._ticket += 1
        ticket, sample, graph = self._ticket, self.sample.value(), graph.copy()
        self.busy = True
        self.explanation = None
        self.title.setText(f"<b>{html.escape(node)}</b> · working out the rule for sample "
                           f"{sample}…")
        self.formula.setText("")
        self.check.setText("")
        self._fill([])

        def work() -> None:
            if ticket != self._ticket:  # a newer request is queued behind this one
                return
            try:
                result: NodeExplanation | str = explain_node(trace, graph, node, sample)
            except ValueError as exc:
                result = f"{exc}."
            except Exception as exc:  # an internal error: shown in one sentence, not lost
                result = f"The rule of {node} could not be worked out: {exc}."
            self._courier.explained.emit(ticket, (node, result))

        self._executor.submit(work)

    def _explained(self, ticket: int, payload: tuple[str, NodeExplanation | str]) -> None:
        if ticket != self._ticket:
            return
        self.busy = False
        node, e = payload
        if isinstance(e, str):
            self.title.setText(f"<b>{html.escape(node)}</b>")
            self.formula.setText(html.escape(e))
            return
        self.explanation = e
        self.title.setText(f"<b>{html.escape(node)}</b> · {e.type} · sample {e.sample}"
                           + ("" if e.dy_recorded else f" · dL/d{html.escape(node)} summed "
                              "from the rules of the layers it feeds"))
        self.formula.setText(html.escape(e.formula).replace(";  ", "<br>"))
        self.check.setText(check_text(e))
        self._fill(explanation_terms(e))

    def _fill(self, terms: list[Term]) -> None:
        self.terms = terms
        self.table.blockSignals(True)
        self.table.clearSelection()
        self.table.setRowCount(len(terms))
        for r, term in enumerate(terms):
            for c, text in enumerate((term.name, shape_text(term.value), vector(term.value),
                                      term.note)):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.table.blockSignals(False)
        pictured = [r for r, term in enumerate(terms) if term.value.dim() >= 2]
        self.select([*pictured, *(r for r, t in enumerate(terms) if t.value.numel() > 1
                                  and r not in pictured)][:PICTURES])

    def select(self, rows: list[int]) -> None:
        """Choose the rows drawn as heatmaps (as a person does with Ctrl+click)."""
        self.table.blockSignals(True)
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for r in rows:
            self.table.selectRow(r)
        self.table.setSelectionMode(mode)
        self.table.blockSignals(False)
        self._selected()

    def _selected(self) -> None:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        names = {term.name: r for r, term in enumerate(self.terms)}
        shown: list[int] = []
        for r in rows:  # a part's gradient goes beside the part
            for i in (r, names.get(self.terms[r].pair, -1)):
                if i >= 0 and i not in shown:
                    shown.append(i)
        shown = shown[:PICTURES]
        for heatmap, r in zip(self.heatmaps, shown, strict=False):
            picture(heatmap, self.terms[r])
        for i, heatmap in enumerate(self.heatmaps):
            heatmap.setVisible(i < len(shown))
        self.pictured = [self.terms[r].name for r in shown]
