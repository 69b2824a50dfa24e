"""Groups on the canvas (core/groups.py): a collapsed group is one block with its outer ports,
standing in for its hidden members; an expanded group is a titled frame behind them.
Double-click toggles. The layer follows the document after the scene has drawn the nodes,
and only re-routes the edges that cross a collapsed group."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsSceneMouseEvent,
    QStyle,
    QStyleOptionGraphicsItem,
    QWidget,
)
from shiboken6 import isValid

from layerlab.app.canvas.items import (
    COMPACT_BELOW_PX,
    LINE,
    NODE_WIDTH,
    PORT_RADIUS,
    TEXT_PX,
    paint_header,
)
from layerlab.app.commands import EditGroups
from layerlab.app.style import ERROR_COLOUR, GROUP_BLOCK_COLOUR, draw_error_badge, is_dark
from layerlab.core import groups as core_groups
from layerlab.core.errors import format_error
from layerlab.core.ports import drawn_port
from layerlab.core.spec import fmt_output

if TYPE_CHECKING:
    from layerlab.app.canvas.scene import GraphScene

FRAME_MARGIN = 14
FRAME_HEADER = 22


class GroupBlock(QGraphicsItem):
    """A collapsed group: its name, what it holds, and one port per edge in and per member
    whose output leaves it."""

    def __init__(self, layer: GroupLayer, group: str) -> None:
        super().__init__()
        self.layer, self.group = layer, group
        self.name, self.summary, self.outputs_text = "", "", ""
        self.n_in, self.n_out, self.flow = 0, 0, "LR"
        self.height = 3 * LINE + 10
        self.highlight: QColor | None = None
        self.caption = ""  # step-through: the current member's value, above the block
        self.errors: list[str] = []  # its members' problems: hidden, so the block shows them
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable
                      | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setZValue(1)

    def show(self, name: str, summary: str, outputs_text: str, ports: tuple[int, int],
             flow: str, errors: list[str]) -> None:
        self.prepareGeometryChange()
        self.name, self.summary, self.outputs_text = name, summary, outputs_text
        (self.n_in, self.n_out), self.flow, self.errors = ports, flow, errors
        self.height = 4 * LINE + 10
        tip = [f"{name} (group): {summary}", *(f"problem: {e}" for e in errors),
               "Double-click to expand"]
        self.setToolTip("\n".join(tip))
        self.update()

    def _port(self, index: int, count: int, output: bool) -> QPointF:
        along = (index + 1) / (count + 1)
        if self.flow == "TB":
            return QPointF(NODE_WIDTH * along, self.height if output else 0)
        return QPointF(NODE_WIDTH if output else 0, self.height * along)

    def input_pos(self, index: int) -> QPointF:
        return self.scenePos() + self._port(index, self.n_in, False)

    def output_pos(self, index: int) -> QPointF:
        return self.scenePos() + self._port(index, self.n_out, True)

    def boundingRect(self) -> QRectF:
        """The block, its ports, and the step-through's value label above it."""
        r = PORT_RADIUS + 2
        return QRectF(-r, -LINE - 4, NODE_WIDTH + 2 * r, self.height + LINE + 4 + r)

    def shape(self) -> QPainterPath:
        path = QPainterPath()  # clicks and rubber bands select the block only
        path.addRect(QRectF(0, 0, NODE_WIDTH, self.height))
        return path

    def set_highlight(self, colour: QColor | None, caption: str = "") -> None:
        if (colour, caption) != (self.highlight, self.caption):
            self.highlight, self.caption = colour, caption
            self.update()

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        lod = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        if lod * TEXT_PX < COMPACT_BELOW_PX:  # zoomed out, like the nodes: the name, large
            self._paint_compact(painter, selected)
            return
        dark = is_dark()
        body = self.highlight or (QColor("#2b2d31") if dark else QColor("#ffffff"))
        colour = ERROR_COLOUR if self.errors else GROUP_BLOCK_COLOUR
        border = colour.lighter(130) if selected and dark else \
            colour.darker(130) if selected else colour
        rect = QRectF(0, 0, NODE_WIDTH, self.height)
        painter.setPen(QPen(border, 3.0 if selected else 1.6))
        painter.setBrush(body)
        painter.drawRoundedRect(rect, 7, 7)
        # a second outline, offset: a stack of layers
        painter.setPen(QPen(border, 1.2))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(rect.adjusted(3, 3, 3, 3), 7, 7)
        bold = paint_header(painter, border, self.name)
        if self.errors:
            draw_error_badge(painter, QRectF(NODE_WIDTH - 18, 3, 15, 15))
        if self.caption:  # above the block, as a node shows its own
            bold.setPixelSize(11)
            painter.setFont(bold)
            painter.setPen(QColor("#eeeeee") if dark else QColor("#1e1e1e"))
            painter.drawText(QRectF(0, -LINE - 2, NODE_WIDTH, LINE),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             self.caption)
        plain = QFont()
        plain.setPixelSize(11)
        painter.setFont(plain)
        painter.setPen(QColor("#1e1e1e") if self.highlight or not dark else QColor("#eeeeee"))
        count, _, types = self.summary.partition(": ")
        metrics = QFontMetricsF(plain)
        y = LINE + 8
        for line in (count, types, self.outputs_text):  # one line each, cut short with …
            painter.drawText(QRectF(8, y, NODE_WIDTH - 16, LINE), Qt.AlignmentFlag.AlignVCenter,
                             metrics.elidedText(line, Qt.TextElideMode.ElideRight,
                                                NODE_WIDTH - 16))
            y += LINE
        painter.setPen(QPen(QColor("#555555"), 1.5))
        painter.setBrush(QColor("#f5f5f5"))
        for count, output in ((self.n_in, False), (self.n_out, True)):
            for k in range(count):
                painter.drawEllipse(self._port(k, count, output), PORT_RADIUS, PORT_RADIUS)

    def _paint_compact(self, painter: QPainter, selected: bool) -> None:
        colour = self.highlight or (ERROR_COLOUR if self.errors else GROUP_BLOCK_COLOUR)
        rect = QRectF(0, 0, NODE_WIDTH, self.height)
        painter.setPen(QPen(colour.darker(150), 6.0 if selected else 2.0))
        painter.setBrush(colour)
        painter.drawRoundedRect(rect.adjusted(4, 4, 4, 4), 7, 7)  # a stack of layers
        painter.drawRoundedRect(rect, 7, 7)
        font = QFont()
        font.setBold(True)
        font.setPixelSize(30)
        width = QFontMetricsF(font).horizontalAdvance(self.name) or 1.0
        font.setPixelSize(max(12, min(30, int(30 * (NODE_WIDTH - 12) / width))))
        painter.setFont(font)
        painter.setPen(QColor("#1e1e1e") if self.highlight else QColor("white"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, self.name)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: object) -> object:
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            self.layer.route_group(self.group)
        return super().itemChange(change, value)

    def mouseDoubleClickEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        self.layer.toggle_soon(self.group)
        event.accept()


class GroupFrame(QGraphicsItem):
    """An expanded group: a tinted frame behind its members, its name in a header strip.
    Only the strip takes the mouse, so a rubber band can still start inside the frame."""

    def __init__(self, layer: GroupLayer, group: str) -> None:
        super().__init__()
        self.layer, self.group = layer, group
        self.rect, self.name = QRectF(), ""
        self.setZValue(-1)
        self.setToolTip("Double-click the title to collapse the group")

    def show(self, rect: QRectF, name: str) -> None:
        self.prepareGeometryChange()
        self.rect = rect.adjusted(-FRAME_MARGIN, -FRAME_MARGIN - FRAME_HEADER,
                                  FRAME_MARGIN, FRAME_MARGIN)
        self.name = name
        self.update()

    def header(self) -> QRectF:
        return QRectF(self.rect.topLeft(), QPointF(self.rect.right(),
                                                   self.rect.top() + FRAME_HEADER))

    def boundingRect(self) -> QRectF:
        return self.rect.adjusted(-2, -2, 2, 2)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRect(self.header())
        return path

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fill = QColor(GROUP_BLOCK_COLOUR)
        fill.setAlpha(28)
        painter.setPen(QPen(GROUP_BLOCK_COLOUR, 1.4, Qt.PenStyle.DashLine))
        painter.setBrush(fill)
        painter.drawRoundedRect(self.rect, 10, 10)
        bold = QFont()
        bold.setBold(True)
        bold.setPixelSize(12)
        painter.setFont(bold)
        painter.setPen(GROUP_BLOCK_COLOUR.lighter(140) if is_dark() else
                       GROUP_BLOCK_COLOUR.darker(120))
        painter.drawText(self.header().adjusted(10, 0, -10, 0),
                         Qt.AlignmentFlag.AlignVCenter, self.name)

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        event.accept()  # Qt sends a double-click only to the item that took the press

    def mouseDoubleClickEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        self.layer.toggle_soon(self.group)
        event.accept()


class GroupLayer:
    """The scene's groups: blocks, frames, which items they hide, which edges they re-route."""

    def __init__(self, scene: GraphScene) -> None:
        self.scene = scene
        self.blocks: dict[str, GroupBlock] = {}
        self.frames: dict[str, GroupFrame] = {}
        self.hidden: set[str] = set()  # members of collapsed groups, their items hidden
        self.anchors: dict[str, QPointF] = {}  # where each block stands for its members
        self.rerouted: set[tuple[str, str]] = set()  # edges drawn to a block's ports
        doc = scene.doc
        doc.analysisChanged.connect(self.sync)
        doc.reset.connect(self.sync)
        doc.nodeMoved.connect(self._moved)
        doc.edgeChanged.connect(self._edge_changed)
        doc.directionChanged.connect(self.sync)
        self.sync()

    # -- following the document ----------------------------------------------------
    def _groups(self) -> dict[str, list[str]]:
        known = self.scene.doc.project.groups
        return {g: nodes for g, nodes in core_groups.membership(self.scene.doc.graph).items()
                if g in known and all(n in self.scene.nodes for n in nodes)}

    def sync(self) -> None:
        groups = self._groups()
        if not (groups or self.hidden or self.blocks or self.frames or self.rerouted):
            return  # no groups, none before: nothing to do on this edit
        known = self.scene.doc.project.groups
        collapsed = {g for g in groups if known[g].get("collapsed")}
        hidden = {n for g in collapsed for n in groups[g]}
        for node in self.hidden - hidden:
            if node in self.scene.nodes:
                self.scene.nodes[node].setVisible(True)
        for node in hidden:
            self.scene.nodes[node].setVisible(False)
        self.hidden = hidden
        for store, wanted in ((self.blocks, collapsed), (self.frames, set(groups) - collapsed)):
            for group in set(store) - wanted:
                self.scene.removeItem(store.pop(group))
        for group in collapsed:
            self._show_block(group, groups[group])
        for group in set(groups) - collapsed:
            self._show_frame(group, groups[group])
        for (source, target), edge in self.scene.edges.items():
            inside = source in hidden and target in hidden and \
                self.group_of(source) == self.group_of(target)
            edge.setVisible(not inside)
        crossing = self.rerouted
        self.rerouted = set()
        for group in collapsed:
            self.route_group(group)
        for source, target in crossing - self.rerouted:  # back to their nodes' own ports
            if (source, target) in self.scene.edges:
                self.scene._route(source, target)

    def _show_block(self, group: str, nodes: list[str]) -> None:
        doc = self.scene.doc
        block = self.blocks.get(group)
        if block is None:
            block = self.blocks[group] = GroupBlock(self, group)
            self.scene.addItem(block)
        entering, leaving = core_groups.boundary(doc.graph, nodes)
        types = [doc.graph.nodes[n].get("type", "?") for n in nodes]
        summary = f"{len(nodes)} layer{'s' * (len(nodes) != 1)}: {', '.join(types)}"
        outputs = " · ".join(doc.analysis.shown(n) for n in leaving)
        errors = [format_error(n, m) for n, m in doc.analysis.errors if n in nodes]
        block.show(doc.project.groups[group].get("name", group), summary, outputs,
                   (len(entering), len(leaving)), self.scene.nodes[nodes[0]].flow, errors)
        xs = [doc.graph.nodes[n].get("pos", [0, 0]) for n in nodes]
        anchor = QPointF(min(p[0] for p in xs), min(p[1] for p in xs))
        self.anchors[group] = anchor
        if block.pos() != anchor:
            block.setPos(anchor)

    def _show_frame(self, group: str, nodes: list[str]) -> None:
        frame = self.frames.get(group)
        if frame is None:
            frame = self.frames[group] = GroupFrame(self, group)
            self.scene.addItem(frame)
        rect = QRectF()
        for node in nodes:
            item = self.scene.nodes[node]
            rect = rect.united(item.mapRectToScene(QRectF(0, 0, NODE_WIDTH, item.height)))
        frame.show(rect, self.scene.doc.project.groups[group].get("name", group))

    def _moved(self, node: str) -> None:
        group = self.group_of(node)
        if group in self.blocks:
            self._show_block(group, core_groups.members(self.scene.doc.graph, group))
            self.route_group(group)
        elif group in self.frames:
            self._show_frame(group, core_groups.members(self.scene.doc.graph, group))

    def _edge_changed(self, source: str, target: str) -> None:
        for node in (source, target):
            self.route_group(self.group_of(node) or "")

    def route_group(self, group: str) -> None:
        """Edges that cross a collapsed group end at its block's outer ports."""
        if group not in self.blocks:
            return
        doc = self.scene.doc
        inside = set(core_groups.members(doc.graph, group))
        for (source, target), edge in self.scene.edges.items():
            if (source in inside) != (target in inside):
                self.rerouted.add((source, target))
                edge.route(self._end(source, (source, target), out=True),
                           self._end(target, (source, target), out=False),
                           fmt_output(doc.analysis.out_shape(source, drawn_port(
                               doc.graph.edges[source, target]))),
                           flow=self.blocks[group].flow)

    def _end(self, node: str, edge: tuple[str, str], out: bool) -> QPointF:
        """Where `edge` meets `node`: the node's own port, or its block's when it is hidden."""
        g, group = self.scene.doc.graph, self.group_of(node)
        if node in self.hidden and group in self.blocks:
            entering, leaving = core_groups.boundary(g, core_groups.members(g, group))
            block = self.blocks[group]
            return block.output_pos(leaving.index(node)) if out else \
                block.input_pos(entering.index(edge))
        item = self.scene.nodes[node]
        if out:
            return item.output_pos(drawn_port(g.edges[edge]))
        port = g.edges[edge].get("port", 0)
        return item.input_pos(port if isinstance(port, int) and not isinstance(port, bool)
                              else 0)

    # -- questions the scene and the stepper ask -------------------------------------
    def group_of(self, node: str) -> str | None:
        return core_groups.group_of(self.scene.doc.graph, node) \
            if node in self.scene.doc.graph else None

    def selected_members(self) -> set[str]:
        """The members of the selected blocks (a selected block means its nodes)."""
        g = self.scene.doc.graph
        return {n for group, block in self.blocks.items() if isValid(block) and block.isSelected()
                for n in core_groups.members(g, group)}

    def group_of_selection(self, nodes: list[str]) -> str | None:
        """The group whose nodes are exactly `nodes` (a selected block, or all the members
        of an expanded group), if any."""
        groups = [self.group_of(n) for n in nodes]
        group = groups[0] if groups else None
        if group is None or any(g != group for g in groups):
            return None
        members = core_groups.members(self.scene.doc.graph, group)
        return group if set(members) == set(nodes) else None

    def member_moves(self) -> dict[str, tuple[list[float], list[float]]]:
        """A dragged block moves its members by as much as it moved."""
        g, moves = self.scene.doc.graph, {}
        for group, block in self.blocks.items():
            delta = block.pos() - self.anchors.get(group, block.pos())
            if delta.isNull():
                continue
            for node in core_groups.members(g, group):
                old = list(g.nodes[node].get("pos", [0, 0]))
                moves[node] = (old, [round(old[0] + delta.x()), round(old[1] + delta.y())])
        return moves

    def select_blocks(self, nodes: list[str]) -> None:
        """Select the blocks standing for any of `nodes` (hidden items cannot be selected)."""
        for group, block in self.blocks.items():
            if any(self.group_of(n) == group for n in nodes):
                block.setSelected(True)

    def light(self, node: str | None, colour: QColor | None, caption: str = "") -> None:
        """Step-through: the block whose member is the current node lights up as one,
        with that member's value label."""
        current = self.group_of(node) if node is not None else None
        for group, block in self.blocks.items():
            lit = group == current
            block.set_highlight(colour if lit else None, caption if lit else "")

    def toggle_soon(self, group: str) -> None:
        """Toggle once the mouse event is over: toggling removes the item it went to."""
        QTimer.singleShot(0, lambda: self.toggle(group) if group in self.scene.doc.project
                          .groups else None)

    def toggle(self, group: str) -> None:
        """Collapse an expanded group, expand a collapsed one: one undo step, saved."""
        doc = self.scene.doc
        data = dict(doc.project.groups[group])
        data["collapsed"] = not data.get("collapsed")
        verb = "Collapse" if data["collapsed"] else "Expand"
        doc.undo_stack.push(EditGroups(doc, {}, {group: data},
                                       f"{verb} {data.get('name', group)}"))
