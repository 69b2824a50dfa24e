"""Colours and icons shared by the palette and the canvas, one hue per layer group."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPainterPath, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QApplication

GROUP_COLOURS = {
    "input": "#4c9be8", "dense": "#5b6ee1", "convolution": "#2fa37a",
    "normalization": "#c98b2a", "activation": "#c2449a", "merge": "#8a63c9",
    "tensor": "#6f8f2f", "sequence": "#2b9db3", "operation": "#a8841a", "loss": "#7a7a7a",
}
GROUP_LETTERS = {"input": "In", "dense": "D", "convolution": "C", "normalization": "N",
                 "activation": "f", "merge": "+", "tensor": "T", "sequence": "S",
                 "operation": "Op", "loss": "L"}
ERROR_COLOUR = QColor("#e0443e")  # no layer group may use a red near this one
WARNING_COLOUR = QColor("#e69b00")  # a diagnostic verdict: worth a look, not an error
GROUP_BLOCK_COLOUR = QColor("#4a5568")  # a group of layers (slate: no layer group's hue)
SELECTION_COLOUR = QColor("#2f7de1")  # a selected edge glows in it


def group_colour(group: str) -> QColor:
    return QColor(GROUP_COLOURS.get(group, "#888888"))


def group_icon(group: str, size: int = 32) -> QIcon:
    """A filled circle in the group's colour with a letter: drawn, so no image files."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(group_colour(group))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawEllipse(QRectF(1, 1, size - 2, size - 2))
    painter.setPen(QColor("white"))
    font = QFont()
    font.setBold(True)
    font.setPixelSize(int(size * 0.45))
    painter.setFont(font)
    painter.drawText(QRectF(0, 0, size, size), Qt.AlignmentFlag.AlignCenter,
                     GROUP_LETTERS.get(group, "?"))
    painter.end()
    return QIcon(pixmap)


def is_dark() -> bool:
    palette = QApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


# -- badges, drawn with paths: no emoji or symbol font is needed (they render as empty boxes
# where none is installed) ---------------------------------------------------------------
def draw_padlock(painter: QPainter, rect: QRectF, colour: QColor) -> None:
    """A closed padlock filling `rect` (the frozen badge)."""
    painter.save()
    w, h = rect.width(), rect.height()
    body = QRectF(rect.left() + 0.15 * w, rect.top() + 0.45 * h, 0.7 * w, 0.5 * h)
    shackle = QRectF(rect.left() + 0.28 * w, rect.top() + 0.08 * h, 0.44 * w, 0.6 * h)
    painter.setPen(QPen(colour, max(1.5, 0.12 * w), Qt.PenStyle.SolidLine,
                        Qt.PenCapStyle.FlatCap))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawArc(shackle, 0, 180 * 16)
    painter.drawLine(QPointF(shackle.left(), shackle.center().y()),
                     QPointF(shackle.left(), body.top()))
    painter.drawLine(QPointF(shackle.right(), shackle.center().y()),
                     QPointF(shackle.right(), body.top()))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    painter.drawRoundedRect(body, 1.5, 1.5)
    painter.restore()


def _exclamation(painter: QPainter, centre: QPointF, height: float, colour: QColor) -> None:
    painter.setPen(QPen(colour, max(1.5, height / 5), Qt.PenStyle.SolidLine,
                        Qt.PenCapStyle.RoundCap))
    painter.drawLine(centre - QPointF(0, height / 2), centre + QPointF(0, height / 8))
    painter.drawPoint(centre + QPointF(0, height / 2))


def draw_error_badge(painter: QPainter, rect: QRectF) -> None:
    """A red disc with an exclamation mark (the node has a problem)."""
    painter.save()
    painter.setPen(QPen(QColor("white"), 1.5))
    painter.setBrush(ERROR_COLOUR)
    painter.drawEllipse(rect)
    _exclamation(painter, rect.center(), rect.height() * 0.5, QColor("white"))
    painter.restore()


def draw_warning_badge(painter: QPainter, rect: QRectF, colour: QColor = WARNING_COLOUR
                       ) -> None:
    """A triangle with an exclamation mark (a diagnostic verdict)."""
    painter.save()
    triangle = QPainterPath(QPointF(rect.center().x(), rect.top()))
    triangle.lineTo(rect.bottomRight())
    triangle.lineTo(rect.bottomLeft())
    triangle.closeSubpath()
    painter.setPen(QPen(colour.darker(120), 1.0))
    painter.setBrush(colour)
    painter.drawPath(triangle)
    centre = QPointF(rect.center().x(), rect.top() + rect.height() * 0.6)
    _exclamation(painter, centre, rect.height() * 0.45, QColor("white"))
    painter.restore()
