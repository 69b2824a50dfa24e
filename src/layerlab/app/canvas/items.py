"""Canvas items. They draw what they are told; the scene owns them and the id maps."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QImage,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsPixmapItem,
    QGraphicsSimpleTextItem,
    QStyle,
    QStyleOptionGraphicsItem,
    QWidget,
)

from layerlab.app.style import (
    ERROR_COLOUR,
    SELECTION_COLOUR,
    WARNING_COLOUR,
    draw_error_badge,
    draw_padlock,
    draw_warning_badge,
    group_colour,
    is_dark,
)

NODE_WIDTH = 168
LINE = 16
PORT_RADIUS = 6
TEXT_PX = 11  # the node's smallest text (its id, parameters, shape); the type is 12 bold
COMPACT_BELOW_PX = 7.0  # zoomed out so far that this text would be smaller: draw a block
OUTPUT_BELOW = 3  # top to bottom, the output port sits this far below the node: off its text



def paint_header(painter: QPainter, colour: QColor, title: str) -> QFont:
    """A node's (or a group block's) coloured header with its title in white, bold; returns
    the bold font, set on the painter."""
    header = QRectF(0, 0, NODE_WIDTH, LINE + 6)
    path = QPainterPath()
    path.addRoundedRect(header, 7, 7)
    painter.fillPath(path, colour)
    bold = QFont()
    bold.setBold(True)
    bold.setPixelSize(12)
    painter.setFont(bold)
    painter.setPen(QColor("white"))
    painter.drawText(header.adjusted(8, 0, -22, 0), Qt.AlignmentFlag.AlignVCenter, title)
    return bold

class PortItem(QGraphicsEllipseItem):
    """A connection point of a node: input `index` (the operand order of a merge), or
    output `index` (0 unless the layer has several outputs, as Split and Chunk do)."""

    def __init__(self, node: str, index: int, parent: QGraphicsItem,
                 is_output: bool = False) -> None:
        r = PORT_RADIUS
        super().__init__(-r, -r, 2 * r, 2 * r, parent)
        self.node, self.index, self.is_output = node, index, is_output
        self.setBrush(QBrush(QColor("#f5f5f5")))
        self.setPen(QPen(QColor("#555555"), 1.5))
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setZValue(2)

    def hoverEnterEvent(self, event: object) -> None:
        self.setBrush(QBrush(QColor("#ffd54f")))

    def hoverLeaveEvent(self, event: object) -> None:
        self.setBrush(QBrush(QColor("#f5f5f5")))


class NodeItem(QGraphicsItem):
    """A node: type, id, key parameters and output shape; red with a badge on errors."""

    def __init__(self, node: str, on_moved: Callable[[str], None]) -> None:
        super().__init__()
        self.node = node
        self.on_moved = on_moved
        self.type_name = ""
        self.group = "dense"
        self.lines: list[str] = []
        self.shape_text = ""
        self.errors: list[str] = []
        self.frozen = False
        self.highlight: QColor | None = None  # step-through colouring
        self.stage: QColor | None = None  # pipeline-stage colouring, under step-through's
        self.stage_label = ""
        self.caption = ""
        self.verdict = ""  # a diagnostic badge: vanishing, exploding, dead, …
        self.health: list[str] = []  # the sentences of the verdicts a run's health raised
        self.inputs: list[PortItem] = []
        self.outputs: list[PortItem] = []
        self.thumbnail = QGraphicsPixmapItem(self)
        self.thumbnail.setVisible(False)
        self.thumbnail.setToolTip(f"{node}'s output over the input plane, the mean of all "
                                  "its units (blue below zero, red above)")
        unit = QGraphicsSimpleTextItem("mean of\nall units", self.thumbnail)
        small = QFont()
        small.setPixelSize(9)
        unit.setFont(small)
        unit.setBrush(QColor("#8a8f98"))
        unit.setPos(-unit.boundingRect().width() - 3, THUMB - unit.boundingRect().height())
        self.height = 3 * LINE + 12
        self.flow = "LR"  # inputs left and output right; "TB": inputs on top, output below
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable
                      | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setZValue(1)

    def show(self, type_name: str, group: str, lines: list[str], shape_text: str,
             errors: list[str], frozen: bool, n_inputs: int, n_outputs: int) -> None:
        self.prepareGeometryChange()
        self.type_name, self.group, self.lines = type_name, group, lines
        self.shape_text, self.errors, self.frozen = shape_text, errors, frozen
        self.height = (3 + len(lines)) * LINE + 10
        self._make_ports(n_inputs, n_outputs)
        self._tooltip()
        self.update()

    def _tooltip(self) -> None:
        tip = [f"{self.node} · {self.type_name}"] + [f"problem: {e}" for e in self.errors]
        tip += [self.stage_label] if self.stage_label else []
        self.setToolTip("\n".join(tip + [f"training: {h}" for h in self.health]))

    @property
    def output(self) -> PortItem | None:
        """The first output port (the only one of most layers), or None for a loss."""
        return self.outputs[0] if self.outputs else None

    def _make_ports(self, n_inputs: int, n_outputs: int) -> None:
        if len(self.inputs) != n_inputs:
            _drop(self.inputs)
            self.inputs = [PortItem(self.node, i, self) for i in range(n_inputs)]
        for i, port in enumerate(self.inputs):
            along = (i + 1) / (n_inputs + 1)
            port.setPos(*((NODE_WIDTH * along, 0) if self.flow == "TB"
                          else (0, self.height * along)))
        if len(self.outputs) != n_outputs:
            _drop(self.outputs)
            self.outputs = [PortItem(self.node, k, self, is_output=True)
                            for k in range(n_outputs)]
            for k, port in enumerate(self.outputs):
                if n_outputs > 1:
                    port.setToolTip(f"output {k} of {self.node}: drag to connect it")
        for k, port in enumerate(self.outputs):
            port.setPos(self.output_pos(k) - self.scenePos())

    def set_flow(self, flow: str) -> None:
        """Where the ports sit: "TB" (top and bottom) or "LR" (left and right)."""
        if flow != self.flow:
            self.flow = flow
            self._make_ports(len(self.inputs), len(self.outputs))

    def set_step_state(self, colour: QColor | None, caption: str, verdict: str) -> None:
        if (self.highlight, self.caption, self.verdict) != (colour, caption, verdict):
            self.highlight, self.caption, self.verdict = colour, caption, verdict
            self.update()
            self.thumbnail.setY(self.height + (LINE + 4 if verdict else 4))

    def set_stage(self, colour: QColor | None, label: str) -> None:
        """Fill the body with its pipeline stage's colour (None: the usual body)."""
        if (self.stage, self.stage_label) != (colour, label):
            self.stage, self.stage_label = colour, label
            self._tooltip()
            self.update()

    @property
    def fill(self) -> QColor | None:
        """The body's colour when something colours it: step-through, else the stage."""
        return self.highlight if self.highlight is not None else self.stage

    def set_health(self, kinds: str, sentences: list[str]) -> None:
        """The verdicts of a run's health records: the verdict badge (as step-through draws
        it) and their sentences in the tooltip; empty clears them."""
        self.health = sentences
        self._tooltip()
        self.set_step_state(self.highlight, self.caption, kinds)

    def show_thumbnail(self, values: np.ndarray | None) -> None:
        """The node's output over the input plane, under the node; None hides it."""
        if values is None:
            self.thumbnail.setVisible(False)
            return
        pixmap = QPixmap.fromImage(heat_image(values)).scaled(THUMB, THUMB)
        self.thumbnail.setPixmap(pixmap)
        self.thumbnail.setPos(NODE_WIDTH - THUMB, self.height + (LINE + 4 if self.verdict
                                                                 else 4))
        self.thumbnail.setVisible(True)

    def input_pos(self, port: int) -> QPointF:
        if not self.inputs:
            return self.scenePos() + (QPointF(NODE_WIDTH / 2, 0) if self.flow == "TB"
                                      else QPointF(0, self.height / 2))
        return self.inputs[min(port, len(self.inputs) - 1)].scenePos()

    def output_pos(self, port: int = 0) -> QPointF:
        """Where output `port` sits: spread along the node's far side when it has several."""
        along = (min(port, max(len(self.outputs) - 1, 0)) + 1) / (max(len(self.outputs), 1) + 1)
        return self.scenePos() + (QPointF(NODE_WIDTH * along, self.height + OUTPUT_BELOW)
                                  if self.flow == "TB" else QPointF(NODE_WIDTH,
                                                                    self.height * along))

    def boundingRect(self) -> QRectF:
        """The body, the value label above it and the verdict badge below it: what is
        painted must be inside, or Fit and scrolling cut it off."""
        return QRectF(-4, -LINE - 4, NODE_WIDTH + 8, self.height + 2 * LINE + 8)

    def shape(self) -> QPainterPath:
        path = QPainterPath()  # clicks and rubber bands select the body only
        path.addRect(QRectF(-4, -4, NODE_WIDTH + 8, self.height + 8))
        return path

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        lod = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        if lod * TEXT_PX < COMPACT_BELOW_PX:
            self._paint_compact(painter)
            return
        dark = is_dark()
        body = QColor("#2b2d31") if dark else QColor("#ffffff")
        if self.fill is not None:
            body = self.fill
        text = QColor("#eeeeee") if dark and self.fill is None else QColor("#1e1e1e")
        border = ERROR_COLOUR if self.errors else group_colour(self.group)
        width = 3.0 if self.isSelected() else 1.6
        if self.isSelected():
            border = border.lighter(130) if dark else border.darker(130)
        rect = QRectF(0, 0, NODE_WIDTH, self.height)
        painter.setPen(QPen(border, width))
        painter.setBrush(body)
        painter.drawRoundedRect(rect, 7, 7)
        bold = paint_header(painter, border, self.type_name)
        plain = QFont()
        plain.setPixelSize(11)
        painter.setFont(plain)
        painter.setPen(text)
        y = LINE + 8
        for line in [self.node, *self.lines, self.shape_text]:
            painter.drawText(QRectF(8, y, NODE_WIDTH - 16, LINE),
                             Qt.AlignmentFlag.AlignVCenter, line)
            y += LINE
        above = self.caption or self.stage_label
        if above:  # above the node, so it never hides the node's own text
            painter.setPen(QColor("#eeeeee") if dark else QColor("#1e1e1e"))
            bold.setPixelSize(11)
            painter.setFont(bold)
            painter.drawText(QRectF(0, -LINE - 2, NODE_WIDTH, LINE),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             above)
        if self.verdict:  # below the node: a drawn badge, then the verdict
            draw_warning_badge(painter, QRectF(1, self.height + 3, 14, 13))
            painter.setPen(WARNING_COLOUR.darker(115))
            painter.setFont(bold)
            painter.drawText(QRectF(19, self.height + 2, NODE_WIDTH - 19, LINE),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             self.verdict)
        if self.errors:
            draw_error_badge(painter, QRectF(NODE_WIDTH - 18, 3, 15, 15))
        elif self.frozen:
            draw_padlock(painter, QRectF(NODE_WIDTH - 19, 3, 14, 16), QColor("white"))

    def _paint_compact(self, painter: QPainter) -> None:
        """Zoomed out: a block in the layer's colour with its type large (errors in red)."""
        colour = ERROR_COLOUR if self.errors else group_colour(self.group)
        if self.fill is not None:
            colour = self.fill
        rect = QRectF(0, 0, NODE_WIDTH, self.height)
        painter.setPen(QPen(colour.darker(150), 6.0 if self.isSelected() else 2.0))
        painter.setBrush(colour)
        painter.drawRoundedRect(rect, 7, 7)
        font = QFont()
        font.setBold(True)
        font.setPixelSize(30)
        label = self.compact_label()
        width = QFontMetricsF(font).horizontalAdvance(label) or 1.0
        font.setPixelSize(max(12, min(30, int(30 * (NODE_WIDTH - 12) / width))))
        painter.setFont(font)
        painter.setPen(QColor("#1e1e1e") if self.fill is not None else QColor("white"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, label)
        if self.verdict:  # the drawn badge, large enough to see at this zoom
            draw_warning_badge(painter, QRectF(-14, -14, 30, 27))

    def compact_label(self) -> str:
        """The block's text zoomed out: in step-through its verdict or value label (too
        small to read above it at this zoom), else its type."""
        return self.verdict or self.caption or self.type_name

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange,
                   value: object) -> object:
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            self.on_moved(self.node)
        return super().itemChange(change, value)


THUMB = 48


def _drop(ports: list[PortItem]) -> None:
    for port in ports:
        port.setParentItem(None)
        if port.scene():
            port.scene().removeItem(port)


def heat_image(values: np.ndarray) -> QImage:
    """A blue–white–red picture of a 2-D array, centred on zero (TensorFlow Playground's
    colours: blue negative, orange-red positive)."""
    scale = float(np.abs(values).max()) or 1.0
    v = np.clip(values / scale, -1, 1)
    rgb = np.empty((*v.shape, 3), dtype=np.uint8)
    neg, pos = np.clip(-v, 0, 1), np.clip(v, 0, 1)
    rgb[..., 0] = 255 - 180 * neg
    rgb[..., 1] = 255 - 120 * neg - 140 * pos
    rgb[..., 2] = 255 - 200 * pos
    rgb = np.ascontiguousarray(rgb[::-1])  # y grows upwards in the plane
    height, width, _ = rgb.shape
    return QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


class EdgeItem(QGraphicsPathItem):
    """A curve from an output port to an input port, labelled with the shape it carries."""

    def __init__(self, source: str, target: str) -> None:
        super().__init__()
        self.source, self.target = source, target
        self.label = QGraphicsSimpleTextItem(self)
        font = QFont()
        font.setPixelSize(10)
        self.label.setFont(font)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setZValue(0)
        self.colour = QColor("#8a8f98")
        self.width = 2.0
        self._apply_pen()

    def _apply_pen(self) -> None:
        pen = QPen(self.colour, self.width + (1.5 if self.isSelected() else 0))
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        self.setPen(pen)

    def set_style(self, colour: QColor, width: float) -> None:
        self.colour, self.width = colour, width
        self._apply_pen()

    def shape(self) -> QPainterPath:
        """A band along the curve: clicks near the line select it, not the area it bounds."""
        stroker = QPainterPathStroker()
        stroker.setWidth(max(10.0, self.width + 8))
        return stroker.createStroke(self.path())

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        """Selected: a glow along the edge's own path (not Qt's dashed bounding box)."""
        if self.isSelected():
            glow = QColor(SELECTION_COLOUR)
            glow.setAlpha(150)
            pen = QPen(glow, self.width + 8)
            pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.strokePath(self.path(), pen)
        plain = QStyleOptionGraphicsItem(option)
        plain.state &= ~QStyle.StateFlag.State_Selected
        super().paint(painter, plain, widget)

    def route(self, start: QPointF, end: QPointF, text: str, bends: list[QPointF] | None = None,
              flow: str = "LR") -> None:
        """Curves leave and enter along the flow; through `bends` the edge runs straight
        across a layer (between its nodes) and curves only between layers."""
        points = [start, *(bends or []), end]
        path = QPainterPath(start)
        for i, (a, b) in enumerate(itertools.pairwise(points)):
            if i % 2 and bends:  # across a layer's band, from entry to exit
                path.lineTo(b)
                continue
            if flow == "TB":
                d = QPointF(0, max(40.0, abs(b.y() - a.y()) / 2))
            else:
                d = QPointF(max(40.0, abs(b.x() - a.x()) / 2), 0)
            path.cubicTo(a + d, b - d, b)
        self.setPath(path)
        self.label.setText(text)
        self.label.setBrush(QColor("#c8ccd4") if is_dark() else QColor("#50555e"))
        rect = self.label.boundingRect()
        if flow == "TB":  # beside the edge, just below the node it leaves
            self.label.setPos(start.x() + 6, start.y() + 4)
        else:
            mid = (start + points[1]) / 2  # a symmetric curve's middle; no length sums
            self.label.setPos(mid.x() - rect.width() / 2, mid.y() - rect.height() - 2)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange,
                   value: object) -> object:
        if change == QGraphicsItem.GraphicsItemChange.ItemSelectedHasChanged:
            self._apply_pen()
        return super().itemChange(change, value)
