"""Gradient-health verdicts: none on healthy networks, the right one on broken networks.

A verdict a person learns to ignore is worse than none, so the healthy cases are real
training runs (steps taken by the trainer, traced as the step-through traces them), and the
broken cases are each broken in one known way."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import layerlab
from layerlab.core.datasets import Dataset, load_dataset
from layerlab.core.diagnostics import (
    HealthMonitor,
    Verdict,
    diagnose,
    judged_weights,
    weight_update_ratios,
)
from layerlab.core.insight import trace_sample
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.trainer import HealthRecord, Trainer, TrainingError

from conftest import EXAMPLES
from helpers import chain_graph

DATASETS = {"spiral": ([2], 2, {"n_samples": 256}), "digits": ([64], 10, {})}


def mlp_trainer(dataset: str, optimizer: dict[str, Any], *hidden: tuple[str, dict[str, Any]],
                seed: int = 0) -> Trainer:
    shape, classes, options = DATASETS[dataset]
    g = chain_graph(shape, *hidden, ("Linear", {"out_features": classes}),
                    loss="CrossEntropyLoss")
    project = Project(graph=g)
    project.training.update({"dataset": {"name": dataset, "options": options,
                                         "validation_split": 0.0},
                             "optimizer": optimizer, "batch_size": 32, "device": "cpu",
                             "seed": seed})
    return Trainer(project, settings_from(project.training))


def relu_mlp(width: int = 32) -> list[tuple[str, dict[str, Any]]]:
    layer = ("Linear", {"out_features": width, "init": "kaiming_uniform"})
    return [layer, ("ReLU", {}), layer, ("ReLU", {})]


def kinds(verdicts: list[Verdict]) -> set[tuple[str, str]]:
    return {(v.node, v.kind) for v in verdicts}


# -- healthy ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("optimizer", [{"name": "adam", "lr": 0.003},
                                       {"name": "momentum", "lr": 0.05}], ids=["adam", "sgd"])
def test_a_well_initialised_relu_mlp_gets_no_verdict_while_it_learns(dataset, optimizer):
    trainer = mlp_trainer(dataset, optimizer, *relu_mlp())
    before, _ = trainer.evaluate(trainer.x_train, trainer.y_train)
    for _ in range(6):
        assert diagnose(trainer.trace_next_batch(keep=4)) == [], trainer.step
    after, _ = trainer.evaluate(trainer.x_train, trainer.y_train)
    assert before is not None and after is not None
    assert after < before  # it is learning, not standing still


def mnist_from_digits() -> Dataset:
    """MNIST cannot be downloaded here: the digits, scaled up to MNIST's 28×28, stand in
    for it (handwritten digits in [0, 1], the same shapes and classes)."""
    digits = load_dataset("digits")
    x = torch.nn.functional.interpolate(digits.x.reshape(-1, 1, 8, 8), size=(28, 28),
                                        mode="bilinear")
    return Dataset("mnist", x, digits.y, "classification", digits.classes, shapes=((784,),))


def health_records(trainer: Trainer, count: int) -> list[HealthRecord]:
    records: list[HealthRecord] = []
    trainer.health_every = 1
    trainer.add_listener(lambda r: records.append(r) if isinstance(r, HealthRecord) else None)
    while len(records) < count:
        trainer.train_one_batch()
    return records


@pytest.mark.parametrize("example", sorted(p.name.split(".")[0]
                                           for p in EXAMPLES.glob("*.layerlab.json")))
def test_the_bundled_examples_with_their_own_settings_get_no_verdict(example):
    """Not on the first traced step, not over the first 200 health records, not on one
    sample as the step-through traces a sample picked in the dataset preview."""
    project = layerlab.load_project(EXAMPLES / f"{example}.layerlab.json")
    mnist = project.training["dataset"]["name"] == "mnist"
    trainer = Trainer(project, settings_from(project.training, device="cpu"),
                      data=mnist_from_digits() if mnist else None)
    monitor = HealthMonitor(judged_weights(trainer.model))
    first = trainer.trace_next_batch(keep=2)
    assert first.optimizer_state is not None
    assert diagnose(first, monitor.judged) == []
    verdicts = [v for record in health_records(trainer, 200) for v in monitor.add(record)]
    assert verdicts == []
    # about half of a healthy ReLU layer is zero for one sample: that says nothing of dead
    # units
    for index in range(2):
        sample = trace_sample(project.graph, trainer.model, trainer.objective, trainer.data,
                              index, trainer.device)
        assert diagnose(sample) == [], index


def test_a_first_adam_step_is_not_too_large():
    """Adam's first step moves every weight by about the learning rate, whatever its
    gradient: here more than a fifth of the weights' size, which from SGD would be too much."""
    trainer = mlp_trainer("digits", {"name": "adam", "lr": 0.03}, *relu_mlp())
    trace = trainer.trace_next_batch()
    assert max(weight_update_ratios(trace).values()) > 0.2
    assert diagnose(trace, judged_weights(trainer.model)) == []


def test_a_confident_network_is_not_called_vanishing():
    """Near-zero loss gives tiny gradients everywhere: small, but not vanishing."""
    trainer = mlp_trainer("spiral", {"name": "sgd", "lr": 0.1}, *relu_mlp())
    x = trainer.x_train[:32]
    with torch.no_grad():  # huge logits; the labels are what the model says
        trainer.model.n4.weight.mul_(1e4)
        logits = trainer.model(x)
        sure = torch.nn.functional.cross_entropy(logits, logits.argmax(1))
    assert float(sure) < 1e-6
    trace = layerlab.trace_step(trainer.project.graph, trainer.model, x, logits.argmax(1))
    norms = [s["grad"].norm for s in trace.param_stats.values()]
    assert max(norms) < 1e-4  # tiny everywhere …
    assert diagnose(trace) == []  # … but not vanishing on the way back


@pytest.mark.parametrize(("saturated_units", "flagged"), [(6, False), (8, True)])
def test_saturation_is_flagged_only_when_nearly_every_output_sits_at_a_bound(
        saturated_units, flagged):
    g = chain_graph([4], ("Linear", {"out_features": 8}), ("Tanh", {}),
                    ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    torch.manual_seed(0)
    model = layerlab.build_model(g)
    with torch.no_grad():
        model.n0.weight.mul_(0.1)
        model.n0.bias.zero_()
        model.n0.bias[:saturated_units] = 50.0
    trace = layerlab.trace_step(g, model, torch.randn(16, 4), torch.randint(0, 2, (16,)))
    assert trace.stats["n1"].saturated == pytest.approx(saturated_units / 8)
    assert (("n1", "saturated") in kinds(diagnose(trace))) == flagged


# -- broken -----------------------------------------------------------------------------------
def monitored(trainer: Trainer, count: int) -> list[set[tuple[str, str]]]:
    """What a HealthMonitor shows after each of the first `count` health records."""
    monitor = HealthMonitor(judged_weights(trainer.model))
    return [kinds(monitor.add(r)) for r in health_records(trainer, count)]


def test_a_20_layer_sigmoid_mlp_is_flagged_vanishing_at_its_first_layers():
    stack = [("Linear", {"out_features": 16}), ("Sigmoid", {})] * 20
    trainer = mlp_trainer("spiral", {"name": "sgd", "lr": 0.1}, *stack)
    verdicts = diagnose(trainer.trace_next_batch(), judged_weights(trainer.model))
    vanishing = [v.node for v in verdicts if v.kind == "vanishing"]
    assert vanishing[:3] == ["n0", "n2", "n4"] and "n38" not in vanishing
    assert vanishing == sorted(vanishing, key=lambda n: int(n[1:]))  # from the bottom up
    barely = {v.node for v in verdicts if v.kind == "update-small"}
    assert barely <= set(vanishing)  # … so those layers barely learn
    assert {v.kind for v in verdicts} <= {"vanishing", "update-small"}
    shown = monitored(trainer, 4)
    assert shown[1] == set() and ("n0", "vanishing") in shown[2]  # three records in a row


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_learning_rate_of_10_is_flagged_on_the_weights_it_throws_about(optimizer):
    trainer = mlp_trainer("spiral", {"name": optimizer, "lr": 10.0}, *relu_mlp())
    verdicts = diagnose(trainer.trace_next_batch(), judged_weights(trainer.model))
    assert verdicts and {v.kind for v in verdicts} <= {"update-large", "exploding"}
    assert {v.node for v in verdicts} <= {"n0", "n2", "n4"}  # the layers with weights
    fresh = mlp_trainer("spiral", {"name": optimizer, "lr": 10.0}, *relu_mlp())
    shown = set().union(*monitored(fresh, 4))
    assert {kind for _, kind in shown} & {"update-large", "exploding"}


def test_relu_units_whose_bias_starts_at_minus_10_are_flagged_dead():
    trainer = mlp_trainer("digits", {"name": "adam", "lr": 0.001}, *relu_mlp())
    with torch.no_grad():
        trainer.model.n2.bias.fill_(-10.0)  # the second ReLU never opens
    found = kinds(diagnose(trainer.trace_next_batch()))
    assert ("n3", "dead") in found and ("n1", "dead") not in found
    assert {"n0", "n2"} <= {node for node, kind in found if kind == "vanishing"}


def test_a_sigmoid_fed_inputs_times_1000_is_flagged_saturated():
    spiral = load_dataset("spiral", {"n_samples": 256})
    data = Dataset("spiral", spiral.x * 1000, spiral.y, "classification", spiral.classes)
    g = chain_graph([2], ("Linear", {"out_features": 16}), ("Sigmoid", {}),
                    ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    project = Project(graph=g)
    project.training.update({"optimizer": {"name": "adam", "lr": 0.01}, "device": "cpu"})
    trainer = Trainer(project, settings_from(project.training), data=data)
    assert kinds(diagnose(trainer.trace_next_batch())) == {("n1", "saturated")}
    unscaled = Trainer(project, settings_from(project.training), data=spiral)
    assert diagnose(unscaled.trace_next_batch()) == []


def test_exploding_gradients_are_flagged():
    stack = [("Linear", {"out_features": 16, "init": "kaiming_normal"})] * 4
    trainer = mlp_trainer("spiral", {"name": "sgd", "lr": 1e-6}, *stack)
    with torch.no_grad():
        for layer in (trainer.model.n0, trainer.model.n1, trainer.model.n2, trainer.model.n3):
            layer.weight.mul_(20.0)
    verdicts = diagnose(trainer.trace_next_batch())
    exploding = [v for v in verdicts if v.kind == "exploding"]
    assert {v.node for v in exploding} >= {"n2", "n3", "n4"}
    assert all(float(v.message.split("gradient norm ")[1][:7]) > 1e4 for v in exploding)
    assert {v.kind for v in verdicts} <= {"exploding", "update-large"}


@pytest.mark.parametrize(("lr", "kind"), [(50.0, "update-large"), (1e-6, "update-small")])
def test_updates_too_large_and_too_small_are_flagged_on_weight_matrices(lr, kind):
    trainer = mlp_trainer("spiral", {"name": "sgd", "lr": lr}, *relu_mlp())
    trace = trainer.trace_next_batch()
    ratios = weight_update_ratios(trace)
    expected = {k for k, r in ratios.items() if (r > 0.1 if kind == "update-large" else
                                                 0 < r < 1e-7)}
    verdicts = [v for v in diagnose(trace) if v.kind == kind]
    assert {v.message.split(":")[0] for v in verdicts} == expected
    assert len(expected) >= 2


def test_the_first_nan_is_named_by_the_verdicts_and_by_the_trainer():
    trainer = mlp_trainer("spiral", {"name": "sgd", "lr": 0.1}, *relu_mlp())
    with torch.no_grad():
        trainer.model.n2.weight.fill_(1e38)
        trainer.model.n0.weight.fill_(1e3)
    x, y = trainer.x_train[:8], trainer.y_train[:8]
    trace = layerlab.trace_step(trainer.project.graph, trainer.model, x, y)
    first = diagnose(trace)[0]
    assert (first.node, first.kind) == ("n2", "nonfinite")
    with pytest.raises(TrainingError, match="the first non-finite output is n2's"):
        trainer.run()


@pytest.mark.parametrize(("where", "first"), [("weight", "n2"), ("data", "x")])
def test_a_nan_is_named_at_the_first_node_that_outputs_it(where, first):
    trainer = mlp_trainer("spiral", {"name": "sgd", "lr": 0.1}, *relu_mlp())
    x, y = trainer.x_train[:8].clone(), trainer.y_train[:8]
    if where == "weight":
        with torch.no_grad():
            trainer.model.n2.weight[3, 5] = math.nan
    else:
        x[2, 1] = math.nan
    verdicts = diagnose(layerlab.trace_step(trainer.project.graph, trainer.model, x, y))
    assert (verdicts[0].node, verdicts[0].kind) == (first, "nonfinite")
    assert [v.node for v in verdicts if v.message.endswith("holds inf or NaN")] == [first]
