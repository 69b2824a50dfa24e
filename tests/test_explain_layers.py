"""The chain rule of every plain layer, checked against autograd on a hand-written twin
(explain_twins.check) for several samples and shapes."""

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import layerlab
from explain_twins import check, traced
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.explain import RULES, explain_node

from helpers import chain_graph

FAST = settings(max_examples=12, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def labels(n=6, classes=3):
    return torch.randint(0, classes, (n,))


def test_every_catalogue_type_has_a_rule():
    assert set(CATALOGUE) - {"Input"} == set(RULES)


def tail(*layers, out=3):
    return (*layers, ("Flatten", {}), ("Linear", {"out_features": out}))


@pytest.mark.parametrize(("typ", "params", "twin"), [
    ("ReLU", {}, lambda x, w: F.relu(x)),
    ("LeakyReLU", {"negative_slope": 0.2}, lambda x, w: F.leaky_relu(x, 0.2)),
    ("Sigmoid", {}, lambda x, w: torch.sigmoid(x)),
    ("Tanh", {}, lambda x, w: torch.tanh(x)),
    ("GELU", {}, lambda x, w: F.gelu(x)),
    ("GELU", {"approximate": "tanh"}, lambda x, w: F.gelu(x, approximate="tanh")),
    ("SiLU", {}, lambda x, w: F.silu(x)),
    ("ELU", {"alpha": 0.7}, lambda x, w: F.elu(x, 0.7)),
    ("Softmax", {"dim": 1}, lambda x, w: torch.softmax(x, 1)),
    ("Softmax", {"dim": -1}, lambda x, w: torch.softmax(x, -1)),
    ("LogSoftmax", {"dim": 1}, lambda x, w: torch.log_softmax(x, 1)),
    ("Identity", {}, lambda x, w: x),
    ("Flatten", {}, lambda x, w: x.flatten(1)),
    ("Reshape", {"shape": [5, 3]}, lambda x, w: x.reshape(-1, 5, 3)),
    ("Mean", {"dim": 1}, lambda x, w: x.mean(1)),
    ("Mean", {"dim": [1, 2], "keepdim": True}, lambda x, w: x.mean((1, 2), keepdim=True)),
    ("LayerNorm", {}, lambda x, w: F.layer_norm(x, (5,), w["weight"], w["bias"])),
    ("LayerNorm", {"elementwise_affine": False},
     lambda x, w: F.layer_norm(x, (5,), eps=1e-5)),
    ("BatchNorm1d", {}, lambda x, w: F.batch_norm(x, None, None, w["weight"], w["bias"],
                                                  training=True)),
])
def test_element_and_sequence_layers_on_a_sequence(typ, params, twin):
    """[T, D] values after a Linear, so that dL/d(input) was recorded too."""
    g = chain_graph([3, 4], ("Linear", {"out_features": 5}), (typ, params),
                    *tail(), loss="CrossEntropyLoss")
    check(g, torch.randn(6, 3, 4), labels(), "n1", twin)


@pytest.mark.parametrize(("typ", "params", "twin"), [
    ("Tanh", {}, lambda x, w: torch.tanh(x)),
    ("Softmax", {}, lambda x, w: torch.softmax(x, -1)),
    ("BatchNorm1d", {"affine": False},
     lambda x, w: F.batch_norm(x, None, None, training=True)),
    ("Linear", {"out_features": 4}, lambda x, w: F.linear(x, w["weight"], w["bias"])),
    ("Linear", {"out_features": 2, "bias": False}, lambda x, w: x @ w["weight"].T),
])
def test_vector_layers(typ, params, twin):
    g = chain_graph([7], ("Linear", {"out_features": 5}), (typ, params),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    check(g, torch.randn(9, 7), labels(9), "n1", twin, samples=(0, 4, 8))


def test_the_first_layer_gives_dl_d_data():
    g = chain_graph([7], ("Linear", {"out_features": 4}), ("Tanh", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    e = check(g, torch.randn(5, 7), labels(5), "n0",
              lambda x, w: F.linear(x, w["weight"], w["bias"]))
    assert e.grad_inputs[0].shape == (7,)


@given(p=st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]), seed=st.integers(0, 10_000))
@FAST
def test_dropout_uses_the_mask_the_step_drew(p, seed):
    g = chain_graph([6], ("Linear", {"out_features": 8}), ("Dropout", {"p": p}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    e = check(g, torch.randn(6, 6), labels(), "n1",
              lambda x, w: F.dropout(x, p, training=True), seed=seed)
    if 0 < p < 1:
        _, trace = traced(g, torch.randn(6, 6), labels(), seed=seed)
        mask = trace.extras["n1"]["masks"][0]
        assert mask.shape == (6, 8)
        assert torch.equal(e.terms["m"].bool(), mask[0])


def test_batch_norm_in_training_uses_its_batch_not_only_the_kept_samples():
    """Kept 3 of 10 samples: the sample's BN backward still needs the whole batch's sums."""
    g = chain_graph([2, 5, 5], ("Conv2d", {"out_channels": 3, "kernel_size": 1}),
                    ("BatchNorm2d", {}), *tail(), loss="CrossEntropyLoss")
    x, t = torch.randn(10, 2, 5, 5), labels(10)
    model, trace = traced(g, x, t, keep=3)
    xs = model.n0(x).detach().requires_grad_()
    out = F.batch_norm(xs, None, None, model.n1.weight, model.n1.bias, training=True)
    loss = F.cross_entropy(model.n3(model.n2(out)), t)
    loss.backward()
    e = explain_node(trace, g, "n1", sample=2)
    torch.testing.assert_close(e.grad_inputs[0], xs.grad[2], atol=1e-6, rtol=1e-4)
    assert e.param_grads is None  # not every sample was kept
    assert e.matches


def test_batch_norm_in_evaluation_uses_the_running_statistics():
    g = chain_graph([4], ("Linear", {"out_features": 5}), ("BatchNorm1d", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    model = layerlab.build_model(g)
    model.n1.running_mean.uniform_(-1, 1)
    model.n1.running_var.uniform_(0.5, 2)
    model.eval()
    x, t = torch.randn(5, 4), labels(5)
    trace = layerlab.trace_step(g, model, x, t, keep=5)
    e = explain_node(trace, g, "n1", sample=3)
    h = model.n0(x).detach().requires_grad_()
    F.cross_entropy(model.n2(model.n1(h)), t).backward()
    torch.testing.assert_close(e.grad_inputs[0], h.grad[3])
    assert "running_var" in e.formula and e.matches


def conv_twin(n, params):
    conv = F.conv1d if n == 1 else F.conv2d
    k, d = params["kernel_size"], params["dilation"]
    pad, mode = params["padding"], params["padding_mode"]

    def twin(x, w):
        if mode == "zeros":
            return conv(x, w["weight"], w.get("bias"), params["stride"], pad, d,
                        params["groups"])
        total = d * (k - 1)
        pads = {"same": [total // 2, total - total // 2], "valid": [0, 0]}.get(pad, [pad, pad])
        x = F.pad(x, pads * n, mode=mode)
        return conv(x, w["weight"], w.get("bias"), params["stride"], 0, d, params["groups"])
    return twin


def valid(g):
    try:
        layerlab.infer_shapes(g)
    except layerlab.GraphError:
        return False
    return True


@given(n=st.sampled_from([1, 2]), k=st.integers(1, 3), stride=st.integers(1, 2),
       padding=st.sampled_from([0, 1, 2, "same", "valid"]), dilation=st.integers(1, 2),
       groups=st.sampled_from([1, 2]), bias=st.booleans(),
       mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
@FAST
def test_convolution(n, k, stride, padding, dilation, groups, bias, mode):
    params = {"out_channels": 4, "kernel_size": k, "stride": stride, "padding": padding,
              "dilation": dilation, "groups": groups, "bias": bias, "padding_mode": mode}
    shape = [2, 9] if n == 1 else [2, 6, 5]
    g = chain_graph(shape, (f"Conv{n}d", params), *tail(), loss="CrossEntropyLoss")
    assume(valid(g))
    e = check(g, torch.randn(4, *shape), labels(4), "n0", conv_twin(n, params), atol=1e-5)
    assert any(name.startswith("its share of dL/dW") for name in e.terms)


@given(k=st.integers(1, 3), stride=st.integers(1, 3), padding=st.integers(0, 1),
       out_pad=st.integers(0, 1), dilation=st.integers(1, 2), groups=st.sampled_from([1, 2]))
@FAST
def test_transposed_convolution(k, stride, padding, out_pad, dilation, groups):
    params = {"out_channels": 2, "kernel_size": k, "stride": stride, "padding": padding,
              "output_padding": out_pad, "dilation": dilation, "groups": groups}
    g = chain_graph([2, 4, 3], ("ConvTranspose2d", params), *tail(),
                    loss="CrossEntropyLoss")
    assume(valid(g))
    check(g, torch.randn(4, 2, 4, 3), labels(4), "n0", lambda x, w: F.conv_transpose2d(
        x, w["weight"], w["bias"], stride, padding, out_pad, groups, dilation), atol=1e-5)


def ties(shape, n=5):
    """Small whole numbers: most pooling windows hold their maximum more than once."""
    return torch.randint(0, 3, (n, *shape)).float()


@given(n=st.sampled_from([1, 2]), k=st.integers(2, 3), stride=st.sampled_from([None, 1, 2]),
       padding=st.integers(0, 1), dilation=st.integers(1, 2), ceil=st.booleans())
@FAST
def test_max_pooling_routes_to_the_first_maximum(n, k, stride, padding, dilation, ceil):
    """A 1×1 convolution of one channel keeps the data's ties exactly (y = w·x + b)."""
    pool = {"kernel_size": k, "stride": stride, "padding": padding, "dilation": dilation,
            "ceil_mode": ceil}
    shape = [1, 11] if n == 1 else [1, 7, 6]
    g = chain_graph(shape, (f"Conv{n}d", {"out_channels": 2, "kernel_size": 1}),
                    (f"MaxPool{n}d", pool), *tail(), loss="CrossEntropyLoss")
    assume(valid(g))
    fn = F.max_pool1d if n == 1 else F.max_pool2d
    e = check(g, ties(shape), labels(5), "n1", lambda x, w: fn(
        x, k, stride, padding, dilation, ceil_mode=ceil))
    assert (e.grad_inputs[0] != 0).sum() <= e.terms["dL/dn1"].numel()  # no sharing


@given(k=st.integers(1, 3), stride=st.sampled_from([None, 1, 2]), padding=st.integers(0, 1),
       ceil=st.booleans(), include=st.booleans())
@FAST
def test_average_pooling_spreads(k, stride, padding, ceil, include):
    pool = {"kernel_size": k, "stride": stride, "padding": padding, "ceil_mode": ceil,
            "count_include_pad": include}
    g = chain_graph([1, 7, 6], ("Conv2d", {"out_channels": 2, "kernel_size": 1}),
                    ("AvgPool2d", pool), *tail(), loss="CrossEntropyLoss")
    assume(valid(g))
    check(g, torch.randn(5, 1, 7, 6), labels(5), "n1", lambda x, w: F.avg_pool2d(
        x, k, stride, padding, ceil, include))


@pytest.mark.parametrize("size", [[1, 1], [2, 3], [3, 2], [7, 5]])
def test_adaptive_average_pooling(size):
    g = chain_graph([1, 7, 5], ("Conv2d", {"out_channels": 2, "kernel_size": 1}),
                    ("AdaptiveAvgPool2d", {"output_size": size}), *tail(),
                    loss="CrossEntropyLoss")
    check(g, torch.randn(5, 1, 7, 5), labels(5), "n1",
          lambda x, w: F.adaptive_avg_pool2d(x, size))


@pytest.mark.parametrize("shape", [[2, 4, 4], [3, 5]])
def test_batch_norm_over_channels(shape):
    conv = ("Conv2d" if len(shape) == 3 else "Conv1d", {"out_channels": 3, "kernel_size": 1})
    typ = "BatchNorm2d" if len(shape) == 3 else "BatchNorm1d"
    g = chain_graph(shape, conv, (typ, {"eps": 1e-3}), *tail(), loss="CrossEntropyLoss")
    check(g, torch.randn(6, *shape), labels(), "n1", lambda x, w: F.batch_norm(
        x, None, None, w["weight"], w["bias"], training=True, eps=1e-3))


def merge_graph(typ, params, widths):
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [4]})
    g.add_node("m", type=typ, params=params)
    for k, width in enumerate(widths):
        g.add_node(f"b{k}", type="Linear", params={"out_features": width})
        g.add_edge("x", f"b{k}")
        g.add_edge(f"b{k}", "m", port=k)
    g.add_node("head", type="Linear", params={"out_features": 3})
    g.add_node("loss", type="CrossEntropyLoss", params={})
    g.add_edges_from([("m", "head"), ("head", "loss")])
    return g


@pytest.mark.parametrize(("typ", "params", "widths", "twin"), [
    ("Add", {}, [5, 5], lambda a, b, w: a + b),
    ("Add", {}, [5, 1, 5], lambda a, b, c, w: a + b + c),
    ("Multiply", {}, [5, 5, 5], lambda a, b, c, w: a * b * c),
    ("Multiply", {}, [1, 5], lambda a, b, w: a * b),
    ("Concat", {"dim": 1}, [5, 2, 3], lambda a, b, c, w: torch.cat([a, b, c], 1)),
    ("Concat", {"dim": -1}, [2, 4], lambda a, b, w: torch.cat([a, b], -1)),
])
def test_merges_in_port_order(typ, params, widths, twin):
    e = check(merge_graph(typ, params, widths), torch.randn(6, 4), labels(), "m", twin)
    assert e.inputs == tuple(f"b{k}" for k in range(len(widths)))
    assert [tuple(g.shape) for g in e.grad_inputs] == [(w,) for w in widths]


@pytest.mark.parametrize("padding_idx", [None, 1])
def test_embedding_rows_add_up_over_repeated_tokens(padding_idx):
    g = chain_graph([6], ("Embedding", {"num_embeddings": 5, "embedding_dim": 3,
                                       "padding_idx": padding_idx}),
                    *tail(), dtype="int64", loss="CrossEntropyLoss")
    tokens = torch.tensor([[1, 1, 1, 2, 0, 1]] * 3 + [[4, 4, 3, 3, 1, 0]] * 3)
    e = check(g, tokens, labels(), "n0", lambda x, w: F.embedding(x, w["weight"],
                                                                  padding_idx))
    assert e.grad_inputs == (None,)  # token ids carry no gradient
    assert torch.equal(e.terms["tokens used"], torch.tensor([0, 1, 2]))


def test_integer_values_give_no_gradient():
    g = chain_graph([6], ("Identity", {}), ("Reshape", {"shape": [2, 3]}), ("Flatten", {}),
                    ("Embedding", {"num_embeddings": 5, "embedding_dim": 3}),
                    *tail(), dtype="int64", loss="CrossEntropyLoss")
    _, trace = traced(g, torch.randint(0, 5, (4, 6)), labels(4))
    for node in ("n0", "n1", "n2"):
        with pytest.raises(ValueError, match="integer"):
            explain_node(trace, g, node)
    data = explain_node(trace, g, "x")
    assert data.grad_inputs == () and "no gradient" in data.formula


@pytest.mark.parametrize(("loss", "out", "targets", "twin"), [
    ("CrossEntropyLoss", 3, lambda n: labels(n), lambda z, t: F.cross_entropy(z, t)),
    ("NLLLoss", 3, lambda n: labels(n), lambda z, t: F.nll_loss(z, t)),
    ("MSELoss", 2, lambda n: torch.randn(n, 2), lambda z, t: F.mse_loss(z, t)),
    ("L1Loss", 2, lambda n: torch.randn(n, 2), lambda z, t: F.l1_loss(z, t)),
    ("BCEWithLogitsLoss", 1, lambda n: torch.rand(n, 1),
     lambda z, t: F.binary_cross_entropy_with_logits(z, t)),
])
def test_losses(loss, out, targets, twin):
    g = chain_graph([4], ("Linear", {"out_features": out}), loss=loss)
    t = targets(7)
    e = check(g, torch.randn(7, 4), t, "loss", lambda z, w: twin(z, t), samples=(0, 3, 6))
    assert e.formula.startswith("dL/dŷ") and "t" in e.terms


def test_cross_entropy_with_label_smoothing_over_a_sequence():
    """Scores [C, T]: the mean runs over the batch and the positions."""
    g = chain_graph([3, 4], ("Linear", {"out_features": 5}), loss="CrossEntropyLoss")
    g.nodes["loss"]["params"] = {"label_smoothing": 0.1}
    t = torch.randint(0, 3, (6, 5))
    check(g, torch.randn(6, 3, 4), t, "loss",
          lambda z, w: F.cross_entropy(z, t, label_smoothing=0.1))


def test_standardize_divides_by_the_training_std():
    g = chain_graph([2, 3], ("Linear", {"out_features": 4}), ("Standardize", {}), *tail(),
                    loss="CrossEntropyLoss")
    model = layerlab.build_model(g)
    model.n1.mean.uniform_(-1, 1)
    model.n1.std.uniform_(0.5, 3)
    x, t = torch.randn(5, 2, 3), labels(5)
    trace = layerlab.trace_step(g, model, x, t, keep=5)
    h = model.n0(x).detach().requires_grad_()
    F.cross_entropy(model.n3(model.n2((h - model.n1.mean) / model.n1.std)), t).backward()
    for s in (0, 4):
        e = explain_node(trace, g, "n1", sample=s)
        torch.testing.assert_close(e.grad_inputs[0], h.grad[s])


def test_a_frozen_layer_is_explained_from_its_kept_weights():
    """Fine-tuning freezes a layer: its weight takes no gradient but its rule needs it."""
    g = chain_graph([4], ("Linear", {"out_features": 5}), ("Tanh", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    model = layerlab.build_model(g)
    model.n0.requires_grad_(False)
    x, t = torch.randn(5, 4), labels(5)
    trace = layerlab.trace_step(g, model, x, t, keep=5)
    assert "n0.weight" in trace.frozen and "n0.weight" not in trace.param_grads
    data = x.clone().requires_grad_()
    F.cross_entropy(model(data), t).backward()
    e = explain_node(trace, g, "n0", sample=4)
    torch.testing.assert_close(e.grad_inputs[0], data.grad[4])
