"""The tensor plumbing layers (Split, Chunk, Permute, Transpose, Expand, Select, Slice,
Parameter): shapes equal torch's, outputs equal the torch expression they stand for, the
chain rule equals autograd on a hand-written twin, and broken settings name the node."""

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import layerlab
from explain_twins import check, traced
from layerlab.core.explain import explain_node
from layerlab.core.layers.plumbing import LearnedTensor
from layerlab.core.shapes import analyze

from helpers import chain_graph

SHAPE = [3, 4, 5]

# (type, params, the torch expression the layer stands for)
CASES = [
    ("Permute", {"dims": [0, 2, 3, 1]}, lambda x: x.permute(0, 2, 3, 1)),
    ("Permute", {"dims": [0, -1, 1, 2]}, lambda x: x.permute(0, 3, 1, 2)),
    ("Transpose", {"dim0": 1, "dim1": -1}, lambda x: x.transpose(1, -1)),
    ("Transpose", {}, lambda x: x.transpose(1, 2)),
    ("Select", {"dim": 1, "index": 0}, lambda x: x[:, 0]),
    ("Select", {"dim": -1, "index": -2}, lambda x: x[:, :, :, -2]),
    ("Slice", {"dim": 2, "start": 1, "end": 3}, lambda x: x[:, :, 1:3]),
    ("Slice", {"dim": 3, "start": -4, "step": 2}, lambda x: x[:, :, :, -4::2]),
    ("Slice", {"dim": 1, "end": 2}, lambda x: x[:, :2]),
]


@pytest.mark.parametrize(("typ", "params", "torch_fn"), CASES)
def test_output_and_shape_equal_torch(typ, params, torch_fn):
    g = chain_graph(SHAPE, (typ, params))
    x = torch.randn(2, *SHAPE)
    out = layerlab.build_model(g)(x)
    torch.testing.assert_close(out, torch_fn(x), rtol=0, atol=0)
    assert layerlab.infer_shapes(g)["n0"] == tuple(out.shape[1:])


def test_expand_grows_size_one_dimensions_and_keeps_the_batch():
    g = chain_graph([3, 1, 5], ("Expand", {"sizes": [-1, 4, 5]}))
    x = torch.randn(2, 3, 1, 5)
    out = layerlab.build_model(g)(x)
    torch.testing.assert_close(out, x.expand(2, 3, 4, 5), rtol=0, atol=0)
    assert layerlab.infer_shapes(g)["n0"] == (3, 4, 5)


@pytest.mark.parametrize(("typ", "params", "torch_fn"), CASES)
def test_chain_rule_equals_autograd(typ, params, torch_fn):
    g = chain_graph(SHAPE, ("Linear", {"out_features": 5}), (typ, params), ("Flatten", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    x, t = torch.randn(6, *SHAPE), torch.randint(0, 3, (6,))
    e = check(g, x, t, "n1", lambda v, w: torch_fn(v))
    assert e.type == typ and e.formula.startswith("dL/dn0")


def test_expand_chain_rule_sums_over_the_repeated_dimension():
    g = chain_graph([3, 1, 5], ("Linear", {"out_features": 5}),
                    ("Expand", {"sizes": [-1, 4, -1]}), ("Flatten", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    x, t = torch.randn(6, 3, 1, 5), torch.randint(0, 3, (6,))
    check(g, x, t, "n1", lambda v, w: v.expand(-1, -1, 4, -1))


def plumbing_graph() -> nx.DiGraph:
    """Every plumbing layer in one model: a split into two ports, the second halved again
    (one half left unused), a learned class token expanded and joined in front, every
    second token sliced out and the first selected."""
    g = nx.DiGraph()
    layers = {
        "x": ("Input", {"shape": [4, 6]}), "pre": ("Linear", {"out_features": 6}),
        "split": ("Split", {"sizes": [2, 4], "dim": 2}),
        "perm": ("Permute", {"dims": [0, 2, 1]}), "swap": ("Transpose", {"dim0": 1, "dim1": 2}),
        "halves": ("Chunk", {"chunks": 2, "dim": 2}), "act": ("ReLU", {}),
        "joined": ("Concat", {"dim": 2}),
        "cls": ("Parameter", {"shape": [1, 1], "init": "normal"}),
        "wide": ("Expand", {"sizes": [-1, 4]}), "tokens": ("Concat", {"dim": 1}),
        "every2": ("Slice", {"dim": 1, "start": 0, "step": 2}),
        "first": ("Select", {"dim": 1, "index": 0}),
    }
    for node, (typ, params) in layers.items():
        g.add_node(node, type=typ, params=params)
    g.add_edges_from([("x", "pre"), ("pre", "split"), ("split", "perm"), ("perm", "swap"),
                      ("cls", "wide"), ("tokens", "every2"), ("every2", "first")])
    g.add_edge("split", "halves", out_port=1)
    g.add_edge("halves", "act", out_port=1)
    g.add_edge("swap", "joined", port=0)
    g.add_edge("act", "joined", port=1)
    g.add_edge("wide", "tokens", port=0)
    g.add_edge("joined", "tokens", port=1)
    return g


def parameter_graph(init="normal"):
    """A class token and a positional embedding as ViT has them: [cls; x] + pos."""
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [4, 6]})
    g.add_node("cls", type="Parameter", params={"shape": [1, 6], "init": init})
    g.add_node("tokens", type="Concat", params={"dim": 1})
    g.add_node("pos", type="Parameter", params={"shape": [5, 6], "init": "trunc_normal",
                                                "std": 0.5})
    g.add_node("plus", type="Add", params={})
    g.add_node("first", type="Select", params={"dim": 1, "index": 0})
    g.add_node("head", type="Linear", params={"out_features": 3})
    g.add_node("loss", type="CrossEntropyLoss", params={})
    g.add_edge("cls", "tokens", port=0)
    g.add_edge("x", "tokens", port=1)
    g.add_edge("tokens", "plus", port=0)
    g.add_edge("pos", "plus", port=1)
    g.add_edges_from([("plus", "first"), ("first", "head"), ("head", "loss")])
    return g


class HandWritten(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.cls = torch.nn.Parameter(model.cls.param.detach().clone())
        self.pos = torch.nn.Parameter(model.pos.param.detach().clone())
        self.head = torch.nn.Linear(6, 3)
        self.head.load_state_dict(model.head.state_dict())

    def forward(self, x):
        tokens = torch.cat([self.cls.expand(len(x), 1, 6), x], dim=1) + self.pos
        return self.head(tokens[:, 0])


def test_parameter_is_one_tensor_for_the_whole_batch_under_node_param():
    torch.manual_seed(0)
    model = layerlab.build_model(parameter_graph())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        "cls.param": (1, 6), "pos.param": (5, 6), "head.weight": (3, 6), "head.bias": (3,)}
    pos = model.pos.param.detach()
    assert pos.abs().max() <= 1.0 and pos.std() > 0.1  # trunc_normal, std 0.5, cut at ±2·std
    x = torch.randn(7, 4, 6)
    torch.testing.assert_close(model(x), HandWritten(model)(x))
    assert layerlab.infer_shapes(parameter_graph())["cls"] == (1, 6)


def test_parameter_starts_at_zeros_by_default_and_gathers_every_samples_gradient():
    g = parameter_graph(init="zeros")
    assert not layerlab.build_model(g).cls.param.any()
    x, t = torch.randn(6, 4, 6), torch.randint(0, 3, (6,))
    for node in ("cls", "pos"):
        e = check(g, x, t, node, lambda w: w["param"].expand(6, *w["param"].shape))
        assert e.param_grads[f"{node}.param"].shape == getattr(
            layerlab.build_model(g), node).param.shape


def test_every_node_of_a_plumbed_graph_agrees_with_autograd():
    g = parameter_graph()
    _, trace = traced(g, torch.randn(6, 4, 6), torch.randint(0, 3, (6,)))
    for node in g:
        e = explain_node(trace, g, node)
        assert e.max_diff is None or e.matches, node


def test_the_learned_tensor_class_rebuilds_from_its_own_source():
    """The Python export copies LearnedTensor's source into the file: it needs only torch."""
    import inspect

    namespace = {}
    exec("import torch\nfrom torch import nn\n" + inspect.getsource(LearnedTensor), namespace)
    module = namespace["LearnedTensor"]((2, 3), init="normal", std=1.0)
    assert module(torch.zeros(4, 9)).shape == (4, 2, 3)


@pytest.mark.parametrize(("typ", "params", "words"), [
    ("Permute", {"dims": [1, 0, 2, 3]}, "n0's dims [1, 0, 2, 3] must keep the batch first"),
    ("Permute", {"dims": [0, 1, 1, 2]}, "n0's dims [0, 1, 1, 2] must name each dimension once"),
    ("Permute", {"dims": [0, 2, 1]}, "n0's dims [0, 2, 1] must name all 4 dimensions"),
    ("Transpose", {"dim0": 0, "dim1": 1}, "dim0=0 is the batch dimension"),
    ("Select", {"dim": 1, "index": 3}, "n0's index 3 is out of range for dim 1 of [3, 4, 5]"),
    ("Slice", {"dim": 2, "start": 3, "end": 1}, "n0 keeps nothing of dim 2"),
    ("Expand", {"sizes": [3, 8, 5]}, "n0 cannot expand size 4 of dimension 2"),
    ("Expand", {"sizes": [-1, -1]}, "n0's sizes [-1, -1] must give one size per dimension"),
    ("Split", {"sizes": [1, 1], "dim": 1}, "n0's sizes [1, 1] add up to 2, but dim 1 of"),
    ("Chunk", {"chunks": 3, "dim": 2}, "n0 cannot cut dim 2 of [3, 4, 5] from x into 3 "
                                       "chunks (torch gives 2 of 2)"),
])
def test_broken_settings_name_the_node(typ, params, words):
    g = chain_graph(SHAPE, (typ, params), ("Flatten", {}))
    if typ in ("Split", "Chunk"):
        g.add_edge("n0", "n1", out_port=0)
    errors = analyze(g).errors
    assert any(node == "n0" and words in message for node, message in errors), errors


def test_a_parameter_takes_no_input():
    g = chain_graph([4], ("Parameter", {"shape": [4]}))
    assert ("n0", "a Parameter takes no inputs but n0 receives 1 (from x)") in analyze(g).errors


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), data=st.data())
def test_slicing_and_cutting_shapes_are_torchs_or_refused(shape, data):
    """Random Slice, Select, Chunk and Split settings: the shape rule gives torch's shape,
    or an error where torch fails or gives what the node cannot hold (nothing, fewer
    chunks than ports)."""
    dim = data.draw(st.integers(1, len(shape)), label="dim")
    length = shape[dim - 1]
    typ, params = data.draw(st.sampled_from([
        ("Slice", {"dim": dim, "start": data.draw(st.none() | st.integers(-7, 7)),
                   "end": data.draw(st.none() | st.integers(-7, 7)),
                   "step": data.draw(st.integers(1, 3))}),
        ("Select", {"dim": dim, "index": data.draw(st.integers(-7, 7))}),
        ("Chunk", {"chunks": data.draw(st.integers(1, 7)), "dim": dim}),
        ("Split", {"sizes": data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)),
                   "dim": dim}),
    ]), label="layer")
    x = torch.zeros(2, *shape)
    index = (slice(None),) * dim
    try:
        if typ == "Slice":
            real = [x[(*index, slice(params["start"], params["end"], params["step"]))]]
        elif typ == "Select":
            real = [x[(*index, params["index"])]]
        elif typ == "Chunk":
            real = list(x.chunk(params["chunks"], dim))
        else:
            real = list(x.split(params["sizes"], dim))
    except (IndexError, RuntimeError):
        real = None
    g = chain_graph(shape, (typ, params))
    a = analyze(g)
    ours = a.port_shapes.get("n0") or ((a.shapes["n0"],) if "n0" in a.shapes else None)
    fits = real is not None and all(r.numel() for r in real) and \
        (typ != "Chunk" or len(real) == params["chunks"])
    if fits:
        assert ours == tuple(tuple(r.shape[1:]) for r in real), a.errors
    else:
        assert ours is None and any(n == "n0" and "n0" in m for n, m in a.errors), (
            real and [r.shape for r in real], length, a.errors)
