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


def assert_real_shapes(g, x):
    """Every node's inferred shape is the shape torch computes for it, batch first."""
    shapes = layerlab.infer_shapes(g)
    model = layerlab.build_model(g).eval()  # eval: Dropout is deterministic
    recorder = Recorder(model)
    out = recorder.run(x)
    assert set(recorder.values) == set(g)
    for node, value in recorder.values.items():
        assert tuple(value.shape) == (len(x), *shapes[node]), (node, g.nodes[node])
    torch.testing.assert_close(out, model(x), equal_nan=True)  # e.g. an all-padding window


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(1, 4))
def test_random_graphs_compile_with_the_real_shapes(g, batch):
    assert_real_shapes(g, torch.randn(batch, *layerlab.infer_shapes(g)["input"]))


# -- convolution, pooling and sequence layers at their edges ---------------------------------
def sizes(n, low, high):
    """torch's _size_n_t: one int for every dimension, or one int per dimension."""
    return st.one_of(st.integers(low, high), st.lists(st.integers(low, high), min_size=n,
                                                      max_size=n))


def conv_params(n):
    return st.fixed_dictionaries({
        "out_channels": st.integers(1, 4), "kernel_size": sizes(n, 1, 4),
        "stride": sizes(n, 1, 3), "padding": st.one_of(sizes(n, 0, 3),
                                                       st.sampled_from(["same", "valid"])),
        "dilation": sizes(n, 1, 2), "groups": st.sampled_from([1, 1, 1, 2]),
        "padding_mode": st.sampled_from(["zeros", "reflect", "replicate", "circular"])})


def pool_params(n, dilated=True):
    extra = {"dilation": sizes(n, 1, 2)} if dilated else {
        "count_include_pad": st.booleans()}
    return st.fixed_dictionaries({
        "kernel_size": sizes(n, 1, 4), "stride": st.one_of(st.none(), sizes(n, 1, 3)),
        "padding": st.one_of(st.just(0), sizes(n, 0, 2)), "ceil_mode": st.booleans(),
        **extra})


SPATIAL = {  # layer type → parameters, by the rank of [C, L] (2) or [C, H, W] (3)
    2: {"Conv1d": conv_params(1), "MaxPool1d": pool_params(1), "ReLU": st.just({})},
    3: {"Conv2d": conv_params(2), "MaxPool2d": pool_params(2),
        "AvgPool2d": pool_params(2, dilated=False),
        "AdaptiveAvgPool2d": st.fixed_dictionaries({"output_size": sizes(2, 1, 4)}),
        "ConvTranspose2d": st.fixed_dictionaries({
            "out_channels": st.integers(1, 4), "kernel_size": sizes(2, 1, 3),
            "stride": sizes(2, 1, 3), "padding": sizes(2, 0, 2),
            "output_padding": sizes(2, 0, 2), "dilation": sizes(2, 1, 2),
            "groups": st.sampled_from([1, 2])}),
        "BatchNorm2d": st.just({}), "ReLU": st.just({})},
}


def twin(typ, params, shape):
    """The torch module a person would write for this layer on input `shape`."""
    p = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    if typ in ("Conv1d", "Conv2d", "ConvTranspose2d"):
        return getattr(torch.nn, typ)(shape[0], **p)
    if typ in ("MaxPool1d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"):
        return getattr(torch.nn, typ)(**p)
    if typ == "Embedding":
        return torch.nn.Embedding(**p)
    if typ == "MultiheadAttention":
        return torch.nn.MultiheadAttention(shape[-1], p["num_heads"], batch_first=True)
    if typ == "TransformerEncoderLayer":
        return torch.nn.TransformerEncoderLayer(shape[-1], batch_first=True, **p)
    raise NotImplementedError(f"no twin for {typ}")


def add_drawn(draw, g, node, sources, choices, refused):
    """Add one drawn layer after a drawn source; one that shape inference refuses is taken
    out again and kept, with its input shape, to be shown to torch."""
    shapes = analyze(g).shapes
    source = draw(st.sampled_from(sorted(sources(shapes))))
    typ = draw(st.sampled_from(sorted(choices(shapes[source]))))
    params = draw(choices(shapes[source])[typ])
    g.add_node(node, type=typ, params=params, pos=[len(g), 0])
    g.add_edge(source, node)
    if analyze(g).errors_of(node):
        refused.append((typ, params, shapes[source]))
        g.remove_node(node)


@st.composite
def spatial_graphs(draw):
    """Chains and branches of convolutions and pools over small 1-D or 2-D inputs, with
    stride, padding, dilation and ceil_mode at their edges; each branch flattened, then
    joined. Returns the graph and the layers shape inference refused."""
    g = nx.DiGraph()
    rank = draw(st.sampled_from([2, 3]))
    shape = [draw(st.integers(1, 4)), *(draw(st.integers(1, 7)) for _ in range(rank - 1))]
    g.add_node("input", type="Input", params={"shape": shape}, pos=[0, 0])
    refused = []
    for i in range(draw(st.integers(1, 6))):
        add_drawn(draw, g, f"n{i}", lambda shapes: shapes, lambda s: SPATIAL[len(s)],
                  refused)
    for k, sink in enumerate(sorted(n for n in g if g.out_degree(n) == 0)):
        g.add_node(f"flat{k}", type="Flatten", params={}, pos=[0, 1])
        g.add_edge(sink, f"flat{k}")
    merge_sinks(g)
    return g, refused


def sequence_layers(width):
    return {
        "LSTM": st.fixed_dictionaries({"hidden_size": st.integers(1, 6),
                                       "num_layers": st.integers(1, 2),
                                       "bidirectional": st.booleans()}),
        "GRU": st.fixed_dictionaries({"hidden_size": st.integers(1, 6),
                                      "bidirectional": st.booleans()}),
        "MultiheadAttention": st.fixed_dictionaries({"num_heads": st.sampled_from([1, 1, 2,
                                                                                   3])}),
        "TransformerEncoderLayer": st.fixed_dictionaries({
            "nhead": st.sampled_from([1, 1, 2, 3]), "dim_feedforward": st.integers(1, 8),
            "norm_first": st.booleans(), "activation": st.sampled_from(["relu", "gelu"])}),
        "Mean": st.fixed_dictionaries({"dim": st.sampled_from([1, -1, 2, -2]),
                                       "keepdim": st.booleans()}),
        "LayerNorm": st.just({}),
        "Linear": st.fixed_dictionaries({"out_features": st.integers(1, 6)}),
    }


@st.composite
def sequence_graphs(draw):
    """Token ids through Embeddings, or real-valued sequences [T, D], then recurrent,
    attention, transformer and Mean layers. Returns the graph, the refused layers and the
    vocabulary the token ids may use."""
    g = nx.DiGraph()
    steps, vocab = draw(st.integers(1, 5)), draw(st.integers(2, 12))
    tokens = draw(st.booleans())
    shape = [steps] if tokens else [steps, draw(st.integers(1, 8))]
    g.add_node("input", type="Input", params={"shape": shape,
                                              "dtype": "int64" if tokens else "float32"},
               pos=[0, 0])
    embedding = st.integers(vocab, vocab + 3).flatmap(lambda n: st.fixed_dictionaries({
        "num_embeddings": st.just(n), "embedding_dim": st.integers(1, 8),
        "padding_idx": st.one_of(st.none(), st.sampled_from([-n - 1, -n, -1, 0, n - 1, n]),
                                 st.integers(-n - 2, n + 1))}))
    refused = []
    for i in range(draw(st.integers(1, 6))):
        add_drawn(draw, g, f"n{i}", lambda shapes: [n for n, s in shapes.items()
                                                    if len(s) == 2 or n == "input"],
                  lambda s: {"Embedding": embedding} if len(s) == 1 else
                  sequence_layers(s[-1]), refused)
    merge_sinks(g)
    return g, refused, vocab


def assert_torch_refuses(refused):
    """What shape inference refused, torch refuses too (at construction or on the first
    batch): LayerLab is never stricter than torch."""
    for typ, params, shape in refused:
        x = torch.zeros(2, *shape, dtype=torch.int64 if typ == "Embedding" else torch.float32)
        try:
            module = twin(typ, params, shape).eval()
            out = module(x, x, x)[0] if typ == "MultiheadAttention" else module(x)
        except (RuntimeError, ValueError, AssertionError):
            continue
        if not all(out.shape):  # an empty output: refused on purpose, nothing would follow
            continue
        raise AssertionError(f"LayerLab refuses {typ} {params} on {list(shape)}, but torch "
                             f"gives {list(out.shape[1:])}")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spatial_graphs(), st.integers(1, 3))
def test_convolution_and_pooling_shapes_at_their_edges_are_torchs(case, batch):
    g, refused = case
    assert_real_shapes(g, torch.randn(batch, *layerlab.infer_shapes(g)["input"]))
    assert_torch_refuses(refused)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence_graphs(), st.integers(1, 3))
def test_sequence_layer_shapes_are_torchs(case, batch):
    g, refused, vocab = case
    shape = layerlab.infer_shapes(g)["input"]
    tokens = g.nodes["input"]["params"]["dtype"] == "int64"
    x = torch.randint(0, vocab, (batch, *shape)) if tokens else torch.randn(batch, *shape)
    assert_real_shapes(g, x)
    assert_torch_refuses(refused)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.text(max_size=5),
                         st.floats(allow_nan=False, allow_infinity=False, width=32))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)


def dataset(name, **options):
    """A dataset section with any of the options it takes, each in its range."""
    return st.tuples(st.fixed_dictionaries({}, optional=options), st.floats(0, 0.9)).map(
        lambda drawn: {"name": name, "options": drawn[0], "validation_split": drawn[1]})


datasets = st.one_of(
    dataset("spiral", n_samples=st.integers(4, 10_000), noise=st.floats(0, 10),
            seed=st.integers(0, 99)),
    dataset("digits"),
    dataset("mnist", root=st.text(max_size=8), download=st.booleans(),
            mirrors=st.text(max_size=8)))


@st.composite
def projects(draw):
    g = draw(graphs())
    for node in g:
        g.nodes[node]["pos"] = [draw(st.floats(-1e4, 1e4, allow_nan=False)),
                                draw(st.integers(-500, 500))]
        if draw(st.booleans()):
            g.nodes[node]["frozen"] = draw(st.booleans())
    training = {
        "dataset": draw(datasets),
        "optimizer": {"name": draw(st.sampled_from(["sgd", "adam", "rmsprop"])),
                      "lr": draw(st.floats(1e-6, 1.0))},
        "batch_size": draw(st.integers(1, 512)), "epochs": draw(st.integers(1, 50)),
        "l1": draw(st.floats(0, 1)), "l2": draw(st.floats(0, 1)),
        "seed": draw(st.integers(0, 2**31 - 1)), "device": draw(st.sampled_from(["auto", "cpu"])),
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
