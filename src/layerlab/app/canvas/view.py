"""The canvas view: zoom (wheel, Ctrl +/−), pan (middle drag, Space drag or the overview),
fit, the opening view, and drops from the palette.

The view keeps its own scene rectangle, the graph plus what is on screen: Fit leaves no
scrollbars, and a graph that was moved or laid out again leaves no stale room behind.
"""

from __future__ import annotations

from PySide6.QtCore import QMimeData, QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import (
    QAction,
    QContextMenuEvent,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QGraphicsView, QMenu, QStyle, QWidget

from layerlab.app.canvas.items import TEXT_PX, NodeItem
from layerlab.app.canvas.minimap import MARGIN, Minimap
from layerlab.app.canvas.scene import GraphScene

LAYER_MIME = "application/x-layerlab-layer"
ZOOM_STEP = 1.15
FIT_MARGIN = 40.0
MAX_FIT_SCALE = 1.5
READABLE_PX = 10.0  # the opening view never shows node text smaller than this
FOLLOW_DELAY_MS = 100


def layer_mime(type_name: str) -> QMimeData:
    data = QMimeData()
    data.setData(LAYER_MIME, type_name.encode())
    data.setText(type_name)
    return data


def _axis_room(screen0: float, screen1: float, graph0: float, graph1: float
               ) -> tuple[float, float]:
    """Along an axis the graph fits: just the graph, which Qt then centres on screen (a
    scene smaller than its view is aligned to the middle). Else the graph with half a
    screen either side."""
    if graph1 - graph0 + 2 * FIT_MARGIN <= screen1 - screen0:
        return graph0 - FIT_MARGIN, graph1 + FIT_MARGIN
    half = (screen1 - screen0) / 2
    return min(graph0 - half, screen0), max(graph1 + half, screen1)


class GraphView(QGraphicsView):
    def __init__(self, scene: GraphScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.graph_scene = scene  # a Python reference keeps the scene alive
        self.setObjectName("canvas")
        self.setAccessibleName("Network canvas")
        self.setAccessibleDescription("The layers of the network and the tensors between them")
        self.setRenderHints(QPainter.RenderHint.Antialiasing
                            | QPainter.RenderHint.TextAntialiasing)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setAcceptDrops(True)
        self._panning: QPointF | None = None
        self.context_actions: list[QAction] = []  # the node menu, given by the window
        self.minimap = Minimap(self, self)
        self.minimap.hide()
        self._follow_soon = QTimer(self)  # many changes in a row: follow them once
        self._follow_soon.setObjectName("canvasFollowTimer")
        self._follow_soon.setSingleShot(True)
        self._follow_soon.setInterval(FOLLOW_DELAY_MS)
        self._follow_soon.timeout.connect(self._follow)
        scene.changed.connect(self._follow_soon.start)
        self.horizontalScrollBar().valueChanged.connect(self._follow_view)
        self.verticalScrollBar().valueChanged.connect(self._follow_view)

    # -- zoom -------------------------------------------------------------------------
    def zoom(self, factor: float) -> None:
        current = self.transform().m11()
        factor = max(0.1 / current, min(4.0 / current, factor))
        self.scale(factor, factor)
        self._follow()

    def zoom_in(self) -> None:
        self.zoom(ZOOM_STEP)

    def zoom_out(self) -> None:
        self.zoom(1 / ZOOM_STEP)

    def graph_bounds(self) -> QRectF:
        """What the graph covers: its nodes (with their captions) and edges, not hidden
        children such as thumbnails."""
        rect = QRectF()
        for item in [*self.graph_scene.nodes.values(), *self.graph_scene.edges.values()]:
            rect = rect.united(item.sceneBoundingRect())
        return rect

    def graph_rect(self) -> QRectF:
        m = FIT_MARGIN
        return self.graph_bounds().adjusted(-m, -m, m, m)

    def _port_size(self, scale: float) -> tuple[float, float]:
        """The viewport in scene units at `scale`, as large as it is without scrollbars."""
        port = self.maximumViewportSize()
        return port.width() / scale, port.height() / scale

    def fit_scale(self) -> float:
        """The scale at which the whole graph fits the viewport (at most 1.5)."""
        rect, (w, h) = self.graph_rect(), self._port_size(1.0)
        if not rect.isValid() or rect.isEmpty():
            return 1.0
        # a hair under the exact fit: at the exact one, rounding can call for a scrollbar
        return min(MAX_FIT_SCALE, w / rect.width(), h / rect.height()) * 0.999

    def fit(self) -> None:
        """The whole graph, centred, without scrollbars (Ctrl+0)."""
        self._show_at(self.fit_scale(), self.graph_rect().center())

    def show_opening(self) -> None:
        """How a project opens: the whole graph if its node text is readable so, else at a
        readable size, centred across the flow and from the graph's start (its inputs)."""
        scale = self.fit_scale()
        readable = READABLE_PX / TEXT_PX
        if scale * TEXT_PX >= READABLE_PX:
            self.fit()
            return
        rect = self.graph_rect()
        w, h = self._port_size(readable)
        if self.graph_scene.flow == "TB":
            centre = QPointF(rect.center().x(), rect.top() + h / 2)
        else:
            centre = QPointF(rect.left() + w / 2, rect.center().y())
        self._show_at(readable, centre)

    def _show_at(self, scale: float, centre: QPointF) -> None:
        self.resetTransform()
        self.scale(scale, scale)
        self._room(centre)
        self.centerOn(centre)
        self._follow_view()

    def _room(self, centre: QPointF) -> bool:
        """The scene rectangle, the room scrollbars move in. Along each axis: the graph
        where it fits on screen (centred, no scrollbar), else the graph with half a screen
        either side, so that any part of it can be brought to the middle. True if it
        changed."""
        graph = self.graph_bounds()
        w, h = self._port_size(self.transform().m11())
        bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent) \
            / self.transform().m11()
        m = 2 * FIT_MARGIN
        across, down = graph.width() + m > w, graph.height() + m > h  # which way it scrolls
        down = down or (across and graph.height() + m > h - bar)  # a scrollbar takes room
        across = across or (down and graph.width() + m > w - bar)
        w, h = w - bar * down, h - bar * across
        screen = QRectF(centre.x() - w / 2, centre.y() - h / 2, w, h)
        x0, x1 = _axis_room(screen.left(), screen.right(), graph.left(), graph.right())
        y0, y1 = _axis_room(screen.top(), screen.bottom(), graph.top(), graph.bottom())
        room = QRectF(x0, y0, x1 - x0, y1 - y0)
        if room == self.sceneRect():
            return False
        self.setSceneRect(room)
        return True

    def visible_rect(self) -> QRectF:
        return self.mapToScene(self.viewport().rect()).boundingRect()

    def _follow(self) -> None:
        """After a change or a zoom: room for the graph as it is now, and the overview."""
        centre = self.visible_rect().center()
        if self._room(centre):
            self.centerOn(centre)
        self._follow_view()

    def _follow_view(self) -> None:
        graph, visible = self.graph_bounds(), self.visible_rect()
        outside = not visible.contains(graph) and not graph.isEmpty()
        self.minimap.setVisible(outside)
        if outside:
            self.minimap.follow(graph, visible)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        port = self.viewport().geometry()
        self.minimap.move(port.right() - self.minimap.width() - MARGIN,
                          port.bottom() - self.minimap.height() - MARGIN)
        self._follow()

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y()
        if delta:
            self.zoom(ZOOM_STEP if delta > 0 else 1 / ZOOM_STEP)
            event.accept()

    # -- pan: middle button, or Space held while dragging --------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
            return
        super().keyReleaseEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton:
            self._panning = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._panning is not None:
            delta = event.position() - self._panning
            self._panning = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value()
                                                - int(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(delta.y()))
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton and self._panning is not None:
            self._panning = None
            self.viewport().unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        item = self.itemAt(event.pos())
        while item is not None and not isinstance(item, NodeItem):
            item = item.parentItem()
        if item is None or not self.context_actions:
            super().contextMenuEvent(event)
            return
        if not item.isSelected():
            self.graph_scene.select_only([item.node])
        menu = QMenu(self)
        menu.setObjectName("nodeMenu")
        menu.addActions(self.context_actions)
        menu.exec(event.globalPos())

    # -- drops from the palette -------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasFormat(LAYER_MIME):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if event.mimeData().hasFormat(LAYER_MIME):
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        if not event.mimeData().hasFormat(LAYER_MIME):
            super().dropEvent(event)
            return
        type_name = bytes(event.mimeData().data(LAYER_MIME).data()).decode()
        pos = self.mapToScene(event.position().toPoint())
        node = self.graph_scene.add_layer(type_name, pos)
        if node:
            self.graph_scene.select_only([node])
        event.acceptProposedAction()
