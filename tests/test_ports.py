"""Several output ports: a Chunk feeding two branches compiles to what a person would write,
its ports are kept in the file (format version 3), the canvas draws one port per output and
a drag from the second makes an edge with out_port 1, the step-through walks them, and the
Python export writes them (ONNX and pt2: test_export.py's "plumbing" graph)."""

import importlib.util
import json
import sys

import networkx as nx
import pytest
import torch

import layerlab
from explain_twins import traced
from layerlab.core.explain import explain_node
from layerlab.core.export import export
from layerlab.core.project import Project
from layerlab.core.shapes import analyze
from layerlab.core.timeline import describe, timeline
from test_editor import drag
from test_plumbing_layers import plumbing_graph


def chunk_graph() -> nx.DiGraph:
    """x → pre → chunk; its first half through a Linear, its second through a ReLU; joined
    again."""
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [8]}, pos=[0, 0])
    g.add_node("pre", type="Linear", params={"out_features": 8}, pos=[0, 50])
    g.add_node("chunk", type="Chunk", params={"chunks": 2, "dim": 1}, pos=[0, 100])
    g.add_node("a", type="Linear", params={"out_features": 4}, pos=[-100, 200])
    g.add_node("b", type="ReLU", params={}, pos=[100, 200])
    g.add_node("cat", type="Concat", params={"dim": 1}, pos=[0, 300])
    g.add_node("head", type="Linear", params={"out_features": 3}, pos=[0, 400])
    g.add_node("loss", type="CrossEntropyLoss", params={}, pos=[0, 500])
    g.add_edges_from([("x", "pre"), ("pre", "chunk"), ("chunk", "a")])
    g.add_edge("chunk", "b", out_port=1)
    g.add_edge("a", "cat", port=0)
    g.add_edge("b", "cat", port=1)
    g.add_edges_from([("cat", "head"), ("head", "loss")])
    return g


class HandWritten(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = torch.nn.Linear(8, 8)
        self.a = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.pre(x).chunk(2, dim=1)
        return self.head(torch.cat([self.a(first), torch.relu(second)], dim=1))


def test_a_chunk_into_two_branches_equals_the_hand_written_module():
    model = layerlab.build_model(chunk_graph())
    twin = HandWritten()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(5, 8)
    torch.testing.assert_close(model(x), twin(x), rtol=0, atol=0)
    assert "chunk_1 = chunk[1]" in model.code and "b = self.b(chunk_1)" in model.code


def test_port_shapes_equal_the_real_ones():
    g = chunk_graph()
    g.nodes["chunk"]["type"], g.nodes["chunk"]["params"] = "Split", {"sizes": [3, 5]}
    g.nodes["a"]["params"] = {"out_features": 3}
    a = analyze(g)
    assert a.ok, a.errors
    x = torch.randn(2, 8)
    assert a.port_shapes["chunk"] == tuple(tuple(p.shape[1:]) for p in x.split([3, 5], 1))
    assert a.out_shape("chunk", 1) == (5,) and a.out_shape("chunk", 2) is None
    assert a.shown("chunk") == "[3] · [5]"
    assert layerlab.build_model(g)(x).shape == (2, 3)


def test_an_edge_from_a_port_that_does_not_exist_names_both_nodes():
    g = chunk_graph()
    g.edges["chunk", "b"]["out_port"] = 2
    assert ("b", "the edge from chunk into b leaves from output port 2, but chunk has 2 "
                 "(0 to 1)") in analyze(g).errors
    g.edges["chunk", "b"]["out_port"] = 0
    g.edges["pre", "chunk"]["out_port"] = 1
    assert ("chunk", "the edge from pre into chunk leaves from output port 1, but pre has 1 "
                     "(0 to 0)") in analyze(g).errors


def test_the_output_of_the_model_is_one_tensor():
    g = chunk_graph()
    g.remove_nodes_from(["a", "b", "cat", "head", "loss"])
    assert ("chunk", "the model's output must be one tensor, but chunk has several; put a "
                     "layer after the port you want") in analyze(g).errors


def test_the_file_keeps_out_port_and_writes_it_only_where_it_is_not_0(tmp_path):
    project = Project(graph=chunk_graph(), name="ports")
    project.graph.edges["chunk", "a"]["out_port"] = 0
    path = tmp_path / "ports.layerlab.json"
    project.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == 3
    edges = {(e["source"], e["target"]): e for e in data["graph"]["edges"]}
    assert edges["chunk", "b"]["out_port"] == 1 and "out_port" not in edges["chunk", "a"]
    again = layerlab.load_project(path)
    assert again.graph.edges["chunk", "b"]["out_port"] == 1
    assert nx.utils.edges_equal(again.graph.edges, project.graph.edges)


def test_a_version_2_file_still_loads(tmp_path):
    g = chunk_graph()
    g.remove_edge("chunk", "b")
    g.add_edge("x", "b")  # version 2 had no out_port: every edge leaves from output 0
    g.nodes["chunk"]["type"], g.nodes["chunk"]["params"] = "Identity", {}
    g.nodes["a"]["params"] = {"out_features": 4}
    g.nodes["b"]["type"] = "Linear"
    g.nodes["b"]["params"] = {"out_features": 4}
    data = Project(graph=g).to_dict()
    data["version"] = 2
    path = tmp_path / "old.layerlab.json"
    path.write_text(json.dumps(data))
    project = layerlab.load_project(path)
    assert layerlab.infer_shapes(project.graph)["cat"] == (8,)
    project.save()
    assert json.loads(path.read_text())["version"] == 3


@pytest.mark.parametrize("bad", [-1, "1", 1.5, True])
def test_a_malformed_out_port_is_refused_naming_the_edge(tmp_path, bad):
    data = Project(graph=chunk_graph()).to_dict()
    next(e for e in data["graph"]["edges"] if e["target"] == "b")["out_port"] = bad
    path = tmp_path / "bad.layerlab.json"
    path.write_text(json.dumps(data))
    with pytest.raises(layerlab.GraphError) as caught:
        layerlab.load_project(path)
    assert caught.value.errors == [("b", f"out_port of the edge from chunk into b must be a "
                                         f"whole number ≥ 0, not {bad!r}")]


def test_a_traced_step_keeps_each_port_and_walks_node_by_node():
    g = chunk_graph()
    _, trace = traced(g, torch.randn(6, 8), torch.randint(0, 3, (6,)))
    forward = dict(trace.forward)
    torch.testing.assert_close(torch.cat([forward["chunk:0"], forward["chunk:1"]], 1),
                               forward["pre"])
    assert trace.inputs["b"] == ["chunk:1"]
    events = timeline(trace, g)
    assert [e.node for e in events if e.phase == "forward"] == [
        "x", "pre", "chunk", "a", "b", "cat", "head"]
    assert sum(e.node == "chunk" and e.phase == "backward" for e in events) == 1
    chunk = next(e for e in events if e.node == "chunk")
    assert "output [4] · [4]" in describe(chunk, trace, g)
    e = explain_node(trace, g, "chunk")
    assert e.formula == "dL/dpre = [dL/dchunk:0, dL/dchunk:1] joined along dim 1 (a port " \
                        "nothing uses sends zeros)"
    assert e.matches
    torch.testing.assert_close(e.terms["dL/dchunk:1"], trace.grad("chunk:1")[0])


def run_exported(tmp_path, graph: nx.DiGraph, monkeypatch) -> tuple[str, torch.nn.Module]:
    """Export `graph` to Python and safetensors; load the file without LayerLab."""
    project = Project(graph=graph, name="exported")
    model = layerlab.build_model(graph).eval()
    export(project, model, "safetensors", tmp_path / "w.safetensors")
    export(project, model, "python", tmp_path / "exported.py")
    monkeypatch.setitem(sys.modules, "layerlab", None)  # it must run without LayerLab
    spec = importlib.util.spec_from_file_location("exported", tmp_path / "exported.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    again = module.load_model(str(tmp_path / "w.safetensors"))
    x = torch.randn(3, *graph.nodes["x"]["params"]["shape"])
    torch.testing.assert_close(again(x), model(x))
    return (tmp_path / "exported.py").read_text(), model


def test_python_export_carries_the_ports(tmp_path, monkeypatch):
    source, _ = run_exported(tmp_path, chunk_graph(), monkeypatch)
    assert "chunk = pre.chunk(2, 1)" in source and "b = self.b(chunk_1)" in source


def test_python_export_writes_the_learned_tensor_and_indexing_as_a_person_would(
        tmp_path, monkeypatch):
    source, _ = run_exported(tmp_path, plumbing_graph(), monkeypatch)
    assert "class LearnedTensor(nn.Module)" in source
    assert "self.cls = LearnedTensor((1, 1), init='normal')" in source
    assert "cls = self.cls(x)" in source and "wide = cls.expand(-1, -1, 4)" in source
    assert "act = self.act(halves_1)" in source
    assert "every2 = tokens[:, 0::2]" in source and "first = every2[:, 0]" in source
    assert "split_1 = split[1]" in source and "perm = split_0.permute(0, 2, 1)" in source


def test_dragging_from_the_second_output_port_connects_it_and_undo_removes_it(window, qtbot):
    g = chunk_graph()
    g.remove_edge("chunk", "b")
    window.set_project(Project(graph=g, name="ports"))
    scene = window.scene
    chunk, b = scene.nodes["chunk"], scene.nodes["b"]
    assert len(chunk.outputs) == 2 and len(scene.nodes["a"].outputs) == 1
    assert len(scene.nodes["loss"].outputs) == 0
    first, second = (p.scenePos() for p in chunk.outputs)
    assert first != second and chunk.shape_text.startswith("[4] · [4]")
    window.view.centerOn(chunk)
    drag(qtbot, window, second, b.inputs[0].scenePos())
    assert window.doc.graph.edges["chunk", "b"] == {"out_port": 1}
    assert window.doc.analysis.ok
    edge = scene.edges["chunk", "b"]
    assert edge.path().pointAtPercent(0) == second  # it leaves from the port it was dragged
    window.actions["actionUndo"].trigger()
    assert not window.doc.graph.has_edge("chunk", "b")
    window.actions["actionRedo"].trigger()
    assert window.doc.graph.edges["chunk", "b"] == {"out_port": 1}
    scene.select_only(["chunk"])
    window.palette_widget.activated.emit("Parameter")  # a double-click in the palette
    (token,) = [n for n, d in window.doc.graph.nodes(data=True) if d["type"] == "Parameter"]
    assert window.doc.graph.in_degree(token) == 0 and window.doc.graph.out_degree("chunk") == 2
    scene.select_only(["chunk"])
    window.palette_widget.activated.emit("ReLU")  # after a Split or Chunk: a branch
    assert window.doc.graph.out_degree("chunk") == 3
    assert window.doc.graph.edges["chunk", "b"] == {"out_port": 1}
    scene.select_only([token])
    assert len(scene.nodes[token].inputs) == 0 and len(scene.nodes[token].outputs) == 1
    combo = window.inspector.editors["init"]
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "zeros", "normal", "trunc_normal"]


def test_step_through_walks_a_chunk_as_one_node_and_shows_each_port(window, qtbot):
    g = chunk_graph()
    g.nodes["x"]["params"]["shape"] = [2]  # the spiral's points
    window.set_project(Project(graph=g, name="ports"))
    window.actions["actionStepThrough"].trigger()
    qtbot.waitUntil(lambda: window.stepper.active, timeout=30_000)
    stepper, panel = window.stepper, window.stepper_panel
    trace = stepper.trace
    while window.actions["actionStepNext"].isEnabled() and stepper.forward():
        event = stepper.events[stepper.index]
        assert event.node in window.doc.graph and event.node in panel.text.text()
        if event.node == "chunk":
            shown = [h for h in panel.tensor.heatmaps if not h.isHidden()]
            assert len(shown) == 2  # chunk:0 and chunk:1
    assert [e.node for e in stepper.events if e.phase == "forward"][:3] == ["x", "pre", "chunk"]
    panel.tabs.setCurrentWidget(panel.chain)
    stepper.go(next(e.index for e in stepper.events if e.phase == "backward"
                    and e.node == "chunk"))
    qtbot.waitUntil(lambda: not panel.chain.busy, timeout=30_000)
    assert panel.chain.check.text().startswith("✓ autograd agrees")
    torch.testing.assert_close(torch.from_numpy(panel.chain.values()["dL/dchunk:1"]),
                               trace.grad("chunk:1")[panel.sample.value()])


def test_a_chunk_of_the_data_gets_its_gradient_from_the_rules_it_feeds():
    """Autograd records nothing for values computed from the data alone: the chunk's port
    gradients come from the rules of a and b, and dL/dx still equals autograd's."""
    g = chunk_graph()
    g.remove_node("pre")
    g.add_edge("x", "chunk")
    x, t = torch.randn(6, 8), torch.randint(0, 3, (6,))
    model, trace = traced(g, x, t)
    e = explain_node(trace, g, "chunk", sample=2)
    assert not e.dy_recorded and "chunk:0" not in dict(trace.backward)
    leaf = x.clone().requires_grad_()
    torch.nn.functional.cross_entropy(model(leaf), t).backward()
    torch.testing.assert_close(e.grad_inputs[0], leaf.grad[2])


def test_an_edge_into_a_collapsed_group_leaves_from_its_port(window):
    from layerlab.core import groups as core_groups

    project = Project(graph=chunk_graph(), name="ports")
    for node in ("a", "b", "cat"):
        project.graph.nodes[node][core_groups.KEY] = "branches"
    project.groups["branches"] = core_groups.new_group("Branches", True)
    window.set_project(project)
    scene, chunk = window.scene, window.scene.nodes["chunk"]
    for target, port in (("a", 0), ("b", 1)):
        assert scene.edges["chunk", target].path().pointAtPercent(0) == \
            chunk.outputs[port].scenePos()
