"""Hypothesis: random valid graphs compile, their inferred shapes are the real ones, and
projects round-trip through the file unchanged."""

import json

import networkx as nx
import torch
import torch.fx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import layerlab
from layerlab.core.compiler import NODE_META
from layerlab.core.project import Project
from layerlab.core.shapes import analyze

UNARY = [
    ("Linear", lambda draw: {"out_features": draw(st.integers(1, 6))}),
    ("ReLU", lambda draw: {}),
    ("Tanh", lambda draw: {}),
    ("Sigmoid", lambda draw: {}),
    ("GELU", lambda draw: {}),
    ("Dropout", lambda draw: {"p": draw(st.sampled_from([0.0, 0.5]))}),
    ("LayerNorm", lambda draw: {}),
    ("Identity", lambda draw: {}),
    ("Softmax", lambda draw: {"dim": -1}),
]


@st.composite
def graphs(draw):
    """A random DAG: chains, branches and Add/Multiply/Concat merges, one output."""
    g = nx.DiGraph()
    rank = draw(st.integers(1, 2))
    shape = [draw(st.integers(1, 5)) for _ in range(rank)]
    g.add_node("input", type="Input", params={"shape": shape}, pos=[0, 0])
    count = draw(st.integers(1, 12))
    for i in range(count):
        shapes = analyze(g).shapes  # several outputs while building: not yet valid
        node = f"n{i}"
        kind = draw(st.sampled_from(["unary", "unary", "merge"]))
        if kind == "merge":
            a, b = draw(st.lists(st.sampled_from(sorted(shapes)), min_size=2, max_size=2,
                                 unique=True)) if len(shapes) > 1 else (None, None)
            if a is not None and shapes[a][:-1] == shapes[b][:-1]:
                typ = "Concat" if shapes[a] != shapes[b] else draw(
                    st.sampled_from(["Add", "Multiply", "Concat"]))
                g.add_node(node, type=typ, params={"dim": -1} if typ == "Concat" else {},
                           pos=[i, 1])
                g.add_edge(a, node, port=0)
                g.add_edge(b, node, port=1)
                continue
        typ, params = draw(st.sampled_from(UNARY))
        source = draw(st.sampled_from(sorted(shapes)))
        g.add_node(node, type=typ, params=params(draw), pos=[i, 0])
        g.add_edge(source, node)
    merge_sinks(g)
    return g


def merge_sinks(g):
    """Join every dangling output into one with Concat (always valid along the last dim)."""
    k = 0
    while True:
        sinks = sorted(n for n in g if g.out_degree(n) == 0)
        if len(sinks) <= 1:
            return
        shapes = analyze(g).shapes
        a = sinks[0]
        b = next((s for s in sinks[1:] if shapes[s][:-1] == shapes[a][:-1]), None)
        if b is None:  # ranks differ: bring the rank-2 one down with a Mean over time
            b = next(s for s in sinks if len(shapes[s]) == 2)
            g.add_node(f"mean{k}", type="Mean", params={"dim": 1}, pos=[0, 2])
            g.add_edge(b, f"mean{k}")
        else:
            g.add_node(f"join{k}", type="Concat", params={"dim": -1}, pos=[0, 2])
            g.add_edge(a, f"join{k}", port=0)
            g.add_edge(b, f"join{k}", port=1)
        k += 1


class Recorder(torch.fx.Interpreter):
    def __init__(self, module):
        super().__init__(module)
        self.values = {}

    def run_node(self, n):
        out = super().run_node(n)
        if NODE_META in n.meta:
            self.values[n.meta[NODE_META]] = out
        return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(1, 4))
def test_random_graphs_compile_with_the_real_shapes(g, batch):
    shapes = layerlab.infer_shapes(g)
    model = layerlab.build_model(g).eval()  # eval: Dropout is deterministic
    x = torch.randn(batch, *shapes["input"])
    recorder = Recorder(model)
    out = recorder.run(x)
    assert set(recorder.values) == set(g)
    for node, value in recorder.values.items():
        assert tuple(value.shape) == (batch, *shapes[node]), node
    torch.testing.assert_close(out, model(x))


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.text(max_size=5),
                         st.floats(allow_nan=False, allow_infinity=False, width=32))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)


@st.composite
def projects(draw):
    g = draw(graphs())
    for node in g:
        g.nodes[node]["pos"] = [draw(st.floats(-1e4, 1e4, allow_nan=False)),
                                draw(st.integers(-500, 500))]
        if draw(st.booleans()):
            g.nodes[node]["frozen"] = draw(st.booleans())
    training = {
        "dataset": {"name": draw(st.sampled_from(["spiral", "digits", "mnist"])),
                    "options": draw(st.dictionaries(st.text(min_size=1, max_size=4),
                                                    json_scalars, max_size=2)),
                    "validation_split": draw(st.floats(0, 0.9))},
        "optimizer": {"name": draw(st.sampled_from(["sgd", "adam", "rmsprop"])),
                      "lr": draw(st.floats(1e-6, 1.0))},
        "batch_size": draw(st.integers(1, 512)), "epochs": draw(st.integers(1, 50)),
        "l1": draw(st.floats(0, 1)), "l2": draw(st.floats(0, 1)),
        "seed": draw(st.integers(0, 2**31)), "device": draw(st.sampled_from(["auto", "cpu"])),
    }
    extra = draw(st.dictionaries(st.sampled_from(["author", "notes", "x_custom"]),
                                 json_values, max_size=2))
    return Project(graph=g, name=draw(st.text(max_size=20)), training=training, extra=extra)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(projects())
def test_projects_round_trip_through_the_file(tmp_path_factory, project):
    path = tmp_path_factory.mktemp("rt") / "p.layerlab.json"
    project.save(path)
    loaded = layerlab.load_project(path)
    assert loaded.to_dict() == json.loads(json.dumps(project.to_dict()))
    assert nx.utils.graphs_equal(loaded.graph, project.graph)
    assert list(loaded.graph.edges(data=True)) == list(project.graph.edges(data=True))
    loaded.save(path.with_name("again.layerlab.json"))
    assert path.with_name("again.layerlab.json").read_text() == path.read_text()
