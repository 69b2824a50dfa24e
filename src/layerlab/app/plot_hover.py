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
    """One text and one dot per plot; at most one plot shows them at a time."""

    def __init__(self, plots: tuple[pg.PlotItem, ...]) -> None:
        self.plots = plots
        dark = pg.getConfigOption("background") in (None, "k")
        fill = pg.mkBrush(30, 30, 30, 215) if dark else pg.mkBrush(255, 255, 255, 215)
        self.items = {plot: (pg.TextItem(anchor=(0, 1), fill=fill), pg.ScatterPlotItem(size=9))
                      for plot in plots}
        for plot, (text, dot) in self.items.items():
            for item in (text, dot):
                item.setZValue(100)
                item.hide()
                plot.addItem(item, ignoreBounds=True)

    def hide(self) -> None:
        for text, dot in self.items.values():
            text.hide()
            dot.hide()

    def text(self) -> str:
        """What the pointer shows now ("" when it points at nothing)."""
        return next((text.toPlainText() for text, _dot in self.items.values()
                     if text.isVisible()), "")

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
        text, dot = self.items[plot]
        text.setText(_describe(run, which, index, axis))
        text.setColor(run.colour)
        right = mouse.x() > sum(plot.vb.viewRange()[0]) / 2
        text.setAnchor((1, 1) if right else (0, 1))
        text.setPos(x, y)
        dot.setData([x], [y], brush=run.colour, pen=pg.mkPen("w"))
        text.show()
        dot.show()


def _describe(run: RunData, which: int, index: int, axis: str) -> str:
    x, y = run.shown[which][0][index], run.shown[which][1][index]
    lines = [run.label, f"{axis} {x:.6g}", f"{WHAT[which]} {y:.4g}"]
    raw = run.shown[0][1]
    if which == 1 and run.curves[0].isVisible() and raw[index] != y:
        lines[-1] += f" (raw {raw[index]:.4g})"
    return "\n".join(lines)
