"""The training curves as a picture, drawn by Qt's own renderer: pyqtgraph 0.14's exporters
leave the legend (which ignores transformations) unscaled in a PNG and fail on Qt 6.11's
closed paths in an SVG (pyqtgraph issue 3495)."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QBuffer, QIODevice, QPointF, QRectF, Qt
from PySide6.QtGui import QImage, QPaintDevice, QPainter
from PySide6.QtSvg import QSvgGenerator


def png(view: pg.GraphicsLayoutWidget) -> bytes:
    """Twice the on-screen size, as a device pixel ratio so that every item scales."""
    image = QImage((2 * view.ci.sceneBoundingRect().size()).toSize(),
                   QImage.Format.Format_ARGB32)
    image.setDevicePixelRatio(2.0)
    image.fill(Qt.GlobalColor.transparent)
    _render(view, image)
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(buffer.data().data())


def svg(view: pg.GraphicsLayoutWidget, title: str) -> bytes:
    size = view.ci.sceneBoundingRect().size()
    buffer = QBuffer()
    generator = QSvgGenerator()
    generator.setOutputDevice(buffer)
    generator.setSize(size.toSize())
    generator.setViewBox(QRectF(QPointF(0, 0), size))
    generator.setTitle(title)
    # the axes replay QPictures recorded at the screen's resolution: the same here
    generator.setResolution(view.logicalDpiX())
    _render(view, generator)
    return bytes(buffer.data().data())


def _render(view: pg.GraphicsLayoutWidget, device: QPaintDevice) -> None:
    source = view.ci.sceneBoundingRect()
    for item in view.ci.items:
        if isinstance(item, pg.PlotItem):
            item.autoBtn.hide()  # the pointer's "A" button is no part of the picture
    painter = QPainter(device)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
    target = QRectF(QPointF(0, 0), source.size())
    painter.fillRect(target, view.backgroundBrush())
    view.scene().render(painter, target, source)
    painter.end()
