"""Groups (issue 13, item 3): a view concept saved in the file (version 2), never in the
compiled model; undoable, copyable, collapsed and expanded by double-click, and lit as one
block by the step-through."""

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtCore import QPointF, Qt

import layerlab
from layerlab.app import edit_ops
from layerlab.app.application import make_application
from layerlab.app.canvas.scene import GraphScene
from layerlab.app.commands import RemoveItems, SetAttribute
from layerlab.app.document import Document
from layerlab.core import groups as core_groups
from layerlab.core.compiler import build_model
from layerlab.core.errors import GraphError
from layerlab.core.project import Project
from test_editor import drag

from conftest import EXAMPLES


def load_example(name):
    return layerlab.load_project(EXAMPLES / f"{name}.layerlab.json")


def grouped(project, assignment, collapsed=True):
    """`project` with node → group id assignments (group data made up for each id)."""
    for node, group in assignment.items():
        project.graph.nodes[node][core_groups.KEY] = group
        project.groups.setdefault(group, core_groups.new_group(f"Block {group}", collapsed))
    return project


def test_groups_round_trip_through_the_file_and_leave_the_model_unchanged(tmp_path):
    plain = load_example("resnet-block")
    torch.manual_seed(0)
    model = build_model(plain.graph)
    project = grouped(load_example("resnet-block"),
                      {"conv1": "g1", "bn1": "g1", "relu1": "g1", "conv2": "g2"})
    path = tmp_path / "grouped.layerlab.json"
    project.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == 3
    assert data["view"]["groups"] == [
        {"id": "g1", "name": "Block g1", "collapsed": True},
        {"id": "g2", "name": "Block g2", "collapsed": True}]
    again = layerlab.load_project(path)
    assert again.to_json() == path.read_text(encoding="utf-8")
    assert core_groups.members(again.graph, "g1") == ["conv1", "bn1", "relu1"]
    twin = build_model(again.graph)
    assert twin.code == model.code
    twin.load_state_dict(model.state_dict())
    model.eval(), twin.eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([None, "a", "b", "c"]), min_size=15, max_size=15),
       st.booleans())
def test_any_grouping_round_trips_and_compiles_to_the_same_code(choice, collapsed):
    plain = load_example("resnet-block")
    nodes = list(plain.graph)
    project = grouped(load_example("resnet-block"),
                      {n: g for n, g in zip(nodes, choice, strict=False) if g}, collapsed)
    text = project.to_json()
    again = Project.from_dict(json.loads(text))
    assert again.to_json() == text
    assert core_groups.membership(again.graph) == core_groups.membership(project.graph)
    assert build_model(again.graph).code == build_model(plain.graph).code
    used = set(core_groups.membership(project.graph))
    written = json.loads(text)["view"].get("groups", [])
    assert [g["id"] for g in written] == [g for g in project.groups if g in used]


def test_a_version_1_file_still_loads_without_groups():
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    data["version"] = 1
    data.pop("view", None)
    project = Project.from_dict(data)
    assert project.groups == {} and "groups" not in project.to_dict()["view"]


def test_a_file_naming_an_undefined_group_is_refused_naming_the_node():
    data = json.loads(grouped(load_example("spiral"), {"fc1": "g1"}).to_json())
    data["view"]["groups"] = []
    with pytest.raises(GraphError) as info:
        Project.from_dict(data)
    assert ("fc1", "fc1 is in group 'g1', which the file does not define") in \
        info.value.errors


def test_outer_ports_are_the_edges_in_and_the_members_whose_output_leaves():
    g = load_example("resnet-block").graph
    entering, leaving = core_groups.boundary(g, ["bn1", "relu1", "conv2"])
    assert entering == [("conv1", "bn1")]
    assert leaving == ["relu1", "conv2"]  # relu1 also feeds the shortcut


group_edit = st.one_of(
    st.tuples(st.just("group"), st.lists(st.integers(0, 14), min_size=1, max_size=5)),
    st.tuples(st.just("ungroup"), st.integers(0, 14)),
    st.tuples(st.just("toggle"), st.integers(0, 5)),
    st.tuples(st.just("freeze"), st.integers(0, 14), st.booleans()),
    st.tuples(st.just("delete"), st.integers(0, 14)),
)


def apply_group_edit(doc, scene, step):
    nodes = list(doc.graph)
    if not nodes:
        return
    pick = [nodes[i % len(nodes)] for i in step[1]] if step[0] == "group" else \
        nodes[step[1] % len(nodes)] if step[0] != "toggle" else None
    if step[0] == "group":
        scene.select_only(pick)
        edit_ops.group_selection(scene)
    elif step[0] == "ungroup":
        scene.select_only([pick])
        edit_ops.ungroup_selection(scene)
    elif step[0] == "toggle" and doc.project.groups:
        groups = list(doc.project.groups)
        scene.groups.toggle(groups[step[1] % len(groups)])
    elif step[0] == "freeze":
        old = doc.graph.nodes[pick].get("frozen")
        doc.undo_stack.push(SetAttribute(doc, pick, "frozen", old, step[2] or None, "Freeze"))
    elif step[0] == "delete":
        doc.undo_stack.push(RemoveItems(doc, [pick], []))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(group_edit, min_size=1, max_size=12))
def test_any_group_edits_undo_and_redo_to_the_same_file(steps):
    make_application()
    doc = Document(load_example("resnet-block"))
    scene = GraphScene(doc)
    states = {0: doc.project.to_json()}
    for step in steps:
        apply_group_edit(doc, scene, step)
        states[doc.undo_stack.index()] = doc.project.to_json()
        shown = {n for n, item in scene.nodes.items() if item.isVisible()}
        collapsed = {g for g, d in doc.project.groups.items() if d.get("collapsed")}
        hidden = {n for g in collapsed for n in core_groups.members(doc.graph, g)}
        assert shown == set(doc.graph) - hidden
        assert set(scene.groups.blocks) == {g for g in collapsed
                                             if core_groups.members(doc.graph, g)}
    final = doc.project.to_json()
    while doc.undo_stack.canUndo():
        doc.undo_stack.undo()
        assert doc.project.to_json() == states[doc.undo_stack.index()]
    assert not scene.groups.blocks and all(i.isVisible() for i in scene.nodes.values())
    while doc.undo_stack.canRedo():
        doc.undo_stack.redo()
    assert doc.project.to_json() == final


# -- in the window ----------------------------------------------------------------------
def press(window, qtbot, key, modifiers=Qt.KeyboardModifier.ControlModifier):
    window.activateWindow()
    window.view.setFocus()
    qtbot.keyClick(window.view, key, modifiers)


def block_point(window, group):
    block = window.scene.groups.blocks[group]
    return window.view.mapFromScene(block.scenePos() + QPointF(60, 30))


def test_ctrl_g_groups_undo_and_redo_restore_the_file_exactly(window, qtbot):
    before = window.doc.project.to_json()
    window.scene.select_only(["fc1", "tanh1"])
    press(window, qtbot, Qt.Key.Key_G)
    after = window.doc.project.to_json()
    assert core_groups.members(window.doc.graph, "group1") == ["fc1", "tanh1"]
    assert not window.scene.nodes["fc1"].isVisible()  # collapsed: one block stands for them
    assert window.scene.groups.blocks["group1"].isVisible()
    assert not window.scene.edges[("fc1", "tanh1")].isVisible()
    press(window, qtbot, Qt.Key.Key_Z)
    assert window.doc.project.to_json() == before
    assert window.scene.nodes["fc1"].isVisible() and not window.scene.groups.blocks
    press(window, qtbot, Qt.Key.Key_Y)  # redo
    assert window.doc.project.to_json() == after
    window.scene.select_only(["fc2"])
    press(window, qtbot, Qt.Key.Key_G)  # a second group; then ungroup the first
    window.scene.clearSelection()
    window.scene.groups.blocks["group1"].setSelected(True)
    two_groups = window.doc.project.to_json()
    press(window, qtbot, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier
          | Qt.KeyboardModifier.ShiftModifier)
    assert set(window.doc.project.groups) == {"group2"}
    assert window.scene.nodes["fc1"].isVisible()
    window.doc.undo_stack.undo()
    assert window.doc.project.to_json() == two_groups


def test_the_edges_of_a_collapsed_group_end_at_its_outer_ports(window, qtbot):
    window.open_example("resnet-block")
    window.scene.select_only(["bn1", "relu1", "conv2"])
    group = edit_ops.group_selection(window.scene)
    block = window.scene.groups.blocks[group]
    into = window.scene.edges[("conv1", "bn1")].path()
    assert into.pointAtPercent(1.0) == block.input_pos(0)
    assert window.scene.edges[("relu1", "add")].path().pointAtPercent(0.0) == \
        block.output_pos(0)
    assert window.scene.edges[("conv2", "bn2")].path().pointAtPercent(0.0) == \
        block.output_pos(1)
    assert block.errors == []
    window.doc.undo_stack.push(RemoveItems(window.doc, [], [("conv1", "bn1")]))
    assert block.errors and all(e.startswith("bn1") for e in block.errors)  # hidden member's
    assert "problem: bn1" in block.toolTip()


def test_double_click_expands_and_collapses_and_a_drag_moves_the_members(window, qtbot):
    window.view.resetTransform()
    window.scene.select_only(["fc2", "tanh2"])
    group = edit_ops.group_selection(window.scene)
    window.view.centerOn(window.scene.groups.blocks[group])
    qtbot.mouseDClick(window.view.viewport(), Qt.MouseButton.LeftButton,
                      pos=block_point(window, group))
    qtbot.waitUntil(lambda: window.doc.project.groups[group]["collapsed"] is False)
    assert window.scene.nodes["fc2"].isVisible() and group not in window.scene.groups.blocks
    frame = window.scene.groups.frames[group]
    title = frame.header()  # on its title, left: an edge may cross the strip's middle
    window.view.centerOn(title.center())
    header = window.view.mapFromScene(QPointF(title.left() + 30, title.center().y()))
    qtbot.mouseDClick(window.view.viewport(), Qt.MouseButton.LeftButton, pos=header)
    qtbot.waitUntil(lambda: window.doc.project.groups[group]["collapsed"] is True)
    assert not window.scene.nodes["fc2"].isVisible()
    # the block, dragged, moves its members by as much, in one undo step
    window.view.centerOn(window.scene.groups.blocks[group])
    old = {n: list(window.doc.graph.nodes[n]["pos"]) for n in ("fc2", "tanh2")}
    start = window.view.mapToScene(block_point(window, group))
    drag(qtbot, window, start, start + QPointF(120, 0))
    for node in old:
        assert window.doc.graph.nodes[node]["pos"] == [old[node][0] + 120, old[node][1]]
    window.doc.undo_stack.undo()
    assert {n: window.doc.graph.nodes[n]["pos"] for n in old} == old
    window.doc.undo_stack.undo()  # each toggle is one undo step
    assert window.doc.project.groups[group]["collapsed"] is False


def test_copy_paste_of_a_group_makes_a_group_of_its_own(window, qtbot):
    window.scene.select_only(["fc1", "tanh1"])
    group = edit_ops.group_selection(window.scene)
    assert window.scene.selected_nodes() == ["fc1", "tanh1"]  # the block means its members
    press(window, qtbot, Qt.Key.Key_C)
    before = window.doc.project.to_json()
    press(window, qtbot, Qt.Key.Key_V)
    pasted = {g: m for g, m in core_groups.membership(window.doc.graph).items() if g != group}
    assert list(pasted.values()) == [["fc1_2", "tanh1_2"]]
    (copy,) = pasted
    assert window.doc.project.groups[copy] == window.doc.project.groups[group]
    assert window.doc.graph.has_edge("fc1_2", "tanh1_2")
    assert core_groups.members(window.doc.graph, group) == ["fc1", "tanh1"]
    assert window.scene.groups.blocks[copy].isSelected()
    window.doc.undo_stack.undo()
    assert window.doc.project.to_json() == before


def test_step_through_lights_a_collapsed_group_as_one(window, qtbot):
    window.scene.select_only(["fc2", "tanh2"])
    group = edit_ops.group_selection(window.scene)
    window.actions["actionStepThrough"].trigger()
    qtbot.waitUntil(lambda: window.stepper.active, timeout=30_000)
    stepper, block = window.stepper, window.scene.groups.blocks[group]
    for event in stepper.events:
        stepper.go(event.index)
        if event.node in ("fc2", "tanh2"):
            assert block.highlight is not None
            assert block.highlight == window.scene.nodes[event.node].highlight
            assert block.caption == window.scene.nodes[event.node].caption
        else:
            assert block.highlight is None, event
    stepper.leave()
    assert block.highlight is None


def test_the_inspector_renames_a_selected_group_in_one_undo_step(window, qtbot):
    window.scene.select_only(["fc1", "tanh1"])
    group = edit_ops.group_selection(window.scene)  # leaves its block selected
    page = window.inspector.group_page
    assert window.inspector.currentWidget() is page
    assert page.members.text() == "fc1, tanh1"
    page.name.setFocus()
    page.name.selectAll()
    qtbot.keyClicks(page.name, "Hidden layer")
    qtbot.keyClick(page.name, Qt.Key.Key_Return)
    assert window.doc.project.groups[group]["name"] == "Hidden layer"
    assert window.scene.groups.blocks[group].name == "Hidden layer"
    window.view.setFocus()
    qtbot.keyClick(window.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.doc.project.groups[group]["name"] == "Group 1"
    assert page.name.text() == "Group 1"
