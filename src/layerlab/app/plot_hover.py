"""The run and value under the pointer on the training curves: the nearest point of a visible
run, named in a text beside a dot on it."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF

from layerlab.app.plot_tools import RunData, nearest

HOVER_PX = 24  # the farthest a point may be from the pointer to be named
# the curve each plot names (Run.curves: raw loss, smoothed loss, validation loss, score)
CURVE = (1, 2, 3)
WHAT = ("loss", "loss", "validation loss", "validation score")


class Hover:
    """A dot on the nearest point and, beside it, a text over the whole scene (a text in
    the plot would be cut at a narrow plot's edge)."""

    def __init__(self, plots: tuple[pg.PlotItem, ...]) -> None:
        self.plots = plots
        dark = pg.getConfigOption("background") in (None, "k")
        fill = pg.mkBrush(30, 30, 30, 215) if dark else pg.mkBrush(255, 255, 255, 215)
        self.label = pg.TextItem(anchor=(0, 1), fill=fill)
        self.label.setZValue(100)
        self.label.hide()
        plots[0].scene().addItem(self.label)
        self.dots = {plot: pg.ScatterPlotItem(size=9) for plot in plots}
        for plot, dot in self.dots.items():
            dot.setZValue(100)
            dot.hide()
            plot.addItem(dot, ignoreBounds=True)

    def hide(self) -> None:
        self.label.hide()
        for dot in self.dots.values():
            dot.hide()

    def text(self) -> str:
        """What the pointer shows now ("" when it points at nothing)."""
        return self.label.toPlainText() if self.label.isVisible() else ""

    def point_at(self, pos: QPointF, runs: Iterable[RunData], axis: str, log: bool) -> None:
        """Name the point nearest `pos` (scene coordinates) among the visible runs, or
        nothing when none lies within HOVER_PX pixels."""
        self.hide()
        plot = next((p for p in self.plots if p.vb.sceneBoundingRect().contains(pos)), None)
        if plot is None:
            return
        which = CURVE[self.plots.index(plot)]
        log = log and which < 3
        picks = [run for run in runs if run.visible]
        curves = [run.shown[which] for run in picks]
        if log:
            curves = [(x, np.log10(np.where(y > 0, y, np.nan))) for x, y in curves]
        mouse = plot.vb.mapSceneToView(pos)
        found = nearest(curves, mouse.x(), mouse.y(), plot.vb.viewPixelSize())
        if found is None or found[2] > HOVER_PX:
            return
        run, index = picks[found[0]], found[1]
        x, y = curves[found[0]][0][index], curves[found[0]][1][index]
        self.dots[plot].setData([x], [y], brush=run.colour, pen=pg.mkPen("w"))
        self.dots[plot].show()
        self.label.setText(_describe(run, which, index, axis))
        self.label.setColor(run.colour)
        self._place(plot.vb.mapViewToScene(QPointF(x, y)))

    def _place(self, at: QPointF) -> None:
        """Beside the point, on whichever side the scene has room for the text."""
        size = self.label.boundingRect().size()
        room = self.plots[0].scene().sceneRect()
        right = at.x() + 8 + size.width() > room.right()
        above = at.y() - 8 - size.height() > room.top()
        self.label.setAnchor((1 if right else 0, 1 if above else 0))
        self.label.setPos(at + QPointF(-8 if right else 8, -8 if above else 8))
        self.label.show()


def _describe(run: RunData, which: int, index: int, axis: str) -> str:
    x, y = run.shown[which][0][index], run.shown[which][1][index]
    lines = [run.label, f"{axis} {x:.6g}", f"{WHAT[which]} {y:.4g}"]
    raw = run.shown[0][1]
    if which == 1 and run.curves[0].isVisible() and raw[index] != y:
        lines[-1] += f" (raw {raw[index]:.4g})"
    return "\n".join(lines)
