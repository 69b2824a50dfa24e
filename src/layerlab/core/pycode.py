"""The standalone Python export: one readable file a person would be glad to continue by hand.

The constructor lines come from the same declarations that build the model (Ctor.source),
and the forward from the compiled fx graph, one line per node, named by node id.
"""

from __future__ import annotations

import inspect
import operator
import textwrap
from typing import Any

import torch
import torch.fx

from layerlab.core.catalogue import CATALOGUE, OPTIMIZERS
from layerlab.core.ops import allowed_name, python_call
from layerlab.core.project import Project
from layerlab.core.settings import OPTIMIZER_CLASSES, settings_from
from layerlab.core.shapes import Analysis
from layerlab.core.tying import TABLES, ties
from layerlab.core.validation import OPTIMIZER_ARGS


def python_source(project: Project, model: torch.fx.GraphModule, analysis: Analysis) -> str:
    graph = project.graph
    lines, classes = [], {}
    for node in analysis.order:
        spec = CATALOGUE[graph.nodes[node]["type"]]
        if spec.build is None or spec.is_loss or spec.type == "Input":
            continue
        ctor = spec.build(analysis.contexts[node])
        source = ctor.source()
        if not ctor.cls.__module__.startswith("torch."):  # LayerLab's own (Standardize)
            for cls in (*getattr(ctor.cls, "parts", ()), ctor.cls):  # parts first (GPTBlock)
                classes[cls] = inspect.getsource(cls)
            source = source.removeprefix("nn.")
        lines.append(f"self.{node} = {source}")
    tied = {node: f"{target}.{TABLES[graph.nodes[target]['type']]}"
            for node, target in ties(graph).items()}
    lines += [f"self.{node}.weight = self.{table}  # tied: one tensor, trained by both"
              for node, table in tied.items()]
    assert analysis.input_node is not None
    input_shape = analysis.shapes[analysis.input_node]
    dtype = analysis.dtypes[analysis.input_node]
    return TEMPLATE.format(
        name=project.name, input_shape=input_shape, dtype=dtype,
        layers="".join(f"{code}\n\n" for code in classes.values()),
        init="\n".join(textwrap.indent(line, " " * 8) for line in lines) or "        pass",
        forward=textwrap.indent(forward_source(model), " " * 8),
        train=train_source(project, analysis),
        load="".join(f"    state.setdefault({node + '.weight'!r}, state[{table!r}])"
                     "  # a tied weight is stored once\n"
                     for node, table in tied.items()),
        sample=("torch.randint(0, 2, (4, *INPUT_SHAPE))" if dtype == "int64"
                else "torch.rand(4, *INPUT_SHAPE)"),
    )


def forward_source(model: torch.fx.GraphModule) -> str:
    """One assignment per fx node; the input is called x."""
    names: dict[torch.fx.Node, str] = {}
    lines = []
    for n in model.graph.nodes:
        if n.op == "placeholder":
            names[n] = "x"
            continue
        if n.op == "output":
            lines.append(f"return {_arg(n.args[0], names)}")
            continue
        names[n] = n.name
        lines.append(f"{n.name} = {_expression(n, names)}")
    return "\n".join(lines)


def _arg(value: Any, names: dict[torch.fx.Node, str]) -> str:
    if isinstance(value, torch.fx.Node):
        return names[value]
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_arg(v, names) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _call(args: tuple[Any, ...], kwargs: dict[str, Any], names: dict[torch.fx.Node, str]) -> str:
    parts = [_arg(a, names) for a in args] + [f"{k}={_arg(v, names)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _expression(n: torch.fx.Node, names: dict[torch.fx.Node, str]) -> str:
    if n.op == "call_module":
        return f"self.{n.target}({_call(n.args, n.kwargs, names)})"
    if n.op == "call_method":
        return f"{_arg(n.args[0], names)}.{n.target}({_call(n.args[1:], n.kwargs, names)})"
    if n.target is operator.add:
        return f"{_arg(n.args[0], names)} + {_arg(n.args[1], names)}"
    if n.target is operator.mul:
        return f"{_arg(n.args[0], names)} * {_arg(n.args[1], names)}"
    if n.target is operator.getitem:
        return f"{_arg(n.args[0], names)}[{_index(n.args[1], names)}]"
    if n.target is torch.cat:
        return f"torch.cat({_call(n.args, n.kwargs, names)})"
    name = allowed_name(n.target)
    if name is not None:  # an Op node's allow-listed function
        return python_call(name, [_arg(a, names) for a in n.args],
                           {k: _arg(v, names) for k, v in n.kwargs.items()})
    raise AssertionError(f"no Python form for fx node {n.format_node()}")


def _index(item: Any, names: dict[torch.fx.Node, str]) -> str:
    """An index as a person writes it: x[:, 0], x[:, 2:8:2], chunk[1]."""
    if isinstance(item, tuple):
        return ", ".join(_index(i, names) for i in item)
    if isinstance(item, slice):
        step = "" if item.step is None else f":{item.step}"
        start = "" if item.start is None else repr(item.start)
        stop = "" if item.stop is None else repr(item.stop)
        return f"{start}:{stop}{step}"
    return _arg(item, names)


def train_source(project: Project, analysis: Analysis) -> str:
    settings = settings_from(project.training)
    args = {k: v for k, v in settings.optimizer_args.items()
            if k in OPTIMIZER_ARGS[settings.optimizer]}
    args.pop("lr", None)
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    if settings.optimizer == "momentum":
        args.setdefault("momentum", 0.9)
    opt_args = "".join(f", {k}={v!r}" for k, v in args.items())
    loss_node = analysis.loss_node
    loss = "nn.MSELoss()"
    if loss_node is not None:
        spec = CATALOGUE[project.graph.nodes[loss_node]["type"]]
        assert spec.build is not None
        loss = spec.build(analysis.contexts[loss_node]).source()
    frozen = tuple(n for n in analysis.order if project.graph.nodes[n].get("frozen"))
    return TRAIN.format(
        optimizer=OPTIMIZER_CLASSES[settings.optimizer], opt_args=opt_args,
        title=OPTIMIZERS[settings.optimizer].title, loss=loss, epochs=settings.epochs,
        batch_size=settings.batch_size, lr=settings.lr, l1=settings.l1, l2=settings.l2,
        seed=settings.seed, frozen=frozen)


TRAIN = '''def train(model: Model, x: torch.Tensor, y: torch.Tensor, epochs: int = {epochs},
          batch_size: int = {batch_size}, lr: float = {lr!r}, l1: float = {l1!r},
          l2: float = {l2!r}, seed: int = {seed},
          frozen: tuple[str, ...] = {frozen!r}) -> list[float]:
    """Train as the LayerLab project did: {title} and {loss}, plus l1·Σ|w| + l2·Σw² over
    the weight matrices; the layers named in `frozen` keep their weights (fine-tuning).
    `y` is what the loss expects (class ids for CrossEntropyLoss).
    Returns the mean training loss of each epoch."""
    torch.manual_seed(seed)
    for name in frozen:
        getattr(model, name).requires_grad_(False)
    optimizer = torch.optim.{optimizer}(
        [p for p in model.parameters() if p.requires_grad], lr=lr{opt_args})
    loss_fn = {loss}
    penalised = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    model.train()
    history = []
    for _ in range(epochs):
        order = torch.randperm(len(x))
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            penalty = sum(l1 * p.abs().sum() + l2 * p.pow(2).sum() for p in penalised)
            optimizer.zero_grad()
            (loss + penalty).backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history.append(total / len(x))
    model.eval()
    return history'''


TEMPLATE = '''"""{name} — exported from LayerLab as a standalone PyTorch model.

It needs only torch, numpy and safetensors:

    model = load_model("weights.safetensors")
    y = model(x)                      # x: [batch, *INPUT_SHAPE], {dtype}
    train(model, x, y)                # continue training

Run it as a script to load the weights and push a batch through:
    python this_file.py weights.safetensors [inputs.npy [outputs.npy]]
"""

import sys

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

INPUT_SHAPE = {input_shape!r}
INPUT_DTYPE = torch.{dtype}


{layers}class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
{init}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
{forward}


def load_model(weights_path: str) -> Model:
    """The model with its trained weights, in evaluation mode."""
    model = Model()
    state = load_file(weights_path)
{load}    model.load_state_dict(state)
    model.eval()
    return model


{train}


if __name__ == "__main__":
    weights = sys.argv[1] if len(sys.argv) > 1 else "weights.safetensors"
    model = load_model(weights)
    if len(sys.argv) > 2:
        x = torch.from_numpy(np.load(sys.argv[2])).to(INPUT_DTYPE)
    else:
        x = {sample}
    with torch.no_grad():
        y = model(x)
    if len(sys.argv) > 3:
        np.save(sys.argv[3], y.numpy())
    print(f"input {{list(x.shape)}} -> output {{list(y.shape)}}")
'''
