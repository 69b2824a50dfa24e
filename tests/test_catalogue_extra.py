"""The layers real vision models need (issue 17, part 3): ReLU6, Hardswish, Hardsigmoid,
channel and alpha dropout, stochastic depth, depthwise and grouped convolutions, MaxPool's
ceil_mode, LayerNorm over trailing dimensions, Mean over dims, Concat over any dim and
broadcasting merges. Each is checked against torch itself: the inferred shape against the
real output, the output against torch's functional form (torchvision's for stochastic
depth) on the same weights, the chain rule against autograd. The ONNX, torch.export and
Python exports of `extra_graph` run in test_export.py with every other graph."""

import sys
import types

import networkx as nx
import pytest
import torch
import torch.nn.functional as F

import layerlab
from explain_twins import check
from layerlab.core.shapes import analyze

from helpers import chain_graph

# torchvision's pure-Python definitions import once its CUDA-only operator registrations
# are skipped (shared/measurements.md); only its stochastic_depth is used here
sys.modules.setdefault("torchvision._meta_registrations",
                       types.ModuleType("torchvision._meta_registrations"))
from torchvision.ops import stochastic_depth  # noqa: E402

# (type, params, input shape, twin(x, module, training)): torch's functional form
CASES = [
    ("ReLU6", {}, [7], lambda x, m, t: F.relu6(x)),
    ("Hardswish", {}, [3, 5], lambda x, m, t: F.hardswish(x)),
    ("Hardsigmoid", {}, [4, 2, 2], lambda x, m, t: F.hardsigmoid(x)),
    ("Dropout1d", {"p": 0.4}, [6, 5], lambda x, m, t: F.dropout1d(x, 0.4, t)),
    ("Dropout2d", {"p": 0.3}, [6, 3, 4], lambda x, m, t: F.dropout2d(x, 0.3, t)),
    ("AlphaDropout", {"p": 0.2}, [9], lambda x, m, t: F.alpha_dropout(x, 0.2, t)),
    ("StochasticDepth", {"p": 0.5}, [3, 4],
     lambda x, m, t: stochastic_depth(x, 0.5, "row", t)),
    ("StochasticDepth", {"p": 0.3, "mode": "batch"}, [2, 3, 3],
     lambda x, m, t: stochastic_depth(x, 0.3, "batch", t)),
    ("Conv2d", {"out_channels": 8, "kernel_size": 3, "padding": 1, "groups": 4}, [4, 7, 6],
     lambda x, m, t: F.conv2d(x, m.weight, m.bias, padding=1, groups=4)),  # depthwise ×2
    ("Conv1d", {"out_channels": 6, "kernel_size": 3, "stride": 2, "groups": 3}, [9, 11],
     lambda x, m, t: F.conv1d(x, m.weight, m.bias, stride=2, groups=3)),
    ("ConvTranspose2d", {"out_channels": 4, "kernel_size": 2, "stride": 2, "groups": 2},
     [6, 3, 5], lambda x, m, t: F.conv_transpose2d(x, m.weight, m.bias, 2, groups=2)),
    ("MaxPool2d", {"kernel_size": 3, "stride": 2, "ceil_mode": True}, [2, 8, 7],
     lambda x, m, t: F.max_pool2d(x, 3, 2, ceil_mode=True)),  # GoogLeNet's, SqueezeNet's
    ("MaxPool1d", {"kernel_size": 2, "stride": 2, "ceil_mode": True}, [3, 9],
     lambda x, m, t: F.max_pool1d(x, 2, 2, ceil_mode=True)),
    ("LayerNorm", {"eps": 1e-6}, [5, 4, 6],  # ConvNeXt: channels last [H, W, C]
     lambda x, m, t: F.layer_norm(x, (6,), m.weight, m.bias, 1e-6)),
    ("LayerNorm", {"normalized_dims": 3}, [3, 4, 5],
     lambda x, m, t: F.layer_norm(x, (3, 4, 5), m.weight, m.bias)),
    ("LayerNorm", {"normalized_dims": 2, "bias": False}, [3, 4, 5],
     lambda x, m, t: F.layer_norm(x, (4, 5), m.weight)),
    ("Mean", {"dim": [2, 3], "keepdim": True}, [5, 4, 3],
     lambda x, m, t: x.mean((2, 3), keepdim=True)),
    ("Mean", {"dim": [-1, 1]}, [5, 4, 3], lambda x, m, t: x.mean((-1, 1))),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


@pytest.mark.parametrize(("typ", "params", "shape", "twin"), CASES, ids=IDS)
def test_shape_and_output_equal_torchs(typ, params, shape, twin):
    """Evaluation, then a training step drawing the same random numbers as the twin."""
    g = chain_graph(shape, (typ, params))
    inferred = layerlab.infer_shapes(g)["n0"]
    model = layerlab.build_model(g)
    module = getattr(model, "n0", None)
    for batch in (1, 4):
        x = torch.randn(batch, *shape) * 4  # across every kink of the activations
        model.eval()
        torch.testing.assert_close(model(x), twin(x, module, False))
        model.train()
        torch.manual_seed(batch)
        out = model(x)
        torch.manual_seed(batch)
        torch.testing.assert_close(out, twin(x, module, True))
        assert tuple(out.shape) == (batch, *inferred)


def test_stochastic_depth_drops_whole_samples_and_is_the_identity_at_evaluation():
    g = chain_graph([3, 2], ("StochasticDepth", {"p": 0.25}))
    model = layerlab.build_model(g)
    x = torch.rand(4000, 3, 2) + 1
    torch.manual_seed(0)
    y = model(x)
    kept = (y != 0).flatten(1)
    assert kept.all(1).logical_or(~kept.any(1)).all()  # a sample is kept or dropped whole
    assert abs(kept.all(1).float().mean().item() - 0.75) < 0.03
    torch.testing.assert_close(y[kept.all(1)], x[kept.all(1)] / 0.75)
    assert torch.equal(model.eval()(x), x)


def squeeze_excitation():
    """torchvision's SqueezeExcitation: scale (C, 1, 1) times the input (C, H, W)."""
    g = nx.DiGraph()
    for node, typ, params in [
            ("x", "Input", {"shape": [6, 5, 4]}), ("squeeze", "AdaptiveAvgPool2d",
                                                   {"output_size": 1}),
            ("fc1", "Conv2d", {"out_channels": 3, "kernel_size": 1}), ("act", "ReLU", {}),
            ("fc2", "Conv2d", {"out_channels": 6, "kernel_size": 1}),
            ("gate", "Hardsigmoid", {}), ("scale", "Multiply", {}), ("shift", "Add", {}),
            ("flat", "Flatten", {}), ("head", "Linear", {"out_features": 3}),
            ("loss", "CrossEntropyLoss", {})]:
        g.add_node(node, type=typ, params=params)
    nx.add_path(g, ["x", "squeeze", "fc1", "act", "fc2", "gate"])
    g.add_edge("gate", "scale", port=0)
    g.add_edge("x", "scale", port=1)
    g.add_edge("fc2", "shift", port=0)  # (C, 1, 1) + (C, H, W)
    g.add_edge("scale", "shift", port=1)
    nx.add_path(g, ["shift", "flat", "head", "loss"])
    return g


def test_squeeze_and_excitation_broadcasts_like_torch():
    g = squeeze_excitation()
    shapes = layerlab.infer_shapes(g)
    assert shapes["gate"] == (6, 1, 1) and shapes["scale"] == shapes["shift"] == (6, 5, 4)
    model = layerlab.build_model(g).eval()
    x = torch.randn(3, 6, 5, 4)
    s = F.conv2d(F.relu(F.conv2d(x.mean((2, 3), keepdim=True), model.fc1.weight,
                                 model.fc1.bias)), model.fc2.weight, model.fc2.bias)
    expected = F.linear((s + F.hardsigmoid(s) * x).flatten(1), model.head.weight,
                        model.head.bias)
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize(("node", "twin"), [
    ("scale", lambda gate, x, w: gate * x),
    ("shift", lambda s, scaled, w: s + scaled),
    ("gate", lambda s, w: F.hardsigmoid(s)),
])
def test_broadcasting_merges_send_summed_gradients_back(node, twin):
    e = check(squeeze_excitation(), torch.randn(5, 6, 5, 4) * 3, torch.randint(0, 3, (5,)),
              node, twin)
    assert e.max_diff is not None and e.matches


def tail(out=3):
    return ("Flatten", {}), ("Linear", {"out_features": out})


def labels(n):
    return torch.randint(0, 3, (n,))


@pytest.mark.parametrize(("typ", "params", "shape", "twin"), [
    ("ReLU6", {}, [8], lambda x, w: F.relu6(x)),
    ("Hardswish", {}, [8], lambda x, w: F.hardswish(x)),
    ("Hardsigmoid", {}, [2, 4], lambda x, w: F.hardsigmoid(x)),
    ("LayerNorm", {"normalized_dims": 2}, [3, 4],
     lambda x, w: F.layer_norm(x, (3, 4), w["weight"], w["bias"])),
    ("LayerNorm", {"normalized_dims": 2, "elementwise_affine": False}, [3, 4],
     lambda x, w: F.layer_norm(x, (3, 4))),
])
def test_chain_rule_of_the_activations_and_layer_norm(typ, params, shape, twin):
    """After a Linear that spreads values over (−8, 8), so every piece of each activation
    is crossed; the Linear keeps the shape ([.., 4] → [.., 4] for the 2-D ones)."""
    g = chain_graph(shape, ("Linear", {"out_features": shape[-1]}), (typ, params), *tail(),
                    loss="CrossEntropyLoss")
    x = torch.randn(6, *shape) * 8
    e = check(g, x, labels(6), "n1", twin)
    assert e.max_diff is not None and e.max_diff < 1e-5


@pytest.mark.parametrize(("typ", "params", "shape", "twin"), [
    ("Dropout1d", {"p": 0.5}, [4, 3], lambda x, w: F.dropout1d(x, 0.5, True)),
    ("Dropout2d", {"p": 0.5}, [3, 2, 4], lambda x, w: F.dropout2d(x, 0.5, True)),
    ("AlphaDropout", {"p": 0.3}, [6], lambda x, w: F.alpha_dropout(x, 0.3, True)),
    ("StochasticDepth", {"p": 0.5}, [2, 4], lambda x, w: stochastic_depth(x, 0.5, "row")),
    ("StochasticDepth", {"p": 0.5, "mode": "batch"}, [4],
     lambda x, w: stochastic_depth(x, 0.5, "batch")),
    ("StochasticDepth", {"p": 1.0}, [4], lambda x, w: stochastic_depth(x, 1.0, "row")),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chain_rule_of_dropouts_uses_the_mask_the_step_drew(typ, params, shape, twin, seed):
    """The twin draws again from the same seed: the same mask as the step, so autograd on
    it gives what the rule computed from the recorded mask."""
    g = chain_graph(shape, ("Linear", {"out_features": shape[-1]}), (typ, params), *tail(),
                    loss="CrossEntropyLoss")
    e = check(g, torch.randn(8, *shape), labels(8), "n1", twin, seed=seed)
    mask = next(v for k, v in e.terms.items() if k.startswith("m (per "))
    if params["p"] < 1:
        assert 0 < mask.numel() < e.terms["dL/dn1"].numel() or typ == "AlphaDropout"


@pytest.mark.parametrize(("typ", "params", "shape", "twin"), [
    ("Conv2d", {"out_channels": 6, "kernel_size": 3, "groups": 3, "padding": 1}, [3, 5, 4],
     lambda x, w: F.conv2d(x, w["weight"], w["bias"], padding=1, groups=3)),
    ("Conv1d", {"out_channels": 4, "kernel_size": 2, "groups": 2}, [4, 6],
     lambda x, w: F.conv1d(x, w["weight"], w["bias"], groups=2)),
])
def test_chain_rule_of_depthwise_and_grouped_convolutions(typ, params, shape, twin):
    g = chain_graph(shape, (typ, params), *tail(), loss="CrossEntropyLoss")
    e = check(g, torch.randn(5, *shape), labels(5), "n0", twin, atol=1e-5)
    assert e.param_grads["n0.weight"].shape[1] == shape[0] // params["groups"]


def test_concat_over_the_height_of_images():
    """Two images joined along dim 2 of [N, C, H, W]: shape, values and chain rule."""
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [2, 3, 4]})
    for node, h in (("a", 1), ("b", 2)):
        g.add_node(node, type="Conv2d", params={"out_channels": 2, "kernel_size": [h, 1]})
        g.add_edge("x", node)
    g.add_node("cat", type="Concat", params={"dim": 2})
    g.add_edge("a", "cat", port=0)
    g.add_edge("b", "cat", port=1)
    g.add_node("loss", type="MSELoss", params={})
    g.add_edge("cat", "loss")
    assert layerlab.infer_shapes(g)["cat"] == (2, 5, 4)
    model = layerlab.build_model(g)
    x = torch.randn(4, 2, 3, 4)
    torch.testing.assert_close(model(x), torch.cat([model.a(x), model.b(x)], 2))
    check(g, x, torch.randn(4, 2, 5, 4), "cat", lambda a, b, w: torch.cat([a, b], 2))


def errors(shape, *layers):
    return analyze(chain_graph(shape, *layers)).errors_of("n0")


def test_groups_that_do_not_divide_the_channels_are_refused_naming_the_node():
    conv = {"out_channels": 4, "kernel_size": 3, "groups": 4}
    assert errors([6, 8, 8], ("Conv2d", conv)) == [
        "n0 has groups=4, which must divide both its input channels (6, [6, 8, 8] from x) "
        "and out_channels (4)"]
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        torch.nn.Conv2d(6, 4, 3, groups=4)  # torch refuses it too
    assert errors([4, 8, 8], ("Conv2d", {**conv, "out_channels": 6}))[0].startswith(
        "n0 has groups=4")
    assert errors([4, 8, 8], ("ConvTranspose2d", {**conv, "out_channels": 6}))
    assert not errors([4, 8, 8], ("Conv2d", conv))


def test_layer_norm_over_more_dimensions_than_the_input_has_is_refused():
    assert errors([4, 5], ("LayerNorm", {"normalized_dims": 3})) == [
        "n0 normalises over its last 3 dimensions but receives [4, 5] from x, which has 2"]


def test_dropout2d_needs_feature_maps():
    assert errors([8], ("Dropout2d", {})) == [
        "n0 expects a [C, H, W] input but receives [8] from x"]


def extra_graph():
    """Every layer of this module in one network (test_export.py exports it to ONNX,
    torch.export and Python and checks each against the model)."""
    g = nx.DiGraph()
    for node, typ, params in [
            ("x", "Input", {"shape": [4, 8, 8]}),
            ("dw", "Conv2d", {"out_channels": 8, "kernel_size": 3, "padding": 1,
                              "groups": 4}),
            ("bn", "BatchNorm2d", {}), ("hswish", "Hardswish", {}),
            ("pool", "MaxPool2d", {"kernel_size": 3, "stride": 2, "ceil_mode": True}),
            ("squeeze", "Mean", {"dim": [2, 3], "keepdim": True}),
            ("fc1", "Conv2d", {"out_channels": 4, "kernel_size": 1}), ("relu6", "ReLU6", {}),
            ("fc2", "Conv2d", {"out_channels": 8, "kernel_size": 1}),
            ("gate", "Hardsigmoid", {}), ("scale", "Multiply", {}),
            ("drop2d", "Dropout2d", {"p": 0.2}),
            ("depth", "StochasticDepth", {"p": 0.2}), ("res", "Add", {}),
            ("shift", "Add", {}), ("ln", "LayerNorm", {"normalized_dims": 3}),
            ("up", "ConvTranspose2d", {"out_channels": 4, "kernel_size": 2, "stride": 2,
                                       "groups": 2}),
            ("cat", "Concat", {"dim": 2}), ("hwc", "Reshape", {"shape": [16, 8, 4]}),
            ("ln_last", "LayerNorm", {"eps": 1e-6}), ("rows", "Reshape", {"shape": [8, 64]}),
            ("conv1d", "Conv1d", {"out_channels": 4, "kernel_size": 3, "groups": 2}),
            ("drop1d", "Dropout1d", {"p": 0.1}), ("flat", "Flatten", {}),
            ("alpha", "AlphaDropout", {"p": 0.1}), ("head", "Linear", {"out_features": 5}),
            ("loss", "CrossEntropyLoss", {})]:
        g.add_node(node, type=typ, params=params)
    nx.add_path(g, ["x", "dw", "bn", "hswish", "pool", "squeeze", "fc1", "relu6", "fc2",
                    "gate"])
    for merge, sources in (("scale", ["gate", "pool"]), ("res", ["depth", "pool"]),
                           ("shift", ["res", "gate"]), ("cat", ["up", "x"])):
        for port, src in enumerate(sources):
            g.add_edge(src, merge, port=port)
    nx.add_path(g, ["scale", "drop2d", "depth"])
    nx.add_path(g, ["shift", "ln", "up"])
    nx.add_path(g, ["cat", "hwc", "ln_last", "rows", "conv1d", "drop1d", "flat", "alpha",
                    "head", "loss"])
    return g


def test_the_extra_graph_holds_every_new_layer_and_trains():
    g = extra_graph()
    types_ = {d["type"] for _, d in g.nodes(data=True)}
    assert {"ReLU6", "Hardswish", "Hardsigmoid", "Dropout1d", "Dropout2d", "AlphaDropout",
            "StochasticDepth", "Mean", "Concat", "Multiply", "LayerNorm"} <= types_
    shapes = layerlab.infer_shapes(g)
    assert shapes["pool"] == (8, 4, 4) and shapes["cat"] == (4, 16, 8)
    model = layerlab.build_model(g)
    x, t = torch.randn(6, 4, 8, 8), labels(6)
    assert model(x).shape == (6, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        torch.manual_seed(0)  # the same dropout masks each step
        loss = F.cross_entropy(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
