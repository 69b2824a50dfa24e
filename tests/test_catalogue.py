"""Every layer type: the inferred shape equals the shape torch actually produces."""

import pytest
import torch

import layerlab
from layerlab.core.catalogue import CATALOGUE, GROUPS, OPTIMIZERS, by_group, describe
from layerlab.core.layers.common import INITIALISERS

from helpers import chain_graph, sample_input

PRODUCT_TYPES = {
    "input": ["Input"],
    "dense": ["Linear", "Flatten", "Reshape", "Dropout", "Identity", "Dropout1d", "Dropout2d",
              "AlphaDropout", "StochasticDepth"],
    "convolution": ["Conv1d", "Conv2d", "ConvTranspose2d", "MaxPool1d", "MaxPool2d",
                    "AvgPool2d", "AdaptiveAvgPool2d"],
    "normalization": ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "Standardize"],
    "activation": ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "ELU", "Softmax",
                   "LogSoftmax", "ReLU6", "Hardswish", "Hardsigmoid"],
    "merge": ["Add", "Multiply", "Concat"],
    "tensor": ["Split", "Chunk", "Permute", "Transpose", "Expand", "Select", "Slice",
               "Parameter"],
    "sequence": ["Embedding", "MultiheadAttention", "TransformerEncoderLayer", "LSTM", "GRU",
                 "Mean", "TokenPositionEmbedding", "CausalSelfAttention", "GPTBlock"],
    "operation": ["Op"],
    "loss": ["CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss", "L1Loss", "NLLLoss"],
}

# (type, params, input shape, input dtype)
CASES = [
    ("Linear", {"out_features": 7}, [5], "float32"),
    ("Linear", {"out_features": 3, "bias": False}, [4, 6], "float32"),
    ("Flatten", {}, [3, 4, 5], "float32"),
    ("Flatten", {"start_dim": 2}, [3, 4, 5], "float32"),
    ("Flatten", {"start_dim": 1, "end_dim": 2}, [3, 4, 5], "float32"),
    ("Reshape", {"shape": [2, -1]}, [12], "float32"),
    ("Reshape", {"shape": [1, 28, 28]}, [784], "float32"),
    ("Dropout", {"p": 0.3}, [9], "float32"),
    ("Identity", {}, [2, 3], "float32"),
    ("Conv1d", {"out_channels": 4, "kernel_size": 3}, [2, 20], "float32"),
    ("Conv1d", {"out_channels": 4, "kernel_size": 5, "stride": 2, "padding": 1,
                "dilation": 2}, [2, 33], "float32"),
    ("Conv1d", {"out_channels": 4, "kernel_size": 3, "padding": "same"}, [2, 9], "float32"),
    ("Conv2d", {"out_channels": 6, "kernel_size": 5, "padding": 2}, [1, 28, 28], "float32"),
    ("Conv2d", {"out_channels": 8, "kernel_size": [3, 5], "stride": [2, 1],
                "padding": [1, 0], "groups": 2}, [4, 17, 13], "float32"),
    ("Conv2d", {"out_channels": 3, "kernel_size": 3, "padding": "valid", "dilation": 2},
     [3, 12, 12], "float32"),
    ("Conv2d", {"out_channels": 3, "kernel_size": 3, "padding": 1,
                "padding_mode": "reflect"}, [3, 8, 8], "float32"),
    ("ConvTranspose2d", {"out_channels": 4, "kernel_size": 2, "stride": 2}, [8, 7, 7],
     "float32"),
    ("ConvTranspose2d", {"out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1,
                         "output_padding": 1}, [3, 5, 6], "float32"),
    ("MaxPool1d", {"kernel_size": 2}, [3, 11], "float32"),
    ("MaxPool1d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, [3, 10],
     "float32"),
    ("MaxPool2d", {"kernel_size": 2}, [6, 28, 28], "float32"),
    ("MaxPool2d", {"kernel_size": 3, "stride": 2, "dilation": 2, "ceil_mode": True},
     [2, 15, 16], "float32"),
    ("AvgPool2d", {"kernel_size": 2}, [3, 9, 9], "float32"),
    ("AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
     [3, 10, 11], "float32"),
    ("AdaptiveAvgPool2d", {"output_size": 1}, [16, 5, 5], "float32"),
    ("AdaptiveAvgPool2d", {"output_size": [2, 3]}, [4, 7, 9], "float32"),
    ("BatchNorm1d", {}, [10], "float32"),
    ("BatchNorm1d", {"affine": False}, [4, 12], "float32"),
    ("BatchNorm2d", {"momentum": 0.2}, [3, 5, 5], "float32"),
    ("LayerNorm", {}, [6, 8], "float32"),
    ("LayerNorm", {"elementwise_affine": False}, [5], "float32"),
    ("Standardize", {}, [13], "float32"),
    ("Standardize", {}, [3, 4, 4], "float32"),
    ("ReLU", {}, [4], "float32"),
    ("LeakyReLU", {"negative_slope": 0.2}, [4], "float32"),
    ("Sigmoid", {}, [2, 3], "float32"),
    ("Tanh", {}, [3], "float32"),
    ("GELU", {"approximate": "tanh"}, [3], "float32"),
    ("SiLU", {}, [3], "float32"),
    ("ELU", {"alpha": 0.5}, [3], "float32"),
    ("Softmax", {}, [10], "float32"),
    ("Softmax", {"dim": 1}, [3, 4], "float32"),
    ("LogSoftmax", {"dim": -1}, [3, 4], "float32"),
    ("Embedding", {"num_embeddings": 10, "embedding_dim": 4}, [7], "int64"),
    ("Embedding", {"num_embeddings": 10, "embedding_dim": 3, "padding_idx": 0}, [2, 5],
     "int64"),
    ("MultiheadAttention", {"num_heads": 2}, [5, 8], "float32"),
    ("MultiheadAttention", {"num_heads": 1, "bias": False}, [3, 6], "float32"),
    ("TransformerEncoderLayer", {"nhead": 2, "dim_feedforward": 16}, [5, 8], "float32"),
    ("TransformerEncoderLayer", {"nhead": 4, "dim_feedforward": 8, "activation": "gelu",
                                 "norm_first": True}, [3, 8], "float32"),
    ("LSTM", {"hidden_size": 6}, [5, 3], "float32"),
    ("LSTM", {"hidden_size": 4, "num_layers": 2, "bidirectional": True}, [5, 3], "float32"),
    ("GRU", {"hidden_size": 5}, [4, 2], "float32"),
    ("GRU", {"hidden_size": 3, "bidirectional": True}, [6, 2], "float32"),
    ("Mean", {}, [5, 8], "float32"),
    ("Mean", {"dim": [1, 2], "keepdim": True}, [4, 5, 6], "float32"),
    ("Mean", {"dim": -1}, [4, 5], "float32"),
    ("TokenPositionEmbedding", {"num_embeddings": 10, "embedding_dim": 4, "max_len": 9}, [7],
     "int64"),
    ("CausalSelfAttention", {"num_heads": 2}, [5, 8], "float32"),
    ("CausalSelfAttention", {"num_heads": 1, "bias": False, "dropout": 0.1}, [3, 6],
     "float32"),
    ("GPTBlock", {"num_heads": 2}, [5, 8], "float32"),
    ("GPTBlock", {"num_heads": 4, "dim_feedforward": 12, "bias": False}, [3, 8], "float32"),
]


def test_catalogue_has_every_product_type_in_its_group():
    assert tuple(PRODUCT_TYPES) == GROUPS
    groups = by_group()
    for group, types in PRODUCT_TYPES.items():
        assert [s.type for s in groups[group]] == types
    assert len(CATALOGUE) == sum(len(t) for t in PRODUCT_TYPES.values())


@pytest.mark.parametrize("spec", CATALOGUE.values(), ids=lambda s: s.type)
def test_every_entry_is_described(spec):
    assert spec.description and spec.formula
    assert describe(spec.type).startswith(f"{spec.type}: ")
    for p in spec.params:
        assert p.help, f"{spec.type}.{p.name} has no help text"
        assert p.required or p.check(p.default) is None, f"{spec.type}.{p.name} default"
        assert p.check(p.initial) is None, f"{spec.type}.{p.name} has no usable start value"


def test_every_layer_with_weight_matrices_offers_every_initialiser():
    for spec in CATALOGUE.values():
        if spec.build is None or spec.is_loss or spec.type == "Input":
            continue
        case = next((c for c in CASES if c[0] == spec.type), None)
        if case is None:
            continue
        g = chain_graph(case[2], (spec.type, case[1]), dtype=case[3])
        model = layerlab.build_model(g)
        has_matrix = any(p.dim() >= 2 for p in model.parameters())
        assert spec.has_init == has_matrix, spec.type
        if spec.has_init:
            assert spec.param("init").choices == INITIALISERS


def test_optimizers_have_update_rules():
    assert set(OPTIMIZERS) == {"sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"}
    assert "m̂" in OPTIMIZERS["adam"].rule and "√v̂" in OPTIMIZERS["adam"].rule


@pytest.mark.parametrize(("typ", "params", "shape", "dtype"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_inferred_shape_equals_torch(typ, params, shape, dtype):
    g = chain_graph(shape, (typ, params), dtype=dtype)
    inferred = layerlab.infer_shapes(g)
    model = layerlab.build_model(g)
    model.eval()
    for batch in (1, 3):
        out = model(sample_input(tuple(shape), dtype, batch=batch))
        assert tuple(out.shape) == (batch, *inferred["n0"]), (typ, params)
    assert inferred["x"] == tuple(shape)


@pytest.mark.parametrize("typ", ["Add", "Multiply"])
def test_elementwise_merges_broadcast_like_torch(typ):
    import networkx as nx
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [4, 6]})
    g.add_node("a", type="Linear", params={"out_features": 6})
    g.add_node("b", type="Mean", params={"dim": 1, "keepdim": True})
    g.add_node("c", type="Identity", params={})
    g.add_node("m", type=typ, params={})
    g.add_edges_from([("x", "a"), ("x", "b"), ("x", "c")])
    for port, src in enumerate(["a", "b", "c"]):
        g.add_edge(src, "m", port=port)
    shapes = layerlab.infer_shapes(g)
    out = layerlab.build_model(g)(torch.randn(2, 4, 6))
    assert tuple(out.shape) == (2, *shapes["m"]) == (2, 4, 6)


def test_merges_of_different_ranks_are_refused_by_name():
    """[C] and [H, W, C] broadcast per sample, but with the batch first torch would line C
    up with W and the batch with H: silently wrong (batch 1) or an error at run time."""
    import networkx as nx
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [2, 3, 4]})
    g.add_node("scale", type="Parameter", params={"shape": [4]})
    g.add_node("m", type="Multiply", params={})
    g.add_edge("x", "m", port=0)
    g.add_edge("scale", "m", port=1)
    with pytest.raises(layerlab.GraphError) as caught:
        layerlab.infer_shapes(g)
    assert [n for n, _ in caught.value.errors] == ["m"]
    assert "[4] from scale" in caught.value.errors[0][1]
    g.nodes["scale"]["params"]["shape"] = [1, 1, 4]  # the per-sample broadcast, spelled out
    model = layerlab.build_model(g)
    x = torch.randn(2, 2, 3, 4)
    torch.testing.assert_close(model(x), x * model.scale.param)


def test_concat_follows_port_order():
    import networkx as nx
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [3]})
    g.add_node("a", type="Linear", params={"out_features": 2})
    g.add_node("b", type="Linear", params={"out_features": 5})
    g.add_node("cat", type="Concat", params={"dim": 1})
    g.add_edges_from([("x", "a"), ("x", "b")])
    g.add_edge("b", "cat", port=0)
    g.add_edge("a", "cat", port=1)
    model = layerlab.build_model(g)
    x = torch.randn(4, 3)
    out = model(x)
    assert layerlab.infer_shapes(g)["cat"] == (7,)
    expected = torch.cat([model.b(x), model.a(x)], dim=1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("loss", PRODUCT_TYPES["loss"])
def test_loss_nodes_are_left_out_of_the_model(loss):
    g = chain_graph([4], ("Linear", {"out_features": 3}), loss=loss)
    shapes = layerlab.infer_shapes(g)
    assert shapes["loss"] == ()
    model = layerlab.build_model(g)
    assert "loss" not in dict(model.named_children())
    assert model(torch.randn(2, 4)).shape == (2, 3)
