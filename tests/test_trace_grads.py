"""A traced step keeps the parameters' gradients without copying them when nothing writes
into them before the trace is finished: torch's own optimizers in their one-tensor-at-a-time
form only read them (checked here with the tensors' version counters); the others (foreach,
fused) are copied, and the recorded gradient is autograd's in both cases."""

import networkx as nx
import pytest
import torch

import layerlab
from layerlab.core.tracer import only_reads_grads

READERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "nesterov, weight decay": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                                        weight_decay=0.1),
    "adam amsgrad, weight decay": lambda p: torch.optim.Adam(p, lr=0.1, amsgrad=True,
                                                             weight_decay=0.1),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.1),
    "adagrad, weight decay": lambda p: torch.optim.Adagrad(p, lr=0.1, weight_decay=0.1),
    "rmsprop centred, momentum": lambda p: torch.optim.RMSprop(p, lr=0.1, centered=True,
                                                               momentum=0.9, weight_decay=0.1),
}
WRITERS = {  # this one adds the momentum into the gradients in place
    "sgd foreach nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                                      foreach=True),
    "adam fused": lambda p: torch.optim.Adam(p, lr=0.1, fused=True),
}


def mlp() -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node("input", type="Input", params={"shape": [6]})
    g.add_node("fc", type="Linear", params={"out_features": 5})
    g.add_node("relu", type="ReLU", params={})
    g.add_node("out", type="Linear", params={"out_features": 3})
    g.add_node("loss", type="CrossEntropyLoss", params={})
    nx.add_path(g, ["input", "fc", "relu", "out", "loss"])
    return g


@pytest.mark.parametrize("name", list(READERS))
def test_stock_optimizers_only_read_the_gradients(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = READERS[name](model.parameters())
    assert only_reads_grads(optimizer)
    for _ in range(2):  # the second step has state (momentum, averages)
        optimizer.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        grad = model.weight.grad
        version, before = grad._version, grad.clone()
        optimizer.step()
        assert grad._version == version and torch.equal(grad, before)


@pytest.mark.parametrize("name", [*READERS, *WRITERS])
def test_the_recorded_gradient_is_autograds(name):
    """Whether kept or copied, each parameter's recorded gradient is the one autograd gives
    for the weights before the step."""
    make = {**READERS, **WRITERS}[name]
    torch.manual_seed(1)
    g = mlp()
    model = layerlab.build_model(g)
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    optimizer = make(model.parameters())
    assert only_reads_grads(optimizer) == (name in READERS)
    layerlab.trace_step(g, model, x, y, optimizer)  # the optimizer now has state
    params = dict(model.named_parameters())
    loss = torch.nn.functional.cross_entropy(model(x), y)
    expected = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    trace = layerlab.trace_step(g, model, x, y, optimizer)
    for key, grad in expected.items():
        torch.testing.assert_close(trace.param_grads[key], grad)
