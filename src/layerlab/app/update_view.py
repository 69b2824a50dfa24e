"""The update tab of the step-through dock: one weight's update by the optimizer's rule,
term by term, beside the weight torch's real step produced (layerlab.explain_update)."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from layerlab import UpdateExplanation, explain_update
from layerlab.app.heatmap import Heatmap, cell_index, index_cell
from layerlab.app.step_views import parameter_axes
from layerlab.core.tracer import StepTrace


class UpdateView(QWidget):
    """One weight's update by the optimizer's rule, term by term, beside torch's step."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("updateView")
        self.title = QLabel("Click a weight in the Tensor tab at an update event to see "
                            "how the optimizer changed it.")
        self.title.setObjectName("updateTitle")
        self.title.setWordWrap(True)
        self.formula = QLabel()
        self.formula.setObjectName("updateFormula")
        self.formula.setAccessibleName("Update rule")
        self.formula.setFont(QFont("monospace"))  # combining hats (m̂, v̂) sit right
        self.steps = QLabel()
        self.steps.setObjectName("updateSteps")
        self.steps.setAccessibleName("The rule with the numbers")
        self.steps.setFont(QFont("monospace"))
        self.steps.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result = QLabel()
        self.result.setObjectName("updateResult")
        self.result.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.setObjectName("updateTerms")
        self.table.setAccessibleName("Terms of the update")
        self.table.setHorizontalHeaderLabels(["term", "value"])
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.weights = Heatmap("updateWeights", "Δw of every weight of the parameter; click "
                                                "one to explain its update")
        self.weights.cellClicked.connect(self._clicked)
        self.weights.hide()
        left = QVBoxLayout()
        for widget in (self.title, self.formula, self.steps, self.result):
            left.addWidget(widget)
        left.addStretch(1)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 3)
        layout.addWidget(self.weights, 2)
        layout.addWidget(self.table, 2)
        self.explanation: UpdateExplanation | None = None
        self.trace: StepTrace | None = None

    def clear(self) -> None:
        self.explanation = None
        self.weights.hide()
        self.title.setText("Click a weight in the Tensor tab at an update event to see how "
                           "the optimizer changed it.")
        for label in (self.formula, self.steps, self.result):
            label.setText("")
        self.table.setRowCount(0)

    def show_weight(self, trace: StepTrace, key: str, index: tuple[int, ...]) -> None:
        where = f"{key}[{', '.join(map(str, index))}]"
        try:
            e = explain_update(trace, key, index)
        except ValueError as exc:
            self.clear()
            self.title.setText(f"{exc}.")
            return
        self.explanation, self.trace = e, trace
        shape = tuple(trace.updates[key].shape)
        self.weights.show_matrix(trace.updates[key].float().numpy(), f"Δw · {key}",
                                 *parameter_axes(shape))
        self.weights.mark(*index_cell(shape, e.index))
        self.weights.show()
        step = f" · step t = {e.step}" if e.step is not None else ""
        self.title.setText(f"<b>{html.escape(where)}</b> · {e.optimizer}{step}")
        self.formula.setText("<br>".join(html.escape(p) for p in e.formula.split(";  ")))
        self.steps.setText("\n".join(e.steps))
        agree = "✓ the rule gives torch's step" if e.difference <= 1e-6 * max(
            1.0, abs(e.actual)) else "✗ the rule and torch's step differ"
        self.result.setText(f"w′ by the rule = {e.predicted:.8g} · after torch's step "
                            f"{e.actual:.8g} · {agree} (difference {e.difference:.1g})")
        self.table.setRowCount(len(e.terms))
        for row, (name, value) in enumerate(e.terms.items()):
            self.table.setItem(row, 0, QTableWidgetItem(name))
            self.table.setItem(row, 1, QTableWidgetItem(f"{value:.8g}"))

    def _clicked(self, row: int, column: int) -> None:
        """Another weight of the same parameter, clicked in the Δw heatmap."""
        if self.trace is not None and self.explanation is not None:
            key = self.explanation.key
            shape = tuple(self.trace.updates[key].shape)
            self.show_weight(self.trace, key, cell_index(shape, row, column))
