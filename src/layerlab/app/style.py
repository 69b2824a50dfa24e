"""Colours and icons shared by the palette and the canvas, one hue per layer group."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QApplication

GROUP_COLOURS = {
    "input": "#4c9be8", "dense": "#5b6ee1", "convolution": "#2fa37a",
    "normalization": "#c98b2a", "activation": "#d4594b", "merge": "#8a63c9",
    "sequence": "#2b9db3", "loss": "#7a7a7a",
}
GROUP_LETTERS = {"input": "In", "dense": "D", "convolution": "C", "normalization": "N",
                 "activation": "f", "merge": "+", "sequence": "S", "loss": "L"}
ERROR_COLOUR = QColor("#e0443e")


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
