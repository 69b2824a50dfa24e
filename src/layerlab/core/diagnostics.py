"""Gradient and activation health: where values vanish, explode or stop being numbers.

Verdicts are computed from a StepTrace or from the cheap per-step statistics the trainer
collects every N steps (HealthMonitor), and are written for a person:
"fc1: gradient norm 3e-09, 1e+06× smaller than fc4's — vanishing".

A verdict a person learns to ignore is worse than none, so ‖Δw‖/‖w‖ is judged only where it
means something: on weight matrices and kernels that did not start at zero (a bias that
starts at zero changes by 100% of its size in a healthy first step), and an adaptive
optimizer's first step, whose size is the learning rate whatever the gradient, is too large
only when it is larger than the weights themselves. A verdict from health records must hold
over several records in a row.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.fx

from layerlab.core.compiler import NODE_META
from layerlab.core.tracer import StepTrace

if TYPE_CHECKING:
    from layerlab.core.trainer import HealthRecord

VANISHING_RATIO = 1e-3  # a layer's gradient this much smaller than the last layer's
EXPLODING_RATIO = 1e3  # … or this much larger
EXPLODING_NORM = 1e4  # any gradient norm above this
UPDATE_TOO_LARGE = 0.1  # ‖Δw‖ / ‖w‖ per step of a weight matrix; ~1e-3 is healthy
UPDATE_TOO_SMALL = 1e-7
# The first step of AdaGrad, RMSProp, Adam and AdamW moves every weight by about the
# learning rate (g/√g², bias-corrected): too large only when that is more than the weight.
FIRST_ADAPTIVE_TOO_LARGE = 1.0
ADAPTIVE = ("adagrad", "rmsprop", "adam", "adamw")
PERSIST = 3  # health records in a row a verdict must hold before it is shown
DEAD_FRACTION = 0.5
# Fewer samples than this cannot show a unit dead: for one sample about half of a healthy
# ReLU layer's units are zero.
DEAD_MIN_SAMPLES = 8
# A trained classifier drives its last hidden tanh towards ±1 for the features it is sure of
# (three quarters of the spiral example's at 99% accuracy) while the rest still carry the
# gradient; only a layer with nearly every output at a bound blocks it.
SATURATED_FRACTION = 0.9


@dataclass(frozen=True)
class Verdict:
    node: str
    kind: str  # vanishing, exploding, nonfinite, dead, saturated, update-large, update-small
    message: str


def node_of(key: str) -> str:
    return key.split(".", 1)[0]


def layer_grad_norms(param_grad_norms: Mapping[str, float]) -> dict[str, float]:
    """Gradient norm per node (over all its parameters), in the order given."""
    squares: dict[str, float] = {}
    for key, norm in param_grad_norms.items():
        squares[node_of(key)] = squares.get(node_of(key), 0.0) + norm * norm
    return {node: math.sqrt(sq) for node, sq in squares.items()}


def trace_grad_norms(trace: StepTrace) -> dict[str, float]:
    return layer_grad_norms({k: s["grad"].norm for k, s in trace.param_stats.items()
                             if "grad" in s})


def update_ratios(trace: StepTrace) -> dict[str, float]:
    """‖Δw‖ / ‖w‖ per parameter for the traced update (undefined for all-zero weights,
    such as biases that start at zero, so those are left out)."""
    return {k: s["update"].norm / s["weight"].norm
            for k, s in trace.param_stats.items() if "update" in s and s["weight"].norm > 0}


def weight_update_ratios(trace: StepTrace,
                         judged: Collection[str] | None = None) -> dict[str, float]:
    """The update ratios of weight matrices and kernels only: the ~1e-3 rule of thumb is
    about them. Biases and normalisation shifts start at or near zero, so a healthy first
    step changes them by a large share of their size. `judged` (judged_weights of the model
    at the start of the run) also leaves out matrices that started at zero."""
    return {k: r for k, r in update_ratios(trace).items()
            if len(trace.param_stats[k]["weight"].shape) >= 2
            and (judged is None or k in judged)}


def judged_weights(model: torch.nn.Module) -> frozenset[str]:
    """The parameters whose ‖Δw‖/‖w‖ is worth judging, taken at the start of a run: weight
    matrices and kernels that do not start at zero."""
    return frozenset(k for k, p in model.named_parameters()
                     if p.dim() >= 2 and bool(p.detach().any()))


def first_adaptive_step(trace: StepTrace) -> bool:
    """Whether the traced update is the first of an adaptive optimizer."""
    record = trace.optimizer_state
    return record is not None and record.name in ADAPTIVE and \
        all(not state.get("step", 0) for state in record.state.values())


def gradient_verdicts(norms: Mapping[str, float]) -> list[Verdict]:
    """Vanishing or exploding gradients, each layer against the one nearest the loss."""
    if not norms:
        return []
    last_node, last = list(norms.items())[-1]
    verdicts = []
    for node, norm in norms.items():
        if not math.isfinite(norm):
            verdicts.append(Verdict(node, "nonfinite", f"{node}: gradient is {norm} — the "
                                                       "step cannot be taken"))
        elif norm > EXPLODING_NORM or (last > 0 and norm / last > EXPLODING_RATIO):
            factor = f", {norm / last:.0e}× larger than {last_node}'s" if last > 0 and \
                norm / last > EXPLODING_RATIO else ""
            verdicts.append(Verdict(node, "exploding", f"{node}: gradient norm {norm:.1e}"
                                                       f"{factor} — exploding"))
        elif node != last_node and last > 0 and norm / last < VANISHING_RATIO:
            factor = f", {last / norm:.0e}× smaller than {last_node}'s" if norm > 0 else ""
            verdicts.append(Verdict(node, "vanishing", f"{node}: gradient norm {norm:.1e}"
                                                       f"{factor} — vanishing"))
    return verdicts


def update_verdicts(ratios: Mapping[str, float],
                    too_large: float = UPDATE_TOO_LARGE) -> list[Verdict]:
    verdicts = []
    for key, ratio in ratios.items():
        if ratio > too_large:
            verdicts.append(Verdict(node_of(key), "update-large", f"{key}: the step changed "
                            f"it by {ratio:.1e} of its size (healthy is about 1e-3) — the "
                            "learning rate is too high"))
        elif 0 < ratio < UPDATE_TOO_SMALL:
            verdicts.append(Verdict(node_of(key), "update-small", f"{key}: the step changed "
                            f"it by only {ratio:.1e} of its size — it is barely learning"))
    return verdicts


def activation_verdicts(trace: StepTrace) -> list[Verdict]:
    verdicts = []
    for node, stats in trace.stats.items():
        if stats.dead is not None and stats.dead >= DEAD_FRACTION and \
                stats.shape[0] >= DEAD_MIN_SAMPLES:
            verdicts.append(Verdict(node, "dead", f"{node}: {100 * stats.dead:.0f}% of its "
                            "units output zero for every sample — dead ReLUs"))
        if stats.saturated is not None and stats.saturated >= SATURATED_FRACTION:
            verdicts.append(Verdict(node, "saturated", f"{node}: {100 * stats.saturated:.0f}% "
                            "of its outputs sit at the flat ends — saturated, so its "
                            "gradient vanishes"))
    return verdicts


def first_nonfinite_in_trace(trace: StepTrace) -> str | None:
    for node, _ in trace.forward:
        if not trace.stats[node].finite:
            return node
    return None


def diagnose(trace: StepTrace, judged: Collection[str] | None = None) -> list[Verdict]:
    """Every verdict a trace supports, the first non-finite output first. `judged`:
    judged_weights(model) at the start of the run, when known."""
    verdicts = []
    bad = first_nonfinite_in_trace(trace)
    if bad is not None:
        verdicts.append(Verdict(bad, "nonfinite", f"{bad}: the first output that holds inf "
                                                  "or NaN"))
    verdicts += gradient_verdicts(trace_grad_norms(trace))
    too_large = FIRST_ADAPTIVE_TOO_LARGE if first_adaptive_step(trace) else UPDATE_TOO_LARGE
    verdicts += update_verdicts(weight_update_ratios(trace, judged), too_large)
    verdicts += activation_verdicts(trace)
    return verdicts


class HealthMonitor:
    """Verdicts from the trainer's HealthRecords, shown once they held for `persist`
    records in a row (one noisy batch raises none); a non-finite gradient at once.

    Build it from the model at the start of the run (`HealthMonitor(judged_weights(model))`)
    and give it every record: `add` returns the verdicts that stand after that record.
    """

    def __init__(self, judged: Collection[str], persist: int = PERSIST) -> None:
        self.judged = frozenset(judged)
        self.persist = persist
        self.streaks: dict[tuple[str, str], int] = {}

    def add(self, record: HealthRecord) -> list[Verdict]:
        ratios = {k: r for k, r in record.update_ratios.items() if k in self.judged}
        current = gradient_verdicts(record.grad_norms) + update_verdicts(ratios)
        seen = {(v.node, v.kind) for v in current}
        self.streaks = {key: self.streaks.get(key, 0) + 1 for key in seen}
        return [v for v in current if v.kind == "nonfinite" or
                self.streaks[(v.node, v.kind)] >= self.persist]


class _FirstNonFinite(torch.fx.Interpreter):
    """Runs the model node by node and notes the first output that is not finite."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module)
        self.culprit: str | None = None

    def run_node(self, n: torch.fx.Node) -> object:
        out = super().run_node(n)
        node = n.meta.get(NODE_META)
        if node is not None and self.culprit is None and isinstance(out, torch.Tensor) and \
                out.is_floating_point() and not bool(torch.isfinite(out).all()):
            self.culprit = node
        return out


def first_nonfinite_node(model: torch.fx.GraphModule, x: torch.Tensor,
                         rng_state: torch.Tensor | None = None) -> str | None:
    """The id of the first node (in execution order) whose output holds inf or NaN.

    Give the CPU RNG state from before the failing step so that Dropout draws the same
    masks as the step that failed.
    """
    if rng_state is not None:
        torch.set_rng_state(rng_state)
    finder = _FirstNonFinite(model)
    with torch.no_grad():
        finder.run(x)
    return finder.culprit
