"""The chain rule of the composite layers (attention, encoder block, LSTM, GRU), of whole
bundled examples, and of steps the trainer traced — checked against autograd."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import layerlab
from explain_twins import check, traced
from layerlab.core.explain import explain_node
from layerlab.core.settings import settings_from
from layerlab.core.trainer import Trainer

from conftest import EXAMPLES
from helpers import chain_graph


def labels(n=5):
    return torch.randint(0, 3, (n,))


def module_twin(g, node, call=lambda m, w, x: functional_call(m, w, (x,))):
    """The node's own torch module class, fresh, run on the twin's leaf tensors."""
    model = layerlab.build_model(g)
    module = copy.deepcopy(getattr(model, node))
    return lambda x, w: call(module, w, x)


def attention_call(m, w, x):
    return functional_call(m, w, (x, x, x), {"need_weights": False})[0]


def recurrent_call(m, w, x):
    return functional_call(m, w, (x,))[0]


def sequence_graph(typ, params, shape=(5, 8)):
    return chain_graph(list(shape), (typ, params), ("Mean", {"dim": 1}),
                       ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")


@pytest.mark.parametrize("params", [
    {"num_heads": 2}, {"num_heads": 1, "bias": False}, {"num_heads": 4, "dropout": 0.3},
])
def test_multihead_attention(params):
    g = sequence_graph("MultiheadAttention", params)
    e = check(g, torch.randn(5, 5, 8), labels(), "n0",
              module_twin(g, "n0", attention_call), seed=3)
    names = [p.name for p in e.parts]
    assert names[:5] == ["Q", "K", "V", "scores", "softmax"]
    assert names[-2:] == ["weighted sum", "output projection"]
    assert ("attention dropout" in names) == ("dropout" in params)


@pytest.mark.parametrize("params", [
    {"nhead": 2, "dim_feedforward": 12},  # post-LN, ReLU, dropout 0.1 (torch's default)
    {"nhead": 2, "dim_feedforward": 12, "norm_first": True, "activation": "gelu",
     "dropout": 0.25},
    {"nhead": 4, "dim_feedforward": 6, "dropout": 0.0, "bias": False},
])
def test_transformer_encoder_layer(params):
    g = sequence_graph("TransformerEncoderLayer", params)
    e = check(g, torch.randn(5, 5, 8), labels(), "n0", module_twin(g, "n0"), seed=5,
              atol=1e-5)
    names = [p.name for p in e.parts]
    assert {"attention: Q", "attention: softmax", "x + attention",
            "feed-forward hidden"} <= set(names)


@pytest.mark.parametrize(("typ", "params"), [
    ("LSTM", {"hidden_size": 4}),
    ("LSTM", {"hidden_size": 3, "num_layers": 2, "dropout": 0.4, "bidirectional": True}),
    ("GRU", {"hidden_size": 4, "bias": False}),
    ("GRU", {"hidden_size": 3, "num_layers": 3, "dropout": 0.3, "bidirectional": True}),
])
def test_recurrent_layers(typ, params):
    g = sequence_graph(typ, params, shape=(6, 5))
    e = check(g, torch.randn(5, 6, 5), labels(), "n0",
              module_twin(g, "n0", recurrent_call), seed=7, atol=1e-5)
    gates = "ifgoch" if typ == "LSTM" else "rznh"
    assert [p.name[len("layer 0: "):][0] for p in e.parts[:len(gates)]] == list(gates)
    assert all(p.value.shape == p.grad.shape for p in e.parts)


def test_attention_parts_carry_their_own_gradients():
    """Q, the scores, the softmax and the weighted sum: each part's gradient equals
    autograd's on a hand-written attention."""
    g = sequence_graph("MultiheadAttention", {"num_heads": 2})
    x = torch.randn(4, 5, 8)
    model, trace = traced(g, x, labels(4))
    w = {k: p.detach() for k, p in model.n0.named_parameters()}
    q, k, v = F.linear(x, w["in_proj_weight"], w["in_proj_bias"]).chunk(3, dim=-1)
    q, k, v = (t.reshape(4, 5, 2, 4).transpose(1, 2).requires_grad_() for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(4)
    weights = torch.softmax(scores, -1)
    mixed = (weights @ v).transpose(1, 2).reshape(4, 5, 8)
    out = F.linear(mixed, w["out_proj.weight"], w["out_proj.bias"])
    for t in (scores, weights, mixed):
        t.retain_grad()
    (out * trace.grad("n0")).sum().backward()
    parts = {p.name: p for p in explain_node(trace, g, "n0", sample=2).parts}
    for name, t in [("Q", q), ("K", k), ("V", v), ("scores", scores), ("softmax", weights),
                    ("weighted sum", mixed)]:
        torch.testing.assert_close(parts[name].grad, t.grad[2], atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(parts[name].value, t.detach()[2], atol=1e-6, rtol=1e-4)


def test_lstm_cell_and_hidden_gradients_through_time():
    g = sequence_graph("LSTM", {"hidden_size": 3}, shape=(4, 2))
    x = torch.randn(3, 4, 2)
    model, trace = traced(g, x, labels(3))
    w = {k: p.detach().requires_grad_() for k, p in model.n0.named_parameters()}
    h = c = torch.zeros(3, 3)
    hs, cs = [], []
    for t in range(4):
        gates = x[:, t] @ w["weight_ih_l0"].T + h @ w["weight_hh_l0"].T + w["bias_ih_l0"] \
            + w["bias_hh_l0"]
        i, f, gg, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        c.retain_grad()
        h.retain_grad()
        hs.append(h)
        cs.append(c)
    (torch.stack(hs, 1) * trace.grad("n0")).sum().backward()
    parts = {p.name: p for p in explain_node(trace, g, "n0", sample=1).parts}
    for name, seq in [("layer 0: h (hidden state)", hs), ("layer 0: c (cell state)", cs)]:
        expected = torch.stack([t.grad[1] for t in seq])
        torch.testing.assert_close(parts[name].grad, expected, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("example", ["resnet-block", "tiny-transformer", "spiral",
                                     "lenet5"])
def test_every_node_of_a_bundled_example_agrees_with_autograd(example):
    """Whole graphs (residual adds, BatchNorm, an encoder with dropout, token ids): every
    node's rule matches what autograd recorded, and dL/d(data) is autograd's."""
    project = layerlab.load_project(EXAMPLES / f"{example}.layerlab.json")
    g = project.graph
    shape = next(d["params"] for _, d in g.nodes(data=True) if d["type"] == "Input")
    integer = shape.get("dtype") == "int64"
    x = torch.randint(0, 16, (4, *shape["shape"])) if integer else \
        torch.randn(4, *shape["shape"])
    t = torch.randint(0, 2, (4,))
    model, trace = traced(g, x, t, seed=1)
    for node in g:
        e = explain_node(trace, g, node, sample=3)
        assert e.matches or e.max_diff is None, (node, e.max_diff, e.scale)
        assert e.max_diff is not None or g.nodes[node]["type"] in ("Input", "Embedding") \
            or not e.dy_recorded
    if not integer:
        model.zero_grad()
        torch.manual_seed(1)
        data = x.clone().requires_grad_()
        F.cross_entropy(model(data), t).backward()
        source = next(n for n, d in g.nodes(data=True) if d["type"] == "Input")
        e = explain_node(trace, g, source, sample=3)
        torch.testing.assert_close(e.terms[f"dL/d{source}"], data.grad[3], atol=1e-6,
                                   rtol=1e-4)


def test_a_trainer_step_with_l1_l2_and_one_hot_targets():
    """MSE on classes sees one-hot targets; L1/L2 add to autograd's dL/dW but not to the
    loss's own gradient, which the rule gives."""
    project = layerlab.load_project(EXAMPLES / "digits-mlp.layerlab.json")
    g = project.graph
    loss = next(n for n, d in g.nodes(data=True) if d["type"] == "CrossEntropyLoss")
    g.nodes[loss].update(type="MSELoss", params={})
    project.training.update(l1=1e-3, l2=1e-2)
    trainer = Trainer(project, settings_from(project.training, epochs=1, seed=0,
                                             batch_size=16))
    trace = trainer.trace_next_batch(keep=16)
    assert trace.loss_targets.shape == (16, 10)  # one-hot, as the loss saw them
    for node in g:
        e = explain_node(trace, g, node, sample=5)
        assert e.max_diff is None or e.matches, (node, e.max_diff)
    fc = next(n for n, d in g.nodes(data=True) if d["type"] == "Linear")
    e = explain_node(trace, g, fc)
    w = trace.weights[f"{fc}.weight"]
    penalty = 1e-3 * torch.sign(w) + 2e-2 * w
    torch.testing.assert_close(e.param_grads[f"{fc}.weight"] + penalty,
                               trace.param_grads[f"{fc}.weight"], atol=1e-6, rtol=1e-4)


def test_a_sample_that_was_not_kept_is_refused_in_one_sentence():
    g = chain_graph([3], ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    _, trace = traced(g, torch.randn(6, 3), torch.randint(0, 2, (6,)), keep=2)
    with pytest.raises(ValueError, match="sample 4 was not kept"):
        explain_node(trace, g, "n0", sample=4)
    assert explain_node(trace, g, "n0", sample=1).param_grads is None


def test_a_step_in_bfloat16_agrees_to_bfloat16_precision():
    project = layerlab.load_project(EXAMPLES / "resnet-block.layerlab.json")
    g = project.graph
    model = layerlab.build_model(g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trace = layerlab.trace_step(g, model, torch.randn(6, 1, 8, 8), labels(6), keep=6)
    for node in g:
        e = explain_node(trace, g, node, sample=2)
        assert e.max_diff is None or e.matches, (node, e.max_diff, e.scale)
    assert explain_node(trace, g, "fc").rtol == 2e-2


def test_formulas_name_values_after_their_nodes_and_the_output_y_hat():
    g = layerlab.load_project(EXAMPLES / "resnet-block.layerlab.json").graph
    _, trace = traced(g, torch.randn(4, 1, 8, 8), labels(4))
    fc, bn, add, loss = (explain_node(trace, g, n) for n in ("fc", "bn1", "add", "loss"))
    assert fc.formula.startswith("dL/dflatten = dL/dŷ·W")
    assert "x̂ = (conv1 − μ_batch)/σ" in bn.formula and "dL/dbn1" in bn.formula
    assert add.formula.startswith("dL/drelu1 = dL/dadd;  dL/dbn3 = dL/dadd")
    assert loss.formula.startswith("dL/dŷ = (softmax(ŷ) − onehot(t)) / N, N = 4")
    assert set(loss.terms) == {"ŷ", "t", "softmax(ŷ)", "onehot(t)", "dL/dŷ"}
    assert all("{" not in e.formula for e in (fc, bn, add, loss))
