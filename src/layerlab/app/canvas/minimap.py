"""The overview: the whole graph small, in a corner of the canvas, with the part the canvas
shows outlined. Click or drag in it to move there."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPen, QResizeEvent, QWheelEvent
from PySide6.QtWidgets import QFrame, QGraphicsView, QWidget

SIZE = (220, 160)
MARGIN = 12


class Minimap(QGraphicsView):
    """Draws the canvas's scene; `main` is the canvas it steers."""

    def __init__(self, main: QGraphicsView, parent: QWidget) -> None:
        super().__init__(main.scene(), parent)
        self.main = main
        self.setObjectName("minimap")
        self.setAccessibleName("Overview")
        self.setAccessibleDescription("The whole graph; the outlined part is on the canvas")
        self.setToolTip("Overview: click or drag to move the canvas there")
        self.setFixedSize(*SIZE)
        self.setFrameShape(QFrame.Shape.Box)
        self.setInteractive(False)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setRenderHints(QPainter.RenderHint.Antialiasing)
        self.setBackgroundBrush(main.palette().base())
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.visible_rect = QRectF()

    def follow(self, items: QRectF, visible: QRectF) -> None:
        """Show `items` (the whole graph) with `visible` (the canvas's view) outlined."""
        self.visible_rect = visible
        if items.isValid():
            self.setSceneRect(items)
            self.fitInView(items, Qt.AspectRatioMode.KeepAspectRatio)
        self.viewport().update()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        if self.visible_rect.isValid():
            painter.setPen(QPen(QColor("#ffb300"), 2.0 / max(self.transform().m11(), 1e-6)))
            painter.setBrush(QColor(255, 179, 0, 40))
            painter.drawRect(self.visible_rect)

    def _steer(self, event: QMouseEvent) -> None:
        self.main.centerOn(self.mapToScene(event.position().toPoint()))
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._steer(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._steer(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        event.accept()

    def wheelEvent(self, event: QWheelEvent) -> None:
        event.ignore()  # the canvas below zooms

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.follow(self.sceneRect(), self.visible_rect)

