"""Two tabs of the step-through dock: the tensors of the node in view (its output, its
gradient, or its weights with their gradient and update) and the gradient flow per layer."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QListWidget, QVBoxLayout, QWidget

from layerlab.app.heatmap import Heatmap, cell_index
from layerlab.core.diagnostics import Verdict, node_of, trace_grad_norms
from layerlab.core.ports import owner
from layerlab.core.tracer import Stats, StepTrace

BAR, BAD_BAR = "#7b3fc4", "#d64545"  # a layer's gradient bar; red when a verdict names it
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_of_ten(k: int) -> str:
    return "1" if k == 0 else f"10{str(k).translate(SUPERSCRIPT)}"


def parameter_axes(shape: tuple[int, ...]) -> tuple[str, str]:
    """What the rows and columns of a parameter's heatmap are."""
    if len(shape) == 1:
        return "", "entry"
    if len(shape) == 2:
        return "output unit", "input unit"
    return "output channel", "input channel × kernel position"


def value_axes(t: torch.Tensor) -> tuple[str, str]:
    return "sample", ("unit" if t.dim() <= 2 else "unit (flattened)")


class TensorView(QWidget):
    """Heatmaps of the node in view. At update events: W, dL/dW and Δw of one of its
    parameters (chosen in a list); a click on a weight asks for the explanation of its
    update. Elsewhere: the node's values or gradient for the kept samples."""

    weightChosen = Signal(str, tuple)  # state-dict key, index into it
    sampleChosen = Signal(int)

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("tensorView")
        self.trace: StepTrace | None = None
        self.phase, self.node = "", ""
        self.parameter = QComboBox()
        self.parameter.setObjectName("tensorParameter")
        self.parameter.setAccessibleName("Parameter")
        self.parameter.setToolTip("Which parameter of the node the heatmaps show")
        self.parameter.currentTextChanged.connect(self._show_parameter)
        self.hint = QLabel()
        self.hint.setObjectName("tensorHint")
        self.hint.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.parameter)
        top.addWidget(self.hint, 1)
        tip = ("Values as colours, white at zero. At an update event click a weight to "
               "explain its update; elsewhere click a row to explain that sample.")
        self.heatmaps = [Heatmap(name, tip) for name in ("tensorA", "tensorB", "tensorC")]
        for heatmap in self.heatmaps:
            heatmap.cellClicked.connect(self._clicked)
        self.histogram = pg.PlotWidget()
        self.histogram.setObjectName("tensorHistogram")
        self.histogram.setAccessibleName("Histogram")
        row = QHBoxLayout()
        for heatmap in self.heatmaps:
            row.addWidget(heatmap, 1)
        row.addWidget(self.histogram, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(row, 1)

    def show_step(self, trace: StepTrace, phase: str, node: str, output: str = "") -> None:
        """The node at this phase of the step; `output` is the model's output node, whose
        values are ŷ (as in the chain rule's formulas)."""
        self.trace, self.phase, self.node = trace, phase, node
        name = "ŷ" if node == output else node
        keys = [k for k in trace.updates if node_of(k) == node] if phase == "update" else []
        self.parameter.blockSignals(True)
        self.parameter.clear()
        self.parameter.addItems(keys)
        self.parameter.blockSignals(False)
        self.parameter.setVisible(bool(keys))
        if keys:
            self._show_parameter(keys[0])
            return
        if phase == "backward" and node in dict(trace.backward):
            self._show_values(f"dL/d{name}", trace.grad(node), trace.grad_stats.get(node))
        elif node in dict(trace.forward):
            self._show_values(name if name == node else f"ŷ ({node})", trace.output(node),
                              trace.stats.get(node))
        else:
            self._show_ports(node, phase)
        self.hint.setText("Click a row to explain that sample in the chain-rule tab.")

    def _show_ports(self, node: str, phase: str) -> None:
        """A Split or Chunk: the value (or gradient) of each output port, `node:k`."""
        assert self.trace is not None
        values = dict(self.trace.backward if phase == "backward" else self.trace.forward)
        ports = [k for k in values if ":" in k and owner(k) == node][: len(self.heatmaps)]
        prefix = "dL/d" if phase == "backward" else ""
        self._show([(f"{prefix}{k} (first {len(values[k])} samples)", values[k],
                     *value_axes(values[k])) for k in ports],
                   None if phase == "backward" else self.trace.stats.get(node), node)

    def _show_values(self, name: str, t: torch.Tensor, stats: Stats | None) -> None:
        rows, columns = value_axes(t)
        self._show([(f"{name} (first {len(t)} samples)", t, rows, columns)], stats, name)

    def _show_parameter(self, key: str) -> None:
        trace = self.trace
        if trace is None or key not in trace.updates:
            return
        rows, columns = parameter_axes(tuple(trace.weights[key].shape))
        self._show([(f"W · {key}", trace.weights[key], rows, columns),
                    (f"dL/dW · {key}", trace.param_grads[key], rows, columns),
                    (f"Δw · {key}", trace.updates[key], rows, columns)],
                   trace.param_stats[key].get("update"), f"Δw · {key}")
        self.hint.setText("Click a weight to explain its update in the Update tab.")

    def _show(self, tensors: list[tuple[str, torch.Tensor, str, str]], stats: Stats | None,
              name: str) -> None:
        for i, heatmap in enumerate(self.heatmaps):
            if i < len(tensors):
                title, t, rows, columns = tensors[i]
                heatmap.show_matrix(t.detach().float().numpy(), title, rows, columns)
            heatmap.setVisible(i < len(tensors))
        self.histogram.clear()
        self.histogram.setTitle("")
        if stats is not None:
            edges = np.linspace(stats.min, stats.max if stats.max > stats.min else
                                stats.min + 1, len(stats.hist) + 1)
            self.histogram.plot(edges, stats.hist, stepMode="center", fillLevel=0,
                                brush=pg.mkBrush("#4c9be880"))
            self.histogram.setTitle(f"{name}: mean {stats.mean:.3g} · std {stats.std:.3g}"
                                    f"<br>min {stats.min:.3g} · max {stats.max:.3g}")
        self.histogram.setVisible(stats is not None)

    def _clicked(self, row: int, column: int) -> None:
        key = self.parameter.currentText()
        if self.phase == "update" and key and self.trace is not None:
            shape = tuple(self.trace.weights[key].shape)
            self.weightChosen.emit(key, cell_index(shape, row, column))
        elif self.phase != "update":
            self.sampleChosen.emit(row)


class FlowView(QWidget):
    """‖dL/dW‖ per layer as bars on a log axis, each from the axis' bottom (a longer bar is
    a larger gradient; red where a gradient verdict names the layer), and the verdicts of
    the step."""

    def __init__(self) -> None:
        super().__init__()
        self.plot = pg.PlotWidget(title="gradient norm ‖dL/dW‖ per layer (log scale)")
        self.plot.setObjectName("gradientFlow")
        self.plot.setAccessibleName("Gradient flow")
        self.plot.setMenuEnabled(False)
        self.bars: pg.BarGraphItem | None = None
        self.verdict_list = QListWidget()
        self.verdict_list.setObjectName("verdicts")
        self.verdict_list.setAccessibleName("Diagnostics")
        layout = QHBoxLayout(self)
        layout.addWidget(self.plot, 2)
        layout.addWidget(self.verdict_list, 1)

    def show_trace(self, trace: StepTrace, verdicts: list[Verdict]) -> None:
        norms = trace_grad_norms(trace)
        self.plot.clear()
        names = list(norms)
        values = np.array([math.log10(max(norms[n], 1e-30)) for n in names])
        if len(values):
            bottom = math.floor(values.min())
            if values.min() - bottom < 0.25:
                bottom -= 1
            top = max(math.ceil(values.max()), bottom + 1)
            flagged = {v.node for v in verdicts if v.kind in ("vanishing", "exploding",
                                                              "nonfinite")}
            self.bars = pg.BarGraphItem(x=np.arange(len(names)), y0=bottom, y1=values,
                                        width=0.7, brushes=[BAD_BAR if n in flagged else BAR
                                                            for n in names])
            self.plot.addItem(self.bars)
            self.plot.setYRange(bottom, top, padding=0)
            self.plot.setXRange(-0.6, len(names) - 0.4, padding=0)
            self.plot.getAxis("left").setTicks(
                [[(k, power_of_ten(k)) for k in range(bottom, top + 1)]])
        self.plot.getAxis("bottom").setTicks([list(enumerate(names))])
        self.verdict_list.clear()
        for verdict in verdicts:
            self.verdict_list.addItem(verdict.message)
        if not verdicts:
            self.verdict_list.addItem("No problems: gradients look healthy.")
