"""trace_step records a real step: every value and gradient equals plain autograd's."""

import copy
import weakref

import networkx as nx
import pytest
import torch

import layerlab
from layerlab.core.diagnostics import diagnose, first_nonfinite_node, gradient_verdicts
from layerlab.core.settings import settings_from
from layerlab.core.trainer import TraceRecord, Trainer

from conftest import EXAMPLES
from helpers import chain_graph


def graph_of(nodes, edges):
    g = nx.DiGraph()
    for node, typ, params in nodes:
        g.add_node(node, type=typ, params=params)
    for edge in edges:
        g.add_edge(edge[0], edge[1], **({"port": edge[2]} if len(edge) == 3 else {}))
    return g


def residual_mlp():
    g = graph_of([("x", "Input", {"shape": [6]}), ("fc1", "Linear", {"out_features": 6}),
                  ("act", "Tanh", {}), ("fc2", "Linear", {"out_features": 6}),
                  ("add", "Add", {}), ("gate", "Multiply", {}), ("head", "Linear",
                                                                   {"out_features": 3}),
                  ("loss", "CrossEntropyLoss", {})],
                 [("x", "fc1"), ("fc1", "act"), ("act", "fc2"), ("x", "add", 0),
                  ("fc2", "add", 1), ("add", "gate", 0), ("act", "gate", 1), ("gate", "head"),
                  ("head", "loss")])

    def reference(m, x):
        v = {"x": x}
        v["fc1"] = m.fc1(x)
        v["act"] = m.act(v["fc1"])
        v["fc2"] = m.fc2(v["act"])
        v["add"] = x + v["fc2"]
        v["gate"] = v["add"] * v["act"]
        v["head"] = m.head(v["gate"])
        return v
    return g, reference, lambda: torch.randn(5, 6), lambda: torch.randint(0, 3, (5,))


def inception():
    g = graph_of([("x", "Input", {"shape": [2, 8, 8]}),
                  ("a", "Conv2d", {"out_channels": 3, "kernel_size": 1}),
                  ("b", "Conv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1}),
                  ("c", "MaxPool2d", {"kernel_size": 3, "stride": 1, "padding": 1}),
                  ("cat", "Concat", {"dim": 1}), ("relu", "ReLU", {}),
                  ("pool", "AdaptiveAvgPool2d", {"output_size": 1}), ("flat", "Flatten", {}),
                  ("head", "Linear", {"out_features": 4}), ("loss", "CrossEntropyLoss", {})],
                 [("x", "a"), ("x", "b"), ("x", "c"), ("a", "cat", 0), ("b", "cat", 1),
                  ("c", "cat", 2), ("cat", "relu"), ("relu", "pool"), ("pool", "flat"),
                  ("flat", "head"), ("head", "loss")])

    def reference(m, x):
        v = {"x": x, "a": m.a(x), "b": m.b(x), "c": m.c(x)}
        v["cat"] = torch.cat([v["a"], v["b"], v["c"]], dim=1)
        v["relu"] = m.relu(v["cat"])
        v["pool"] = m.pool(v["relu"])
        v["flat"] = m.flat(v["pool"])
        v["head"] = m.head(v["flat"])
        return v
    return g, reference, lambda: torch.randn(4, 2, 8, 8), lambda: torch.randint(0, 4, (4,))


def attention():
    g = graph_of([("x", "Input", {"shape": [5, 8]}), ("attn", "MultiheadAttention",
                                                       {"num_heads": 2}),
                  ("res", "Add", {}), ("norm", "LayerNorm", {}), ("mean", "Mean", {"dim": 1}),
                  ("shape", "Reshape", {"shape": [2, 4]}), ("flat", "Flatten", {}),
                  ("head", "Linear", {"out_features": 1}), ("loss", "MSELoss", {})],
                 [("x", "attn"), ("x", "res", 0), ("attn", "res", 1), ("res", "norm"),
                  ("norm", "mean"), ("mean", "shape"), ("shape", "flat"), ("flat", "head"),
                  ("head", "loss")])

    def reference(m, x):
        v = {"x": x}
        v["attn"] = m.attn(x, x, x, need_weights=False)[0]
        v["res"] = x + v["attn"]
        v["norm"] = m.norm(v["res"])
        v["mean"] = v["norm"].mean(dim=1)
        v["shape"] = v["mean"].reshape(-1, 2, 4)
        v["flat"] = m.flat(v["shape"])
        v["head"] = m.head(v["flat"])
        return v
    return g, reference, lambda: torch.randn(3, 5, 8), lambda: torch.randn(3, 1)


def cnn_batchnorm():
    g = graph_of([("x", "Input", {"shape": [1, 6, 6]}),
                  ("conv", "Conv2d", {"out_channels": 4, "kernel_size": 3}),
                  ("bn", "BatchNorm2d", {}), ("relu", "ReLU", {}), ("flat", "Flatten", {}),
                  ("fc", "Linear", {"out_features": 3}), ("loss", "CrossEntropyLoss", {})],
                 [("x", "conv"), ("conv", "bn"), ("bn", "relu"), ("relu", "flat"),
                  ("flat", "fc"), ("fc", "loss")])

    def reference(m, x):
        v = {"x": x, "conv": m.conv(x)}
        v["bn"] = m.bn(v["conv"])
        v["relu"] = m.relu(v["bn"])
        v["flat"] = m.flat(v["relu"])
        v["fc"] = m.fc(v["flat"])
        return v
    return g, reference, lambda: torch.randn(6, 1, 6, 6), lambda: torch.randint(0, 3, (6,))


CASES = {"residual-mlp": residual_mlp, "inception": inception, "attention": attention,
         "cnn-batchnorm": cnn_batchnorm}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trace_equals_plain_autograd(case):
    g, reference, make_x, make_y = CASES[case]()
    torch.manual_seed(0)
    model = layerlab.build_model(g)
    twin = copy.deepcopy(model)
    x, y = make_x(), make_y()
    loss_fn = layerlab.core.compiler.build_loss(g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trace = layerlab.trace_step(g, model, x, y, opt, keep=len(x))

    values = reference(twin, x)
    for value in values.values():
        if value.requires_grad:
            value.retain_grad()
    loss = loss_fn(values[next(g.predecessors("loss"))], y)
    loss.backward()

    torch.testing.assert_close(trace.loss, loss.detach(), rtol=0, atol=1e-6)
    order = list(nx.topological_sort(g))
    assert [n for n, _ in trace.forward] == [n for n in order if n != "loss"]
    for node, value in trace.forward:
        torch.testing.assert_close(value, values[node].detach(), rtol=0, atol=1e-6)
    grads = dict(trace.backward)
    expected = {n: v.grad for n, v in values.items() if v.grad is not None}
    assert set(grads) == set(expected)
    for node, grad in grads.items():
        torch.testing.assert_close(grad, expected[node], rtol=0, atol=1e-6)
    position = {n: i for i, (n, _) in enumerate(trace.backward)}
    for u, v in g.edges:
        if u in position and v in position:
            assert position[v] < position[u], f"{v}'s gradient must come before {u}'s"
    twin_params = dict(twin.named_parameters())
    assert set(trace.param_grads) == set(twin_params)
    for key, grad in trace.param_grads.items():
        torch.testing.assert_close(grad, twin_params[key].grad, rtol=0, atol=1e-6)
        torch.testing.assert_close(trace.updates[key], -0.1 * twin_params[key].grad,
                                   rtol=1e-5, atol=1e-7)
    node, sources = MERGE_INPUTS[case]
    assert trace.inputs[node] == sources  # in port order, for the chain rule


MERGE_INPUTS = {"residual-mlp": ("gate", ["add", "act"]), "inception": ("cat", ["a", "b", "c"]),
                "attention": ("res", ["x", "attn"]), "cnn-batchnorm": ("bn", ["conv"])}


def test_linear_chain_rule_matches_the_recorded_gradient():
    g = chain_graph([5], ("Linear", {"out_features": 4}), ("ReLU", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    model = layerlab.build_model(g)
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    trace = layerlab.trace_step(g, model, x, y, keep=7)
    src = trace.inputs["n2"][0]
    dy, inp = trace.grad("n2"), trace.output(src)
    torch.testing.assert_close(dy.T @ inp, trace.param_grads["n2.weight"])
    torch.testing.assert_close(dy.sum(0), trace.param_grads["n2.bias"])


def digits(seed=0, **training):
    project = layerlab.load_project(EXAMPLES / "digits-mlp.layerlab.json")
    g = project.graph
    g.add_node("drop", type="Dropout", params={"p": 0.3})
    g.remove_edge("relu", "fc2")
    g.add_edge("relu", "drop")
    g.add_edge("drop", "fc2")
    project.training.update(training)
    return Trainer(project, settings_from(project.training, epochs=2, seed=seed))


def test_tracing_a_step_changes_nothing_about_training():
    plain, traced = digits(), digits()
    traces = []
    traced.add_listener(lambda r: traces.append(r) if isinstance(r, TraceRecord) else None)
    traced.add_listener(lambda r: traced.request_trace() if getattr(r, "step", 0) in (2, 50)
                        and not isinstance(r, TraceRecord) else None)
    traced.request_trace()
    plain.run()
    traced.run()
    assert [t.step for t in traces] == [1, 3, 51]
    assert [r.train_loss for r in plain.history] == [r.train_loss for r in traced.history]
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, traced.model.state_dict()[key]), key


def test_traced_dropout_uses_the_real_mask():
    trainer = digits()
    twin = copy.deepcopy(trainer.model)
    rng = trainer._rng
    trace = trainer.trace_next_batch(keep=1000)
    order = torch.randperm(len(trainer.x_train), generator=torch.Generator().manual_seed(1))
    seen = {}
    twin.drop.register_forward_hook(lambda m, i, o: seen.setdefault("drop", o))
    torch.set_rng_state(rng)
    twin(trainer.x_train[order[:32]])
    assert trace.output("drop").shape == (32, 500)
    assert torch.equal(trace.output("drop") == 0, seen["drop"] == 0)
    dropped = (trace.output("relu") != 0) & (trace.output("drop") == 0)
    assert 0.2 < float(dropped.sum()) / float((trace.output("relu") != 0).sum()) < 0.4  # p=0.3


def test_memory_is_bounded_and_the_trace_says_what_it_kept():
    g = chain_graph([1000], ("Linear", {"out_features": 3000}), ("ReLU", {}),
                    ("Linear", {"out_features": 10}), loss="CrossEntropyLoss")
    model = layerlab.build_model(g)
    trace = layerlab.trace_step(g, model, torch.randn(64, 1000), torch.randint(0, 10, (64,)),
                                torch.optim.SGD(model.parameters(), lr=0.01), keep=4,
                                param_budget=100_000)
    assert trace.output("n0").shape == (4, 3000)
    assert trace.stats["n0"].shape == (64, 3000)
    assert "n0.weight" not in trace.param_grads and "n0.weight" in trace.kept[
        "params_summarised"]
    assert "n2.weight" in trace.kept["params_kept"]
    assert trace.param_stats["n0.weight"]["grad"].norm > 0
    assert trace.kept["samples"] == 4 and trace.kept["batch"] == 64


def test_diagnostics_flag_vanishing_gradients_in_a_deep_sigmoid_net():
    layers = []
    for _ in range(20):
        layers += [("Linear", {"out_features": 16}), ("Sigmoid", {})]
    g = chain_graph([16], *layers, ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    torch.manual_seed(0)
    model = layerlab.build_model(g)
    trace = layerlab.trace_step(g, model, torch.randn(32, 16), torch.randint(0, 2, (32,)))
    verdicts = diagnose(trace)
    vanishing = {v.node for v in verdicts if v.kind == "vanishing"}
    assert "n0" in vanishing and "n40" not in vanishing
    message = next(v.message for v in verdicts if v.node == "n0")
    assert message.startswith("n0: gradient norm") and "smaller than n40's — vanishing" in \
        message


def test_diagnostics_flag_exploding_gradients():
    g = chain_graph([16], *[("Linear", {"out_features": 16, "init": "kaiming_normal"})] * 30,
                    loss="MSELoss")
    torch.manual_seed(0)
    model = layerlab.build_model(g)
    trace = layerlab.trace_step(g, model, torch.randn(8, 16), torch.randn(8, 16))
    assert any(v.kind == "exploding" for v in diagnose(trace))
    assert gradient_verdicts({"a": 1.0, "b": 1.0}) == []


def test_diagnostics_name_the_first_nan_node():
    g = chain_graph([4], ("Linear", {"out_features": 4}), ("Linear", {"out_features": 4}),
                    ("Sigmoid", {}), ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    model = layerlab.build_model(g)
    with torch.no_grad():
        model.n1.weight.fill_(1e38)
    x = torch.full((3, 4), 1e3)
    assert first_nonfinite_node(model, x) == "n1"
    trace = layerlab.trace_step(g, model, x, torch.zeros(3, dtype=torch.int64))
    assert diagnose(trace)[0].node == "n1" and diagnose(trace)[0].kind == "nonfinite"


def test_dead_relus_and_saturated_tanh_are_flagged():
    g = chain_graph([4], ("Linear", {"out_features": 8}), ("ReLU", {}),
                    ("Linear", {"out_features": 8}), ("Tanh", {}),
                    ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    model = layerlab.build_model(g)
    with torch.no_grad():
        model.n0.bias.fill_(-100.0)
        model.n2.bias.fill_(50.0)
    trace = layerlab.trace_step(g, model, torch.randn(16, 4), torch.randint(0, 2, (16,)))
    kinds = {(v.node, v.kind) for v in diagnose(trace)}
    assert ("n1", "dead") in kinds and ("n3", "saturated") in kinds


def test_a_dropped_trace_frees_everything_it_kept():
    """A trace is freed as soon as nobody holds it: its hooks must not keep the recorder
    (and every value it kept) alive — 9 MB leaked per traced MNIST step before."""
    trainer = digits()
    g = chain_graph([20], ("Linear", {"out_features": 8}), ("ReLU", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    model = layerlab.build_model(g)
    for make in (lambda: layerlab.trace_step(g, model, torch.randn(16, 20),
                                             torch.randint(0, 3, (16,)),
                                             torch.optim.Adam(model.parameters())),
                 lambda: trainer.trace_next_batch(keep=4)):
        trace = make()
        alive = weakref.ref(trace.weights[next(iter(trace.weights))])
        del trace
        assert alive() is None


def test_statistics_count_zeros_and_sizes_as_torch_does():
    x = torch.randn(300, 40).relu()
    x[0, :7] = float("inf")
    for t in (x[1:], x):
        stats = layerlab.core.tracer.Stats.of(t)
        assert stats.zeros == pytest.approx(int((t == 0).sum()) / t.numel(), abs=1e-12)
    stats = layerlab.core.tracer.Stats.of(x[1:] - 0.5)
    assert stats.mean_abs == pytest.approx(float((x[1:] - 0.5).double().abs().mean()), rel=1e-5)


def test_the_remembered_loss_follows_the_loss_node():
    g = chain_graph([6], ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    loss = next(n for n, d in g.nodes(data=True) if d["type"] == "CrossEntropyLoss")
    assert layerlab.core.tracer.graph_loss(g).label_smoothing == 0.0
    g.nodes[loss]["params"] = {"label_smoothing": 0.25}
    assert layerlab.core.tracer.graph_loss(g).label_smoothing == 0.25
