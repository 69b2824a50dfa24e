"""explain_update: the update rule with the numbers of a traced step gives the weight torch's
own optimizer step gave, for every optimizer and its options, at the first step and later
(state not zero), with weight decay, L1/L2 and clipping; the gradient it splits into the
loss's share and the penalty terms matches autograd of the loss alone."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

import layerlab
from layerlab.core.catalogue import OPTIMIZERS
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.trainer import Trainer

from helpers import chain_graph

GRAPH = chain_graph([5], ("Linear", {"out_features": 4}), ("Tanh", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
PLACES = [("n0.weight", (1, 2)), ("n0.bias", (3,)), ("n2.weight", (2, 0))]

CASES: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.5}),
    "sgd-decay": (torch.optim.SGD, {"lr": 0.5, "weight_decay": 0.3}),
    "momentum": (torch.optim.SGD, {"lr": 0.5, "momentum": 0.9}),
    "momentum-decay-dampening": (torch.optim.SGD, {"lr": 0.5, "momentum": 0.9,
                                                   "weight_decay": 0.3, "dampening": 0.4}),
    "nesterov": (torch.optim.SGD, {"lr": 0.5, "momentum": 0.8, "nesterov": True,
                                   "weight_decay": 0.3}),
    "adagrad": (torch.optim.Adagrad, {"lr": 0.3}),
    "adagrad-decay": (torch.optim.Adagrad, {"lr": 0.3, "weight_decay": 0.3, "lr_decay": 0.5,
                                            "initial_accumulator_value": 0.2}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 0.01}),
    "rmsprop-centered-momentum-decay": (torch.optim.RMSprop, {
        "lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.3, "alpha": 0.9}),
    "adam": (torch.optim.Adam, {"lr": 0.05}),
    "adam-decay-amsgrad": (torch.optim.Adam, {"lr": 0.05, "weight_decay": 0.3,
                                              "amsgrad": True}),
    "adamw": (torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.5}),
}


def traced_steps(case: str, steps: int) -> list[layerlab.StepTrace]:
    cls, args = CASES[case]
    torch.manual_seed(0)
    model = layerlab.build_model(GRAPH)
    optimizer = cls(model.parameters(), **args)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    return [layerlab.trace_step(GRAPH, model, x, y, optimizer) for _ in range(steps)]


def assert_rule_gives_the_real_step(e: layerlab.UpdateExplanation) -> None:
    """The rule's update and torch's agree to float32 rounding, and the weight it lands
    on too; the update is compared on its own so that a small wrong term cannot hide
    inside the weight's size."""
    w = e.terms["w"]
    real, rule = e.actual - w, e.predicted - w
    assert abs(real) > 1e-6  # a step that moved the weight
    assert rule == pytest.approx(real, rel=1e-4, abs=1e-9), e.steps
    assert e.difference < 1e-6


@pytest.mark.parametrize("case", list(CASES))
def test_the_rule_gives_the_weight_torch_gave_at_the_first_and_a_later_step(case):
    first, _, third = traced_steps(case, 3)
    for key, index in PLACES:
        e1 = layerlab.explain_update(first, key, index)
        assert_rule_gives_the_real_step(e1)
        e3 = layerlab.explain_update(third, key, index)
        assert_rule_gives_the_real_step(e3)
        assert e3.terms["w"] == pytest.approx(float(third.weights[key][index]))
        assert e3.actual == pytest.approx(e3.terms["w"] + float(third.updates[key][index]))
        if e3.step is not None:  # optimizers that count their steps
            assert (e1.step, e3.step) == (1, 3)
    before = {k: v for k, v in e3.terms.items() if k.endswith("(before)")}
    expected_state = 0 if case in ("sgd", "sgd-decay") else 1
    assert len([v for v in before.values() if v != 0]) >= expected_state, before


def test_the_state_before_the_step_is_the_optimizers_own():
    """m and v before step 3 are what torch's Adam held after step 2."""
    cls, args = CASES["adam"]
    torch.manual_seed(0)
    model = layerlab.build_model(GRAPH)
    optimizer = cls(model.parameters(), **args)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(2):
        layerlab.trace_step(GRAPH, model, x, y, optimizer)
    state = optimizer.state[model.n0.weight]
    m, v = float(state["exp_avg"][1, 2]), float(state["exp_avg_sq"][1, 2])
    e = layerlab.explain_update(layerlab.trace_step(GRAPH, model, x, y, optimizer),
                                "n0.weight", (1, 2))
    assert (e.terms["m (before)"], e.terms["v (before)"]) == (m, v)
    assert e.terms["m̂"] == pytest.approx(e.terms["m"] / (1 - 0.9 ** 3))
    assert e.terms["v̂"] == pytest.approx(e.terms["v"] / (1 - 0.999 ** 3))


@pytest.mark.parametrize("name", ["sgd", "momentum", "adagrad", "rmsprop", "adam"])
def test_the_formula_is_the_catalogues_rule_when_nothing_is_added(name):
    case = {"momentum": "momentum", "sgd": "sgd"}.get(name, name)
    _, second = traced_steps(case, 2)
    e = layerlab.explain_update(second, "n0.weight", (0, 0))
    assert e.optimizer == name
    assert e.formula == OPTIMIZERS[name].rule


def numbers(line: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+\.?\d*(?:e[-+]\d+)?", line)]


def test_the_worked_lines_put_the_terms_into_the_rule():
    _, second = traced_steps("momentum", 2)
    e = layerlab.explain_update(second, "n0.weight", (1, 2))
    t = e.terms
    assert e.formula == "v ← μ·v + g;  w ← w − η·v"
    assert e.steps[0].startswith("v ← 0.9·")
    mu, v0, g, v = numbers(e.steps[0])
    assert (mu, v0, g, v) == pytest.approx((0.9, t["v (before)"], t["g"], t["v"]), rel=1e-5)
    assert v == pytest.approx(mu * v0 + g, rel=1e-5)
    w, lr, v_again, new = numbers(e.steps[1])
    assert (w, lr, v_again, new) == pytest.approx((t["w"], 0.5, v, e.predicted), rel=1e-5)
    assert "(-" in " ".join(e.steps) or min(v0, g, v, w) >= 0  # negatives in parentheses


def trainer_with(optimizer: dict[str, Any], **training: Any) -> Trainer:
    g = chain_graph([64], ("Linear", {"out_features": 12}), ("ReLU", {}),
                    ("Linear", {"out_features": 10}), loss="CrossEntropyLoss")
    project = Project(graph=g)
    project.training.update({"dataset": {"name": "digits", "options": {},
                                         "validation_split": 0.0},
                             "optimizer": optimizer, "batch_size": 16, "device": "cpu",
                             **training})
    return Trainer(project, settings_from(project.training))


def loss_only_gradient(trainer: Trainer, trace: layerlab.StepTrace) -> dict[str, torch.Tensor]:
    """dL/dw of the loss alone (no penalty), on a twin with the weights before the step."""
    twin = layerlab.build_model(trainer.project.graph)
    twin.load_state_dict(trace.weights)
    x, y = trace.output("x"), trace.targets
    loss = torch.nn.functional.cross_entropy(twin(x), y)
    return dict(zip(trace.weights, torch.autograd.grad(loss, list(twin.parameters())),
                    strict=True))


@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "lr": 0.1, "weight_decay": 0.1},
    {"name": "momentum", "lr": 0.1, "nesterov": True, "weight_decay": 0.1},
    {"name": "adagrad", "lr": 0.1, "weight_decay": 0.1},
    {"name": "rmsprop", "lr": 0.01, "weight_decay": 0.1},
    {"name": "adam", "lr": 0.01, "weight_decay": 0.1},
    {"name": "adamw", "lr": 0.01}], ids=lambda o: o["name"])
def test_the_trainers_step_with_l1_l2_and_clipping_is_explained_term_by_term(optimizer):
    """The trainer's own optimizers (torch's fused or multi-tensor implementations)."""
    trainer = trainer_with(optimizer, l1=0.01, l2=0.05, clip_grad_norm=0.5)
    trainer.trace_next_batch(keep=16)
    trace = trainer.trace_next_batch(keep=16)  # a later step: the state is not zero
    twin = loss_only_gradient(trainer, trace)
    unit = int(trace.param_grads["n0.bias"].abs().argmax())  # a unit that is not dead …
    pixel = int(trace.param_grads["n0.weight"][unit].abs().argmax())  # … and a lit pixel
    e = layerlab.explain_update(trace, "n0.weight", (unit, pixel))
    assert_rule_gives_the_real_step(e)
    w = e.terms["w"]
    assert e.terms["dL/dw"] == pytest.approx(float(twin["n0.weight"][unit, pixel]), abs=1e-7)
    assert e.terms["λ₁·sign(w)"] == 0.01 * (1 if w > 0 else -1)
    assert e.terms["2λ₂·w"] == pytest.approx(2 * 0.05 * w)
    assert e.terms["g"] == pytest.approx(float(trace.param_grads["n0.weight"][unit, pixel]))
    assert 0 < e.terms["c"] < 1  # the clipping was on …
    assert e.terms["c·g"] == pytest.approx(e.terms["c"] * e.terms["g"])
    assert e.formula.startswith("g = dL/dw + λ₁·sign(w) + 2λ₂·w;  c = min(1, max norm / ‖g‖);"
                                "  g ← c·g;  ")
    # … and biases are not penalised: their g is the loss's alone
    bias = layerlab.explain_update(trace, "n0.bias", (unit,))
    assert_rule_gives_the_real_step(bias)
    assert "λ₁" not in bias.terms and bias.terms["dL/dw"] == bias.terms["g"]


def test_a_frozen_layer_a_parameter_too_big_to_keep_and_bad_places_are_refused_in_words():
    cls, args = CASES["adam"]
    torch.manual_seed(0)
    model = layerlab.build_model(GRAPH)
    model.n0.requires_grad_(False)
    optimizer = cls(model.n2.parameters(), **args)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    trace = layerlab.trace_step(GRAPH, model, x, y, optimizer, param_budget=3)
    with pytest.raises(ValueError, match=r"^n0\.weight: its update cannot be explained, the "
                                         "parameter is frozen$"):
        layerlab.explain_update(trace, "n0.weight", (0, 0))
    with pytest.raises(ValueError, match=r"^n2\.weight: .* too large for the trace to keep"):
        layerlab.explain_update(trace, "n2.weight", (0, 0))
    with pytest.raises(ValueError, match=r"^fc9\.weight: no such parameter"):
        layerlab.explain_update(trace, "fc9.weight", (0, 0))
    trace = layerlab.trace_step(GRAPH, model, x, y, optimizer)
    with pytest.raises(ValueError, match=r"^n2\.weight: index 3,0 is outside its shape 3×4 "):
        layerlab.explain_update(trace, "n2.weight", (3, 0))
    with pytest.raises(ValueError, match=r"index 1 is outside its shape 3×4"):
        layerlab.explain_update(trace, "n2.weight", (1,))
    no_step = layerlab.trace_step(GRAPH, model, x, y)
    with pytest.raises(ValueError, match=r"no optimizer step to explain"):
        layerlab.explain_update(no_step, "n2.weight", (0, 0))


def test_a_step_that_only_accumulated_gradients_has_no_update_to_explain():
    trainer = trainer_with({"name": "adam", "lr": 0.01}, accumulate=2)
    first = trainer.trace_next_batch()  # the first batch of a group: no optimizer step
    with pytest.raises(ValueError, match="in the middle of a gradient-accumulation group"):
        layerlab.explain_update(first, "n0.weight", (0, 0))
    second = trainer.trace_next_batch()  # the group's last: the step of both batches
    unit = int(second.param_grads["n0.bias"].abs().argmax())
    assert_rule_gives_the_real_step(layerlab.explain_update(second, "n0.bias", (unit,)))
