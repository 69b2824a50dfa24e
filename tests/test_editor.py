"""The editor window, driven through its real widgets: palette drops, port drags, keys,
the inspector, undo/redo, files and crash recovery."""

import json

import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QMouseEvent
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QDockWidget,
    QLineEdit,
    QMessageBox,
    QSpinBox,
)

import layerlab
from layerlab.app.canvas.view import LAYER_MIME
from layerlab.app.main_window import MainWindow, recovery_path
from layerlab.core.examples import example_names

from conftest import EXAMPLES


def view_point(win, scene_pos):
    return win.view.mapFromScene(scene_pos)


def drop_layer(win, type_name, scene_pos):
    """A drop from the palette, as Qt delivers it (without QDrag's own event loop)."""
    mime = win.palette_widget.tree.mimeData([win.palette_widget.items[type_name]])
    point = view_point(win, scene_pos)
    viewport = win.view.viewport()
    actions = Qt.DropAction.CopyAction
    for cls in (QDragEnterEvent, QDragMoveEvent):
        QApplication.sendEvent(viewport, cls(point, actions, mime, Qt.MouseButton.LeftButton,
                                             Qt.KeyboardModifier.NoModifier))
    drop = QDropEvent(QPointF(point), actions, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewport, drop)
    return drop


def drag(qtbot, win, start, end):
    """Press at `start`, move with the button held, release at `end` (scene points)."""
    viewport = win.view.viewport()
    a, b = view_point(win, start), view_point(win, end)
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=a)
    for t in (0.3, 0.7, 1.0):
        p = QPointF(a + (b - a) * t)
        QApplication.sendEvent(viewport, QMouseEvent(
            QEvent.Type.MouseMove, p, viewport.mapToGlobal(p), Qt.MouseButton.NoButton,
            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=b)


def test_the_palette_drags_a_layer_type(window):
    mime = window.palette_widget.tree.mimeData([window.palette_widget.items["Conv2d"]])
    assert bytes(mime.data(LAYER_MIME).data()).decode() == "Conv2d"
    item = window.palette_widget.items["Sigmoid"]
    assert item.toolTip(0).startswith("Sigmoid: f(x) = 1 / (1 + e^-x)")


def test_dropping_a_palette_item_adds_a_node_where_it_is_dropped(window):
    before = set(window.doc.graph)
    drop = drop_layer(window, "ReLU", QPointF(300, 400))
    assert drop.isAccepted()
    (new,) = set(window.doc.graph) - before
    assert window.doc.graph.nodes[new]["type"] == "ReLU"
    x, y = window.doc.graph.nodes[new]["pos"]
    where = window.view.mapToScene(view_point(window, QPointF(300, 400)))  # pixel-rounded
    assert abs(x - where.x()) <= 1 and abs(y - where.y()) <= 1
    assert window.scene.nodes[new].isSelected()
    assert window.actions["actionUndo"].text() == "&Undo Add ReLU"


def test_search_filters_the_palette(window, qtbot):
    qtbot.keyClicks(window.palette_widget.search, "norm")
    visible = {t for t, item in window.palette_widget.items.items() if not item.isHidden()}
    assert {"BatchNorm1d", "BatchNorm2d", "LayerNorm"} <= visible  # names and descriptions
    assert "Conv2d" not in visible and "ReLU" not in visible


def test_port_drag_connects_and_the_edge_shows_the_shape(window, qtbot):
    scene = window.scene
    node = scene.add_layer("ReLU", QPointF(0, 300))
    source = scene.nodes["fc1"]
    start = source.output.scenePos()
    end = scene.nodes[node].inputs[0].scenePos()
    drag(qtbot, window, start, end)
    assert window.doc.graph.has_edge("fc1", node)
    assert scene.edges[("fc1", node)].label.text() == "[16]"
    assert window.doc.analysis.shapes[node] == (16,)


def test_a_cycle_is_refused_with_a_message(window, qtbot):
    scene = window.scene
    drag(qtbot, window, scene.nodes["fc3"].output.scenePos(),
         scene.nodes["fc1"].inputs[0].scenePos())
    assert not window.doc.graph.has_edge("fc3", "fc1")
    assert "cycle" in window.statusBar().currentMessage()


def test_delete_key_removes_and_undo_restores_exactly(window, qtbot):
    before = window.doc.project.to_json()
    window.scene.select_only(["tanh1"])
    window.activateWindow()
    window.view.setFocus()
    qtbot.keyClick(window.view, Qt.Key.Key_Delete)
    assert "tanh1" not in window.doc.graph
    assert not window.doc.graph.has_edge("fc1", "tanh1")
    assert window.valid_label.text().startswith("✗")
    qtbot.keyClick(window.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.doc.project.to_json() == before
    assert "tanh1" in window.scene.nodes and ("fc1", "tanh1") in window.scene.edges


def test_moving_a_node_is_one_undoable_command(window, qtbot):
    window.view.resetTransform()  # one scene unit per pixel
    item = window.scene.nodes["fc2"]
    window.scene.select_only(["fc2"])
    old = list(window.doc.graph.nodes["fc2"]["pos"])
    start = item.scenePos() + QPointF(60, 10)
    drag(qtbot, window, start, start + QPointF(0, 150))
    new = window.doc.graph.nodes["fc2"]["pos"]
    assert new[1] == pytest.approx(old[1] + 150, abs=2)
    window.doc.undo_stack.undo()
    assert window.doc.graph.nodes["fc2"]["pos"] == old
    assert item.pos() == QPointF(*old)


def test_inspector_edits_update_shapes_and_errors_come_and_go(window, qtbot):
    window.open_example("resnet-block")
    window.scene.select_only(["conv1"])
    spin = window.inspector.findChild(QSpinBox, "param_out_channels")
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, "8")
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    assert window.doc.analysis.shapes["conv1"] == (8, 8, 8)
    assert window.doc.analysis.shapes["bn1"] == (8, 8, 8)
    assert window.doc.analysis.errors_of("add")  # [8, …] + [16, …] no longer match
    assert window.scene.nodes["add"].errors
    assert window.actions["actionUndo"].text() == "&Undo Change out_channels"
    window.scene.select_only(["input"])
    edit = window.inspector.findChild(QLineEdit, "param_shape")
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, "64")
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert any("expects a [C, H, W] input" in m for m in window.doc.analysis.errors_of("conv1"))
    window.doc.undo_stack.undo()
    window.doc.undo_stack.undo()
    assert window.doc.analysis.ok and not window.scene.nodes["add"].errors


def test_renaming_in_the_inspector_validates_the_id(window, qtbot):
    window.scene.select_only(["fc1"])
    edit = window.inspector.findChild(QLineEdit, "nodeId")
    for bad in ("2fast", "fc2", "forward"):
        edit.setText(bad)
        edit.editingFinished.emit()
        assert "fc1" in window.doc.graph and window.inspector.id_error.text()
    edit.setText("hidden")
    edit.editingFinished.emit()
    assert "hidden" in window.doc.graph and window.doc.graph.has_edge("input", "hidden")
    assert window.doc.analysis.ok


def test_copy_paste_renames_ids(window, qtbot):
    window.scene.select_only(["fc1", "tanh1"])
    window.actions["actionCopy"].trigger()
    window.actions["actionPaste"].trigger()
    assert {"fc1_2", "tanh1_2"} <= set(window.doc.graph)
    assert window.doc.graph.has_edge("fc1_2", "tanh1_2")
    window.actions["actionDuplicate"].trigger()
    assert {"fc1_3", "tanh1_3"} <= set(window.doc.graph)


def test_auto_layout_orders_by_generation_and_undoes(window):
    before = window.doc.project.to_json()
    window.actions["actionAutoLayout"].trigger()
    ys = [window.doc.graph.nodes[n]["pos"][1] for n in ("input", "fc1", "tanh1", "loss")]
    assert ys == sorted(ys) and len(set(ys)) == 4  # top to bottom
    window.doc.undo_stack.undo()
    assert window.doc.project.to_json() == before


def test_save_close_reopen_gives_the_same_graph_and_layout(window, tmp_path, qtbot):
    window.scene.add_layer("Dropout", QPointF(10, 200), after="tanh2")
    path = tmp_path / "mine.layerlab.json"
    assert window._write(path)
    assert not window.isWindowModified()
    saved = json.loads(path.read_text())
    other = MainWindow(offer_recovery=False)
    qtbot.addWidget(other)
    assert other.open_path(path, confirmed=True)
    assert json.loads(other.doc.project.to_json()) == saved
    assert other.scene.nodes["dropout"].pos() == QPointF(10, 200)
    assert str(path) in other.recent_files()


def test_a_corrupt_file_changes_nothing_and_says_why(window, tmp_path):
    before = window.doc.project.to_json()
    shown = []
    window.show_error = lambda title, text: shown.append(text)
    bad = tmp_path / "bad.layerlab.json"
    bad.write_text('{"format": "layerlab-project", "version": 1, "graph": {"nodes": [{"id": '
                   '"a"}, {"id": "a"}]}}')
    assert not window.open_path(bad, confirmed=True)
    assert window.doc.project.to_json() == before
    assert "duplicate id 'a'" in shown[0]
    (tmp_path / "junk.json").write_bytes(b"\x00\xff")
    assert not window.open_path(tmp_path / "junk.json", confirmed=True)
    assert "not a text file" in shown[1]


def test_unsaved_changes_are_asked_about(window):
    del window.confirm_discard  # the real question again
    window.scene.add_layer("ReLU", QPointF(0, 0))
    asked = []
    window.ask_save_changes = lambda: asked.append(1) or QMessageBox.StandardButton.Cancel
    window.open_example("lenet5")
    assert asked and "conv1" not in window.doc.graph  # cancelled: nothing changed
    window.ask_save_changes = lambda: QMessageBox.StandardButton.Discard
    window.open_example("lenet5")
    assert "conv1" in window.doc.graph


def test_recovery_is_offered_after_a_crash(window, qtbot):
    window.scene.add_layer("Sigmoid", QPointF(0, 0))
    window.write_recovery()  # the autosave timer's work; then the process "dies"
    expected = json.loads(window.doc.project.to_json())
    survivor = MainWindow(offer_recovery=False)
    qtbot.addWidget(survivor)
    survivor.ask_recover = lambda name: True
    survivor.offer_recovery()
    assert json.loads(survivor.doc.project.to_json()) == expected
    assert survivor.isWindowModified()
    assert not recovery_path().exists()
    survivor.doc.undo_stack.setClean()


@pytest.mark.parametrize("name", example_names())
def test_every_example_opens_and_renders(window, name):
    window.open_example(name)
    project = layerlab.load_project(EXAMPLES / f"{name}.layerlab.json")
    assert set(window.scene.nodes) == set(project.graph)
    assert window.doc.analysis.ok
    image = window.grab().toImage()
    assert image.width() > 0 and not image.isNull()


def test_every_action_dock_and_field_has_a_name(window):
    def menu_actions(actions):
        for action in actions:
            yield action
            if action.menu():
                yield from menu_actions(action.menu().actions())

    for action in [*menu_actions(window.menuBar().actions()), *window.actions.values()]:
        if action.text() and not action.isSeparator():
            assert action.objectName(), action.text()
    for kind in (QDockWidget, QAbstractButton, QLineEdit, QSpinBox):
        for widget in window.findChildren(kind):
            if widget.isVisibleTo(window) and not widget.objectName().startswith("qt_"):
                assert widget.objectName(), (kind.__name__, widget)
                assert widget.accessibleName() or isinstance(widget, QAbstractButton), widget
    assert window.view.objectName() == "canvas" and window.view.accessibleName()


def test_zoom_and_fit(window, qtbot):
    scale = window.view.transform().m11()
    window.actions["actionZoomIn"].trigger()
    assert window.view.transform().m11() > scale
    window.actions["actionZoomOut"].trigger()
    window.actions["actionFit"].trigger()
    rect = window.view.mapToScene(window.view.viewport().rect()).boundingRect()
    assert rect.contains(window.scene.itemsBoundingRect().center())


def test_title_shows_the_file_and_the_asterisk(window, tmp_path):
    assert window.windowTitle().startswith("Spiral (Tanh MLP) — untitled")
    window.scene.add_layer("ReLU", QPointF(0, 0))
    assert window.isWindowModified()
    window._write(tmp_path / "t.layerlab.json")
    assert "t.layerlab.json" in window.windowTitle() and not window.isWindowModified()


def test_double_click_in_the_palette_adds_after_the_selected_node(window, qtbot):
    window.scene.select_only(["tanh2"])
    tree = window.palette_widget.tree
    item = window.palette_widget.items["Dropout"]
    tree.scrollToItem(item)
    rect = tree.visualItemRect(item)
    qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.doc.graph.has_edge("tanh2", "dropout")
    assert window.scene.selected_nodes() == ["dropout"]
    assert window.doc.graph.has_edge("dropout", "fc3")  # spliced in (tests/test_editing.py)
    assert not window.doc.graph.has_edge("tanh2", "fc3")


def test_wheel_zooms_and_middle_drag_pans(window, qtbot):
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QWheelEvent

    view = window.view
    scale = view.transform().m11()
    center = QPointF(view.viewport().rect().center())
    wheel = QWheelEvent(center, view.viewport().mapToGlobal(center), QPoint(0, 0),
                        QPoint(0, 120), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), wheel)
    assert view.transform().m11() > scale
    view.zoom(4.0)  # zoomed in far enough to scroll
    bar = view.horizontalScrollBar()
    before = bar.value()
    viewport = view.viewport()
    start = view.viewport().rect().center()
    qtbot.mousePress(viewport, Qt.MouseButton.MiddleButton, pos=start)
    end = QPointF(start.x() - 120, start.y())
    QApplication.sendEvent(viewport, QMouseEvent(
        QEvent.Type.MouseMove, end, viewport.mapToGlobal(end), Qt.MouseButton.NoButton,
        Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier))
    qtbot.mouseRelease(viewport, Qt.MouseButton.MiddleButton, pos=end.toPoint())
    assert bar.value() == before + 120


def test_the_initialiser_choice_shows_each_formula(window):
    from PySide6.QtWidgets import QComboBox

    window.scene.select_only(["fc1"])
    combo = window.inspector.findChild(QComboBox, "param_init")
    tips = {combo.itemText(i): combo.itemData(i, Qt.ItemDataRole.ToolTipRole)
            for i in range(combo.count())}
    assert tips["xavier_uniform"] == "W ~ U(-a, a), a = √(6 / (fan_in + fan_out))"
    assert tips["kaiming_normal"] == "W ~ N(0, σ²), σ = √(2 / fan_in)"
