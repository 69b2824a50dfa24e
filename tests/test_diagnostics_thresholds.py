"""Diagnostic verdicts at their thresholds, with hand-computed norms and ratios: a verdict on
what crosses a threshold, none on what only reaches it, and the sentence a person reads.
(tests/test_diagnostics_verdicts.py checks the verdicts on real healthy and broken runs.)"""

import math

import pytest
import torch

from layerlab.core.diagnostics import (
    HealthMonitor,
    Verdict,
    activation_verdicts,
    diagnose,
    gradient_verdicts,
    judged_weights,
    layer_grad_norms,
    update_verdicts,
)
from layerlab.core.optimizer_state import OptimizerState
from layerlab.core.tracer import Stats, StepTrace
from layerlab.core.trainer import HealthRecord


def kinds(verdicts):
    return [(v.node, v.kind) for v in verdicts]


def test_layer_norms_combine_a_nodes_parameters_as_one_vector_in_the_given_order():
    norms = layer_grad_norms({"fc.weight": 3.0, "out.weight": 1.0, "fc.bias": 4.0})
    assert list(norms) == ["fc", "out"] and norms == {"fc": 5.0, "out": 1.0}


def test_a_layer_a_thousand_times_weaker_than_the_last_is_vanishing():
    verdicts = gradient_verdicts({"a": 1e-4, "b": 2e-3, "c": 1.0})
    assert kinds(verdicts) == [("a", "vanishing")]  # b/c = 2e-3 is above 1e-3
    assert verdicts[0].message == "a: gradient norm 1.0e-04, 1e+04× smaller than c's — vanishing"


def test_ratios_exactly_at_the_thresholds_give_no_verdict():
    assert gradient_verdicts({"a": 1e-3, "b": 1.0}) == []
    assert gradient_verdicts({"a": 1e3, "b": 1.0}) == []
    assert gradient_verdicts({"a": 1e4}) == []


def test_a_layer_a_thousand_times_stronger_than_the_last_is_exploding():
    assert gradient_verdicts({"a": 3e3, "b": 1.0}) == [Verdict(
        "a", "exploding", "a: gradient norm 3.0e+03, 3e+03× larger than b's — exploding")]


def test_a_large_norm_is_exploding_and_compared_only_when_the_ratio_is_large_too():
    # 2e4 is above the absolute limit but only 20× the last layer's: no "× larger" clause
    assert gradient_verdicts({"a": 2e4, "b": 1e3}) == [Verdict(
        "a", "exploding", "a: gradient norm 2.0e+04 — exploding")]
    # a last layer without gradient: nothing to compare with
    assert gradient_verdicts({"a": 2e4, "b": 0.0}) == [Verdict(
        "a", "exploding", "a: gradient norm 2.0e+04 — exploding")]


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_non_finite_gradient_cannot_be_stepped(bad):
    assert gradient_verdicts({"a": bad, "b": 1.0}) == [Verdict(
        "a", "nonfinite", f"a: gradient is {bad} — the step cannot be taken")]


def test_update_ratios_beyond_the_healthy_band_are_named_by_parameter_and_node():
    verdicts = update_verdicts({"fc.weight": 0.2, "fc2.weight": 0.1, "out.weight": 5e-8,
                                "o2.weight": 1e-7, "emb.weight": 0.0, "ok.weight": 1e-3})
    assert kinds(verdicts) == [("fc", "update-large"), ("out", "update-small")]
    assert verdicts[0].message == ("fc.weight: the step changed it by 2.0e-01 of its size "
                                   "(healthy is about 1e-3) — the learning rate is too high")
    assert verdicts[1].message == ("out.weight: the step changed it by only 5.0e-08 of its "
                                   "size — it is barely learning")


def stats(*, finite=True, dead=None, saturated=None, samples=16):
    return Stats((samples, 4), 0.0, 1.0, -1.0, 1.0, 1.0, 0.0, finite, (0,), 0.0, dead,
                 saturated)


def test_dead_and_saturated_layers_are_named_with_their_share():
    trace = StepTrace(stats={"r1": stats(dead=0.5), "r2": stats(dead=0.49),
                             "r3": stats(dead=1.0, samples=7),
                             "s1": stats(saturated=0.95), "s2": stats(saturated=0.89)})
    verdicts = activation_verdicts(trace)
    assert kinds(verdicts) == [("r1", "dead"), ("s1", "saturated")]
    assert verdicts[0].message == ("r1: 50% of its units output zero for every sample — "
                                   "dead ReLUs")
    assert verdicts[1].message == ("s1: 95% of its outputs sit at the flat ends — saturated, "
                                   "so its gradient vanishes")


def test_diagnose_names_the_first_non_finite_output_first():
    trace = StepTrace(forward=[("fc", torch.zeros(1)), ("relu", torch.zeros(1)),
                               ("out", torch.zeros(1))],
                      stats={"fc": stats(), "relu": stats(finite=False),
                             "out": stats(finite=False)})
    verdicts = diagnose(trace)
    assert verdicts[0] == Verdict("relu", "nonfinite",
                                  "relu: the first output that holds inf or NaN")
    assert kinds(verdicts) == [("relu", "nonfinite")]


def record(step, norms, ratios):
    return HealthRecord(step, norms, ratios)


def test_a_health_verdict_stands_only_after_three_records_in_a_row():
    monitor = HealthMonitor({"a.weight", "b.weight"})
    low = {"a": 1e-5, "b": 1.0}
    seen = [kinds(monitor.add(record(i, norms, {})))
            for i, norms in enumerate([low, low, {"a": 1.0, "b": 1.0}, low, low, low, low])]
    # two, then a healthy record that breaks the run, then three in a row: shown, and kept
    assert seen == [[], [], [], [], [], [("a", "vanishing")], [("a", "vanishing")]]


def test_a_non_finite_gradient_in_a_health_record_is_shown_at_once():
    monitor = HealthMonitor(set())
    assert kinds(monitor.add(record(1, {"a": math.nan, "b": 1.0}, {}))) == [("a", "nonfinite")]


def test_health_update_ratios_are_judged_only_for_the_weights_given():
    """Biases and weights that started at zero are not in judged_weights, so their large
    ratios never become a verdict."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.zero_()
    judged = judged_weights(model)
    assert judged == {"0.weight"}
    monitor = HealthMonitor(judged)
    ratios = {"0.weight": 0.5, "0.bias": 0.9, "1.weight": 1.0, "1.bias": 0.9}
    for step in range(3):
        verdicts = monitor.add(record(step, {"0": 1.0, "1": 1.0}, ratios))
    assert kinds(verdicts) == [("0", "update-large")]


def trace_with_update(ratio, optimizer, step):
    weight = torch.ones(10, 10)
    return StepTrace(weights={"fc.weight": weight}, updates={"fc.weight": ratio * weight},
                     param_grads={"fc.weight": weight},
                     optimizer_state=OptimizerState(optimizer, {"fc.weight": {}},
                                                    {"fc.weight": {"step": step}}))


@pytest.mark.parametrize(("optimizer", "step", "ratio", "flagged"), [
    ("adam", 0.0, 0.9, False),  # a first Adam step: about lr per weight, whatever g
    ("adam", 0.0, 1.1, True),  # … larger than the weights themselves
    ("adamw", 0.0, 0.9, False), ("rmsprop", 0.0, 0.9, False), ("adagrad", 0.0, 0.9, False),
    ("adam", 1.0, 0.11, True),  # a later Adam step by the usual rule
    ("sgd", 0.0, 0.11, True), ("momentum", 0.0, 0.11, True),
])
def test_an_adaptive_optimizers_first_step_is_too_large_only_beyond_the_weights_size(
        optimizer, step, ratio, flagged):
    verdicts = diagnose(trace_with_update(ratio, optimizer, step))
    assert (("fc", "update-large") in kinds(verdicts)) == flagged
