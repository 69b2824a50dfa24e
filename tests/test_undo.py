"""Hypothesis: any sequence of edits undoes and redoes to the exact same file."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtCore import QPointF

from layerlab.app.application import make_application
from layerlab.app.canvas.scene import GraphScene
from layerlab.app.commands import MoveNodes, RemoveItems, Rename, SetAttribute, set_param
from layerlab.app.document import Document
from layerlab.app.layout_ops import auto_layout
from layerlab.app.main_window import example_project
from layerlab.core.catalogue import CATALOGUE

TYPES = sorted(CATALOGUE)

edit = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(TYPES), st.integers(-500, 500),
              st.integers(-500, 500), st.booleans()),
    st.tuples(st.just("connect"), st.integers(0, 99), st.integers(0, 99), st.integers(0, 2)),
    st.tuples(st.just("delete"), st.integers(0, 99), st.booleans()),
    st.tuples(st.just("param"), st.integers(0, 99), st.integers(0, 9), st.integers(1, 64)),
    st.tuples(st.just("rename"), st.integers(0, 99), st.text("abcxyz_", min_size=1,
                                                             max_size=6)),
    st.tuples(st.just("move"), st.integers(0, 99), st.integers(-300, 300)),
    st.tuples(st.just("freeze"), st.integers(0, 99), st.booleans()),
    st.tuples(st.just("layout")),
)


def apply(doc, scene, step):
    nodes = list(doc.graph)
    pick = (lambda i: nodes[i % len(nodes)]) if nodes else None
    kind = step[0]
    if kind == "add":
        after = pick(step[2]) if step[4] and pick else None
        scene.add_layer(step[1], QPointF(step[2], step[3]), after)
    elif kind == "connect" and pick:
        scene.connect_ports(pick(step[1]), pick(step[2]), step[3])
    elif kind == "delete" and pick:
        node = pick(step[1])
        edges = list(doc.graph.out_edges(node))[:1] if step[2] else []
        doc.undo_stack.push(RemoveItems(doc, [] if edges else [node], edges))
    elif kind == "param" and pick:
        node = pick(step[1])
        spec = CATALOGUE.get(doc.graph.nodes[node].get("type"))
        if spec and spec.params:
            param = spec.params[step[2] % len(spec.params)]
            value = step[3] if param.kind == "int" else param.initial
            command = set_param(doc, node, param.name, value)
            if command:
                doc.undo_stack.push(command)
    elif kind == "rename" and pick:
        new = f"r_{step[2]}"
        if new not in doc.graph:
            doc.undo_stack.push(Rename(doc, pick(step[1]), new))
    elif kind == "move" and pick:
        node = pick(step[1])
        old = list(doc.graph.nodes[node]["pos"])
        doc.undo_stack.push(MoveNodes(doc, {node: (old, [old[0] + step[2], old[1]])}))
    elif kind == "freeze" and pick:
        node = pick(step[1])
        old = doc.graph.nodes[node].get("frozen")
        doc.undo_stack.push(SetAttribute(doc, node, "frozen", old, step[2] or None, "Freeze"))
    elif kind == "layout":
        auto_layout(doc)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edit, min_size=1, max_size=25))
def test_undo_and_redo_round_trip_exactly(steps):
    make_application()
    doc = Document(example_project("resnet-block"))
    scene = GraphScene(doc)
    states = {0: doc.project.to_json()}  # undo-stack index → the file at that point
    for step in steps:
        apply(doc, scene, step)
        states[doc.undo_stack.index()] = doc.project.to_json()  # merged edits overwrite
    final = doc.project.to_json()
    while doc.undo_stack.canUndo():
        doc.undo_stack.undo()
        assert doc.project.to_json() == states[doc.undo_stack.index()]
    assert doc.project.to_json() == states[0]
    assert set(scene.nodes) == set(doc.graph) and set(scene.edges) == set(doc.graph.edges())
    while doc.undo_stack.canRedo():
        doc.undo_stack.redo()
    assert doc.project.to_json() == final
    assert set(scene.nodes) == set(doc.graph) and set(scene.edges) == set(doc.graph.edges())
