"""The generic operation node (Op): a call of an allow-listed torch function or Tensor method.

Compiled graphs equal hand-written torch; shapes found on meta tensors equal the real ones;
a file that names anything outside the allow-list is refused and nothing in it runs; the
node survives save/load, the Python and ONNX exports, and its chain rule (the function's
own vector-Jacobian product) agrees with autograd."""

from __future__ import annotations

import json
import operator
import os
import pickle
import types
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
import torch
import torch.fx
import torch.nn.functional as F

import layerlab
from explain_twins import check
from layerlab.core import ops
from layerlab.core.compiler import build_model, checked
from layerlab.core.errors import GraphError
from layerlab.core.export import export
from layerlab.core.project import Project
from layerlab.core.pycode import python_source
from layerlab.core.shapes import analyze

R0, R1 = ops.ref(0), ops.ref(1)


def graph(op: dict[str, Any], sources: tuple[str, ...] = ("a", "x"),
          loss: str | None = "CrossEntropyLoss") -> nx.DiGraph:
    """x [4, 6] → a = Linear(4) [4, 4]; op(sources…) → Flatten → Linear(3) (→ loss)."""
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [4, 6]}, pos=[0, 0])
    g.add_node("a", type="Linear", params={"out_features": 4}, pos=[0, 100])
    g.add_node("op", type="Op", params=op, pos=[0, 200])
    g.add_node("flat", type="Flatten", params={}, pos=[0, 300])
    g.add_node("out", type="Linear", params={"out_features": 3}, pos=[0, 400])
    g.add_edge("x", "a")
    for port, source in enumerate(sources):
        g.add_edge(source, "op", port=port)
    g.add_edge("op", "flat")
    g.add_edge("flat", "out")
    if loss:
        g.add_node("loss", type=loss, params={}, pos=[0, 500])
        g.add_edge("out", "loss")
    return g


CASES = [  # (params, sources, the call written by hand on (a, x))
    ({"fn": "torch.einsum", "args": ["bij,bjk->bik", R0, R1]}, ("a", "x"),
     lambda a, x: torch.einsum("bij,bjk->bik", a, x)),
    ({"fn": "torch.matmul"}, ("a", "x"), lambda a, x: torch.matmul(a, x)),
    ({"fn": "torch.roll", "args": [1, 2]}, ("a",), lambda a, x: torch.roll(a, 1, 2)),
    ({"fn": "torch.nn.functional.scaled_dot_product_attention", "args": [R0, R0, R1]},
     ("a", "x"), lambda a, x: F.scaled_dot_product_attention(a, a, x)),
]


@pytest.mark.parametrize(("params", "sources", "by_hand"), CASES,
                         ids=["einsum", "matmul", "roll", "sdpa"])
def test_the_compiled_graph_equals_hand_written_torch(params, sources, by_hand):
    g = graph(params, sources)
    model = build_model(g)
    x = torch.randn(5, 4, 6)
    a = model.a(x)
    expected = model.out(by_hand(a, x).flatten(1))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    call = next(n for n in model.graph.nodes if n.name == "op")
    assert call.op == "call_function" and call.target is ops.ALLOWED[params["fn"]].fn


def test_a_tensor_method_is_a_call_method_and_an_operator_reads_as_one():
    model = build_model(graph({"fn": "Tensor.view", "args": [-1, 2, 8]}, ("a",)))
    call = next(n for n in model.graph.nodes if n.name == "op")
    assert (call.op, call.target) == ("call_method", "view")
    assert "op = a.view(-1, 2, 8)" in model.code
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(model(x), model.out(model.a(x).view(-1, 16)), rtol=0, atol=0)


@pytest.mark.parametrize(("fn", "args", "kwargs", "shapes"), [
    ("torch.nn.functional.pad", [[1, 2]], {}, [(3, 5)]),
    ("torch.nn.functional.interpolate", [], {"scale_factor": 2, "mode": "nearest"},
     [(2, 3, 4)]),
    ("Tensor.permute", [0, 3, 1, 2], {}, [(4, 5, 3)]),
    ("torch.flatten", [1], {}, [(2, 3, 4)]),
    ("Tensor.mean", [[-1, -2]], {"keepdim": True}, [(3, 4, 5)]),
    ("torch.cat", [[R0, R1], -1], {}, [(3, 4), (3, 2)]),
    ("torch.nn.functional.unfold", [], {"kernel_size": 2}, [(2, 5, 5)]),
    ("torch.einsum", ["bhqd,bhkd->bhqk", R0, R1], {}, [(2, 7, 8), (2, 5, 8)]),
    ("operator.matmul", [], {}, [(3, 4), (4, 6)]),
])
def test_shapes_found_on_meta_tensors_equal_the_real_ones(fn, args, kwargs, shapes):
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [sum(map(len, shapes))]})
    g.add_node("op", type="Op", params={"fn": fn, "args": args, "kwargs": kwargs})
    for k, shape in enumerate(shapes):
        g.add_node(f"s{k}", type="Reshape", params={"shape": list(shape)})
        g.add_node(f"in{k}", type="Linear", params={"out_features": int(np.prod(shape))})
        g.add_edge("x", f"in{k}")
        g.add_edge(f"in{k}", f"s{k}")
        g.add_edge(f"s{k}", "op", port=k)
    inferred = analyze(g).shapes["op"]
    real = ops.call({"fn": fn, "args": args, "kwargs": kwargs},
                    [torch.randn(5, *s) for s in shapes])
    assert inferred == tuple(real.shape[1:])
    assert build_model(g)(torch.randn(5, g.nodes["x"]["params"]["shape"][0])).shape == \
        real.shape


@pytest.mark.parametrize(("params", "sources", "words"), [
    ({"fn": "torch.flatten"}, ("a",), "must keep the batch as the first dimension"),
    ({"fn": "Tensor.view", "args": [2, -1]}, ("a",), "must keep the batch"),
    ({"fn": "torch.einsum", "args": ["bij,bij->bi", R0, R1]}, ("a", "x"), "fails on"),
    ({"fn": "torch.roll", "args": [R1, 1, 2]}, ("a", "x"), "does not use input 0 (from a)"),
    ({"fn": "torch.roll", "args": [R0, ops.ref(2)]}, ("a",), "the arguments use input 2"),
])
def test_shape_errors_name_the_node_and_the_function(params, sources, words):
    errors = analyze(graph(params, sources)).errors_of("op")
    assert len(errors) == 1 and words in errors[0]
    assert errors[0].startswith(f"op ({params['fn']})") or "input 2" in errors[0]


# -- a project file is data -------------------------------------------------------------

def evil_cases(sentinel: Path) -> list[tuple[dict[str, Any], str]]:
    """Op params that would create `sentinel` if anything named in them were resolved and
    called, and the name the refusal must show."""
    payload = tmp_pickle(sentinel)
    touch = f"touch {sentinel}"
    code = f"open({str(sentinel)!r}, 'w')"
    return [
        ({"fn": "os.system", "args": [touch]}, "os.system"),
        ({"fn": "builtins.eval", "args": [code]}, "builtins.eval"),
        ({"fn": "torch.load", "args": [str(payload)], "kwargs": {"weights_only": False}},
         "torch.load"),
        ({"fn": "torch.hub.load", "args": ["evil/repo", "model"]}, "torch.hub.load"),
        ({"fn": "torch.__class__", "args": [touch]}, "torch.__class__"),
        ({"fn": "Tensor.__reduce__"}, "Tensor.__reduce__"),
        ({"fn": "torch.einsum.__globals__"}, "torch.einsum.__globals__"),
        ({"fn": "torch.roll", "args": [{"fn": "os.system", "args": [touch]}, 1]},
         "{'fn': 'os.system'"),
        ({"fn": "torch.roll", "args": [1], "kwargs": {"__class__": "os.system"}},
         "'__class__'"),
        ({"fn": "torch.roll", "args": [1], "kwargs": {"dims": [{"input": 0,
                                                               "call": code}]}},
         "'call'"),
    ]


def tmp_pickle(sentinel: Path) -> Path:
    """A pickle whose loading runs a shell command that creates `sentinel`."""
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))
    path = sentinel.with_suffix(".pt")
    path.write_bytes(pickle.dumps(Payload()))
    return path


def project_file(path: Path, params: dict[str, Any]) -> Path:
    data = Project(graph=graph({"fn": "torch.roll", "args": [1, 2]}, ("a",))).to_dict()
    for node in data["graph"]["nodes"]:
        if node["id"] == "op":
            node["params"] = params
    path.write_text(json.dumps(data))
    return path


def test_a_file_naming_anything_outside_the_allow_list_is_refused_and_nothing_runs(tmp_path):
    sentinel = tmp_path / "ran"
    for i, (params, name) in enumerate(evil_cases(sentinel)):
        path = project_file(tmp_path / f"evil{i}.layerlab.json", params)
        with pytest.raises(GraphError) as refused:
            layerlab.load_project(path)
        [(node, message)] = refused.value.errors
        assert node == "op" and message.startswith("op ") and name in message, message
        assert message.count(". ") == 0  # one sentence
        g = graph({"fn": "torch.roll", "args": [1, 2]}, ("a",))
        g.nodes["op"]["params"] = params  # the Python API: a graph that was never a file
        assert analyze(g).errors_of("op")
        with pytest.raises(GraphError):
            build_model(g)
        with pytest.raises(ops.OpError):  # with no inputs put before the file's arguments,
            ops.call(params, [])  # os.system('touch …') would run if the name resolved
        assert not sentinel.exists(), name


def test_the_allow_list_is_references_and_every_name_is_one_of_them():
    for name, allowed in ops.ALLOWED.items():
        assert "__" not in name and name.split(".")[0] in ("torch", "Tensor", "operator")
        assert callable(allowed.fn)
        assert ops.allowed_name(allowed.method or allowed.fn) is not None
    for bad in ("os.system", "eval", "torch.load", "", None, 3, ["torch.einsum"]):
        assert ops.name_problem(bad) is not None
    assert ops.allowed_name(torch.load) is None and ops.allowed_name("__reduce__") is None


# -- files, exports, the chain rule -----------------------------------------------------

def test_save_and_load_keep_the_node_and_its_outputs(tmp_path):
    g = graph(CASES[0][0])
    Project(graph=g, name="einsum").save(tmp_path / "p.layerlab.json")
    text = (tmp_path / "p.layerlab.json").read_text()
    assert '"args": ["bij,bjk->bik", {"input": 0}, {"input": 1}]' in text
    loaded = layerlab.load_project(tmp_path / "p.layerlab.json")
    assert loaded.graph.nodes["op"]["params"] == g.nodes["op"]["params"]
    torch.manual_seed(0)
    before = build_model(g)
    torch.manual_seed(0)
    after = build_model(loaded.graph)
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(after(x), before(x), rtol=0, atol=0)


def test_the_python_export_writes_the_call_as_code():
    g = graph({"fn": "torch.einsum", "args": ["bij,bjk->bik", R0, R1]})
    g.add_node("shift", type="Op", params={"fn": "operator.sub", "args": [R0, 0.5]})
    g.add_node("rolled", type="Op", params={"fn": "torch.roll", "args": [1],
                                            "kwargs": {"dims": -1}})
    g.remove_edge("op", "flat")
    g.add_edge("op", "shift", port=0)
    g.add_edge("shift", "rolled", port=0)
    g.add_edge("rolled", "flat")
    project = Project(graph=g)
    model = build_model(g)
    source = python_source(project, model, checked(g))
    assert "op = torch.einsum('bij,bjk->bik', a, x)" in source
    assert "shift = (op - 0.5)" in source
    assert "rolled = torch.roll(shift, 1, dims=-1)" in source
    module = types.ModuleType("exported")
    exec(compile(source, "exported.py", "exec"), module.__dict__)
    copy = module.Model()
    copy.load_state_dict(model.state_dict())
    x = torch.randn(4, 4, 6)
    torch.testing.assert_close(copy(x), model(x), rtol=0, atol=0)


def test_onnx_export_of_einsum_runs_in_onnxruntime_as_in_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    project = Project(graph=graph(CASES[0][0]))
    model = build_model(project.graph).eval()
    report = export(project, model, "onnx", tmp_path / "m.onnx")
    assert "onnxruntime matches torch" in report.detail
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(6, 4, 6)
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("params", "sources", "by_hand"), [CASES[0], CASES[3]],
                         ids=["einsum", "sdpa"])
def test_the_chain_rule_is_the_ops_own_vjp_and_agrees_with_autograd(params, sources,
                                                                     by_hand):
    g = graph(params, sources)
    x, t = torch.randn(6, 4, 6), torch.randint(0, 3, (6,))
    e = check(g, x, t, "op", lambda a, x, w: by_hand(a, x))  # a, x: the op's sources
    assert e.matches and e.max_diff is not None
    assert f"{params['fn']}'s own derivative" in e.formula
    assert e.formula.startswith("dL/da = (∂op/∂a)ᵀ · dL/dop;  dL/dx = (∂op/∂x)ᵀ · dL/dop;  ")
    assert set(e.terms) >= {"a", "x", "op", "dL/dop", "dL/da", "dL/dx"}


# -- for the importer -------------------------------------------------------------------

class Traced(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bij,bkj->bik", x, x)
        y = F.pad(y, (1, 1))
        y = y.flatten(1)
        return y + 1.0


def test_from_fx_turns_allowed_calls_into_op_params_and_refuses_the_rest():
    traced = torch.fx.symbolic_trace(Traced())
    calls = [n for n in traced.graph.nodes if n.op in ("call_function", "call_method")]
    converted = [ops.from_fx(n) for n in calls]
    x = next(n for n in traced.graph.nodes if n.op == "placeholder")
    assert converted[0] == ({"fn": "torch.einsum", "args": ["bij,bkj->bik", R0, R0],
                             "kwargs": {}}, [x])
    assert converted[1] == ({"fn": "torch.nn.functional.pad", "args": [[1, 1]], "kwargs": {
        "mode": "constant", "value": None}}, [calls[0]])  # the short form: input first
    assert converted[2][0] == {"fn": "Tensor.flatten", "args": [1], "kwargs": {}}
    assert converted[3][0] == {"fn": "operator.add", "args": [1.0], "kwargs": {}}
    assert ops.allowed_name(operator.add) == "operator.add"
    assert ops.op_params("torch.roll", (1, (2,))) == {"fn": "torch.roll", "args": [1, [2]],
                                                      "kwargs": {}}
    with pytest.raises(ops.OpError, match=r"'torch\.load' is not on LayerLab's list"):
        ops.op_params("torch.load", ["weights.pt"])
    g = torch.fx.Graph()
    node = g.call_function(F.dropout, (g.placeholder("x"),))
    with pytest.raises(ops.OpError, match="dropout is not on LayerLab's list"):
        ops.from_fx(node)


# -- the window -------------------------------------------------------------------------

def test_the_inspector_edits_fn_and_args_undoably_and_the_palette_finds_op(window, qtbot):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QComboBox, QLineEdit

    window.set_project(Project(graph=graph(CASES[0][0])))
    window.scene.select_only(["op"])
    assert window.scene.nodes["op"].type_name == "torch.einsum"  # shown as what it is
    assert window.scene.nodes["op"].lines == ["('bij,bjk->bik', x0, x1)"]
    combo = window.inspector.findChild(QComboBox, "param_fn")
    assert [combo.itemText(i) for i in range(combo.count())] == list(ops.NAMES)
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_Down)  # the next allowed name: torch.erf
    assert window.doc.graph.nodes["op"]["params"]["fn"] == "torch.erf"
    assert window.scene.nodes["op"].type_name == "torch.erf"
    assert window.actions["actionUndo"].text() == "&Undo Change fn"
    window.doc.undo_stack.undo()
    assert window.doc.graph.nodes["op"]["params"]["fn"] == "torch.einsum"
    assert combo.currentText() == "torch.einsum"
    assert window.scene.nodes["op"].type_name == "torch.einsum"
    edit = window.inspector.findChild(QLineEdit, "param_args")
    assert edit.text() == '["bij,bjk->bik", {"input": 0}, {"input": 1}]'
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, '["bij,bij->bi", {"input": 0}, {"input": 1}]')
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert window.doc.graph.nodes["op"]["params"]["args"][0] == "bij,bij->bi"
    assert "op (torch.einsum) fails on" in window.inspector.node_errors.text()
    window.doc.undo_stack.undo()
    assert window.doc.analysis.ok
    assert window.doc.graph.nodes["op"]["params"]["args"][0] == "bij,bjk->bik"

    palette = window.palette_widget  # the palette finds the Op node by a function's name
    qtbot.keyClicks(palette.search, "einsum")
    shown = [palette.tree.topLevelItem(i).child(j).text(0)
             for i in range(palette.tree.topLevelItemCount())
             for j in range(palette.tree.topLevelItem(i).childCount())
             if not palette.tree.topLevelItem(i).child(j).isHidden()]
    assert shown == ["Op"]
