"""The canvas at its opening view, at Fit, zoomed out and through the overview; Auto-Layout
(Ctrl+Shift+L) and the flow direction as single undo steps, driven through the window."""

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QFont, QFontInfo, QMouseEvent
from PySide6.QtWidgets import QApplication

from layerlab.app.canvas.items import NODE_WIDTH, OUTPUT_BELOW, TEXT_PX
from layerlab.app.commands import MoveNodes
from layerlab.app.style import group_colour
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.examples import example_names
from layerlab.core.layout import layered


@pytest.fixture
def big_window(window, qtbot):
    window.resize(1600, 1000)
    qtbot.wait(20)
    return window


def open_example(window, qtbot, name: str) -> None:
    window.open_example(name)
    qtbot.wait(30)  # the opening view is set once the window has laid itself out
    window.activateWindow()
    window.view.setFocus()


def smallest_node_text_px(window) -> float:
    """Pixels on screen of the smallest text a node draws: the font's own pixel size,
    through the view's transform."""
    font = QFont()
    font.setPixelSize(TEXT_PX)
    return QFontInfo(font).pixelSize() * window.view.transform().m11()


def visible(window):
    return window.view.mapToScene(window.view.viewport().rect()).boundingRect()


def off_centre_px(window, rect) -> tuple[float, float]:
    """How far `rect`'s centre is from the middle of the canvas, in screen pixels."""
    d = visible(window).center() - rect.center()
    scale = window.view.transform().m11()
    return abs(d.x()) * scale, abs(d.y()) * scale


def scrollbars(window) -> tuple[bool, bool]:
    view = window.view
    return view.horizontalScrollBar().isVisible(), view.verticalScrollBar().isVisible()


def test_every_example_opens_readable_and_centred_and_fits_without_scrollbars(big_window,
                                                                             qtbot):
    window = big_window
    for name in example_names():
        open_example(window, qtbot, name)
        assert smallest_node_text_px(window) >= 9, name
        first = window.scene.nodes[next(iter(window.doc.graph))]  # the input: the start
        assert visible(window).contains(first.sceneBoundingRect()), name
        graph = window.view.graph_bounds()  # nodes and edges (not hidden thumbnails)
        # centred across the flow (Qt centres a narrow scene as if the other axis had no
        # scrollbar: half a scrollbar's width off)
        assert off_centre_px(window, graph)[0] < 8, name
        qtbot.keyClick(window.view, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)
        qtbot.waitUntil(lambda: scrollbars(window) == (False, False), timeout=1000)
        assert visible(window).contains(graph), name
        assert max(off_centre_px(window, graph)) < 2, name
        assert not window.view.minimap.isVisible(), name  # all of it is on screen


def test_a_small_graph_opens_whole(big_window, qtbot):
    window = big_window
    open_example(window, qtbot, "mnist-mlp")
    window.doc.undo_stack.push(MoveNodes(window.doc, {  # fold the column into a square
        n: (list(window.doc.graph.nodes[n]["pos"]), [(i % 3) * 200, (i // 3) * 130])
        for i, n in enumerate(window.doc.graph)}))
    window.view.show_opening()
    assert smallest_node_text_px(window) >= 9
    assert visible(window).contains(window.view.graph_bounds())
    qtbot.waitUntil(lambda: scrollbars(window) == (False, False), timeout=1000)


def colour_at_node(window, node: str, x: float, y_from_bottom: float) -> tuple[int, int, int]:
    """The colour on screen at a point of the node (away from any text)."""
    item = window.scene.nodes[node]
    spot = window.view.mapFromScene(item.mapToScene(x, item.height - y_from_bottom))
    return window.view.viewport().grab().toImage().pixelColor(spot).getRgb()[:3]


def drag(qtbot, widget, start: QPoint, end: QPoint) -> None:
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=start)
    move = QMouseEvent(QEvent.Type.MouseMove, QPointF(end), QPointF(end),
                       Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, move)
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=end)


def test_zoomed_out_a_node_is_a_block_in_its_colour_and_the_overview_steers(big_window,
                                                                           qtbot):
    window = big_window
    open_example(window, qtbot, "resnet-block")
    assert colour_at_node(window, "conv1", NODE_WIDTH - 6, 4) == (255, 255, 255)  # a body
    for _ in range(3):  # node text would be under 7 px
        window.view.zoom_out()
    block = colour_at_node(window, "conv1", 14, 10)
    assert np.abs(np.subtract(block, group_colour(CATALOGUE["Conv2d"].group).getRgb()[:3])
                  ).sum() < 40
    window.view.show_opening()
    qtbot.waitUntil(window.view.minimap.isVisible)
    loss = window.scene.nodes["loss"]
    assert not visible(window).contains(loss.sceneBoundingRect())
    minimap = window.view.minimap
    qtbot.mouseClick(minimap.viewport(), Qt.MouseButton.LeftButton,
                     pos=minimap.mapFromScene(loss.sceneBoundingRect().center()))
    assert visible(window).contains(loss.sceneBoundingRect().center())
    start = minimap.mapFromScene(loss.sceneBoundingRect().center())
    top = minimap.mapFromScene(window.scene.nodes["input"].sceneBoundingRect().center())
    drag(qtbot, minimap.viewport(), start, top)
    assert visible(window).contains(window.scene.nodes["input"].sceneBoundingRect().center())


def test_ctrl_shift_l_lays_out_in_one_undo_step(window, qtbot):
    doc = window.doc
    before = doc.project.to_json()
    scrambled = {n: (list(doc.graph.nodes[n]["pos"]), [37 * i, -50 * i])
                 for i, n in enumerate(doc.graph)}
    doc.undo_stack.push(MoveNodes(doc, scrambled))
    messy, index = doc.project.to_json(), doc.undo_stack.index()
    window.activateWindow()
    window.view.setFocus()
    qtbot.keyClick(window.view, Qt.Key.Key_L,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert doc.undo_stack.index() == index + 1
    expected = layered(doc.graph, "TB").positions
    assert {n: doc.graph.nodes[n]["pos"] for n in doc.graph} == {
        n: [round(x), round(y)] for n, (x, y) in expected.items()}
    assert window.scene.nodes["loss"].pos().y() > window.scene.nodes["input"].pos().y()
    doc.undo_stack.undo()
    assert doc.project.to_json() == messy
    doc.undo_stack.undo()
    assert doc.project.to_json() == before


def test_flowing_left_to_right_is_one_step_saved_with_the_project(window, qtbot, tmp_path):
    doc = window.doc
    before = doc.project.to_json()
    flow = window.actions["actionLeftToRight"]
    assert not flow.isChecked()
    flow.trigger()
    assert doc.project.direction == "LR" and flow.isChecked()
    assert window.scene.nodes["loss"].pos().x() > window.scene.nodes["input"].pos().x()
    fc1 = window.scene.nodes["fc1"]
    assert fc1.output_pos() == fc1.scenePos() + fc1.output.pos()  # the port on the right
    assert fc1.output.pos().x() == NODE_WIDTH
    path = tmp_path / "lr.layerlab.json"
    assert window._write(path)
    assert '"view": {"direction": "LR"}' in path.read_text()
    doc.undo_stack.undo()
    assert doc.project.to_json() == before and not flow.isChecked()
    assert fc1.output.pos().y() == fc1.height + OUTPUT_BELOW  # back below the node
