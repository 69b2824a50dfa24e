"""Editing fixes (issue 13, item 5): the palette's double-click splices a layer into an edge,
a selected edge glows along its own path, badges are drawn (never emoji), activations are
not the error red, the inspector fits its fields, and each committed value is one undo
step."""

import itertools

import pytest
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QSpinBox, QStyleOptionGraphicsItem

from layerlab.app import edit_ops
from layerlab.app.application import make_application
from layerlab.app.canvas.items import NODE_WIDTH, NodeItem
from layerlab.app.canvas.scene import GraphScene
from layerlab.app.document import Document
from layerlab.app.style import ERROR_COLOUR, GROUP_COLOURS, SELECTION_COLOUR
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.project import Project

# the blocks where system emoji and pictographic symbols live (⚠ U+26A0, 🔒 U+1F512, …)
EMOJI = [(0x2300, 0x23FF), (0x2600, 0x27BF), (0x2B00, 0x2BFF), (0xFE00, 0xFE0F),
         (0x1F000, 0x1FAFF)]


def palette_double_click(window, qtbot, type_name):
    # the docks as a new user has them (an earlier test's window may have saved others)
    window._default_layout()
    tree = window.palette_widget.tree
    qtbot.waitUntil(lambda: tree.viewport().width() > 150)
    item = window.palette_widget.items[type_name]
    tree.scrollToItem(item)
    rect = tree.visualItemRect(item)
    qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def overlaps(scene):
    """Pairs of nodes whose bodies overlap."""
    rects = {n: QRectF(item.pos(), QPointF(item.pos().x() + NODE_WIDTH,
                                           item.pos().y() + item.height))
             for n, item in scene.nodes.items()}
    return [(a, b) for a, b in itertools.combinations(rects, 2)
            if rects[a].intersects(rects[b])]


def test_double_click_splices_into_the_selected_nodes_edges_in_one_undo_step(window, qtbot):
    before = window.doc.project.to_json()
    steps = window.doc.undo_stack.count()
    window.scene.select_only(["fc2"])
    palette_double_click(window, qtbot, "Dropout")
    g = window.doc.graph
    assert g.has_edge("fc2", "dropout") and g.has_edge("dropout", "tanh2")
    assert not g.has_edge("fc2", "tanh2")
    assert window.doc.analysis.ok
    assert overlaps(window.scene) == []
    assert window.scene.selected_nodes() == ["dropout"]
    assert window.doc.undo_stack.count() == steps + 1
    after = window.doc.project.to_json()
    window.doc.undo_stack.undo()
    assert window.doc.project.to_json() == before
    window.doc.undo_stack.redo()
    assert window.doc.project.to_json() == after
    # after a branch: the new layer feeds every successor, on its port
    window.open_example("resnet-block")
    g = window.doc.graph
    port = g.edges["relu1", "add"]["port"]
    window.scene.select_only(["relu1"])
    palette_double_click(window, qtbot, "Dropout")
    assert list(g.successors("relu1")) == ["dropout"]
    assert set(g.successors("dropout")) == {"conv2", "add"}
    assert g.edges["dropout", "add"]["port"] == port
    assert window.doc.analysis.ok
    assert overlaps(window.scene) == []


# -- drawing -----------------------------------------------------------------------------
@pytest.fixture
def scene():
    make_application()
    project = Project()
    project.graph.add_node("a", type="Input", params={"shape": [4]}, pos=[0, 0])
    project.graph.add_node("b", type="Linear", params={"out_features": 3}, pos=[400, 300])
    project.graph.add_edge("a", "b")
    project.view["direction"] = "LR"
    return GraphScene(Document(project))


def render(scene, rect):
    image = QImage(int(rect.width()), int(rect.height()), QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    scene.render(painter, QRectF(image.rect()), rect)
    painter.end()
    return image


def test_a_selected_edge_glows_along_its_path_without_a_dashed_box(scene):
    for item in scene.nodes.values():
        item.setVisible(False)
    edge = scene.edges[("a", "b")]
    edge.label.setVisible(False)
    edge.setSelected(True)
    rect = edge.boundingRect()
    image = render(scene, rect)
    # the curve runs from the top-left to the bottom-right corner of its box: the other
    # corners and the middle of the top edge are far from it, so nothing is drawn there
    w, h = image.width(), image.height()
    for x, y in ((w - 3, 2), (2, h - 3), (w // 2, 1), (w - 2, h // 4)):
        assert QColor(image.pixel(x, y)) == QColor("white"), (x, y)
    mid = edge.path().pointAtPercent(0.5) - rect.topLeft()
    glow = QColor(image.pixel(int(mid.x()) + 4, int(mid.y())))  # beside the line
    assert glow.blue() > glow.red() + 40  # the selection colour, not grey or white
    assert SELECTION_COLOUR.blue() > SELECTION_COLOUR.red()


class TextRecorder(QPainter):
    """A painter that remembers every string drawn with it."""

    def __init__(self, image):
        super().__init__(image)
        self.texts = []

    def drawText(self, *args):
        self.texts.extend(a for a in args if isinstance(a, str))
        return super().drawText(*args)


def paint_node(item, scale=1.0):
    image = QImage(NODE_WIDTH + 40, item.height + 80, QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    painter = TextRecorder(image)
    painter.translate(20, 40)
    painter.scale(scale, scale)  # zoomed far out, a node draws as a compact block
    item.paint(painter, QStyleOptionGraphicsItem(), None)
    texts = painter.texts
    painter.end()
    return image, texts


def node_item(frozen=False, errors=(), verdict=""):
    make_application()
    item = NodeItem("fc1", lambda node: None)
    item.show("Linear", "dense", ["out_features=3"], "[3]", list(errors), frozen, 1, True)
    item.set_step_state(None, "|y| 0.5", verdict)
    return item


def test_badges_are_drawn_not_emoji():
    for item in (node_item(frozen=True, verdict="vanishing"),
                 node_item(errors=["fc1 needs exactly 1 input"], verdict="dead")):
        for scale in (1.0, 0.2):
            _, texts = paint_node(item, scale)
            assert texts, "the node draws its text"
            painted = "".join(texts) + item.toolTip()
            assert not [c for c in painted if any(lo <= ord(c) <= hi for lo, hi in EMOJI)]


def test_the_frozen_badge_is_visible():
    frozen, _ = paint_node(node_item(frozen=True))
    plain, _ = paint_node(node_item(frozen=False))
    badge = QRectF(20 + NODE_WIDTH - 19, 40 + 3, 14, 16)  # the header's right end
    changed = white = 0
    for x in range(int(badge.left()), int(badge.right())):
        for y in range(int(badge.top()), int(badge.bottom())):
            a, b = QColor(frozen.pixel(x, y)), QColor(plain.pixel(x, y))
            changed += a != b
            white += a.lightness() > 230 and b.lightness() < 200
    assert changed > 40 and white > 25  # a white padlock on the header's colour


def test_no_layer_colour_is_near_the_error_red():
    def hue_distance(a, b):
        d = abs(a.hsvHue() - b.hsvHue())
        return min(d, 360 - d)

    for group, colour in GROUP_COLOURS.items():
        c = QColor(colour)
        if c.hsvSaturation() > 60:  # grey (loss) has no hue to confuse
            assert hue_distance(c, ERROR_COLOUR) >= 30, group


# -- the inspector -----------------------------------------------------------------------
def test_the_inspector_fits_every_layer_at_its_default_width(window, qtbot):
    window._default_layout()
    qtbot.waitUntil(lambda: window.inspector_dock.width() <= 320)
    scroll = window.inspector.node_scroll
    for type_name in sorted(CATALOGUE):
        node = window.scene.add_layer(type_name, QPointF(0, 0))
        window.scene.select_only([node])
        qtbot.waitUntil(lambda n=node: window.inspector.node == n)
        assert window.inspector.node_page.minimumSizeHint().width() <= \
            scroll.viewport().width(), type_name
        assert not scroll.horizontalScrollBar().isVisible(), type_name
    edit_ops.group_selection(window.scene)  # and a group's page
    assert window.inspector.currentWidget() is window.inspector.group_page
    assert window.inspector.group_page.minimumSizeHint().width() <= scroll.viewport().width()


def test_each_committed_value_is_its_own_undo_step(window, qtbot):
    window.scene.select_only(["fc3"])
    spin = window.inspector.findChild(QSpinBox, "param_out_features")
    params = window.doc.graph.nodes["fc3"]["params"]
    start = params["out_features"]
    steps = window.doc.undo_stack.count()
    for k, value in enumerate(("5", "16", "7"), start=1):
        spin.setFocus()
        spin.selectAll()
        qtbot.keyClicks(spin, value)  # one field, typed key by key: one step
        qtbot.keyClick(spin, Qt.Key.Key_Return)
        assert window.doc.graph.nodes["fc3"]["params"]["out_features"] == int(value)
        assert window.doc.undo_stack.count() == steps + k
    window.view.setFocus()
    for expected in (16, 5, start):
        qtbot.keyClick(window.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
        assert window.doc.graph.nodes["fc3"]["params"]["out_features"] == expected
        assert spin.value() == expected
