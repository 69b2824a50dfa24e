"""The optimizer's update rule for one weight, with the numbers of a traced step.

`explain_update(trace, key, index)` takes the weight, its gradient and the optimizer's state
as they were before the step, applies the rule as product.md writes it (in float64), and
sets the result beside the weight torch's own step produced: a student sees every term, and
a test sees that the rule is the one torch runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from layerlab.core.optimizer_state import OptimizerState
from layerlab.core.tracer import StepTrace

CLIP_EPS = 1e-6  # torch's clip_grad_norm_: max_norm / (total_norm + 1e-6)


@dataclass(frozen=True)
class UpdateExplanation:
    """One weight's update: the rule, its terms and the worked steps, and the result."""

    key: str  # state-dict key, "fc1.weight"
    index: tuple[int, ...]  # the weight's position in that tensor
    optimizer: str  # product.md's name: sgd, momentum, adagrad, rmsprop, adam, adamw
    step: int | None  # the optimizer's step count t after this step (1: its first);
    # None for SGD and Momentum, which do not count their steps
    formula: str  # the rule in symbols, gradient terms first, "; " between assignments
    terms: dict[str, float]  # every symbol of the rule with its value, in the rule's order
    steps: tuple[str, ...]  # the rule line by line with the numbers put in
    predicted: float  # the new weight computed by the rule from the terms
    actual: float  # the weight after torch's real step

    @property
    def difference(self) -> float:
        return abs(self.predicted - self.actual)


def fmt(x: float) -> str:
    return f"{x:.6g}"


def op(x: float) -> str:
    """A number as an operand: a negative one in parentheses, so −0.5² is not misread."""
    return f"({x:.6g})" if x < 0 else f"{x:.6g}"


class _Sheet:
    """The terms and worked lines of one explanation, filled in the rule's order."""

    def __init__(self) -> None:
        self.terms: dict[str, float] = {}
        self.steps: list[str] = []
        self.formula: list[str] = []

    def term(self, name: str, value: float) -> float:
        self.terms[name] = value
        return value

    def rule(self, formula: str, worked: str, value: float, name: str | None = None) -> float:
        """One assignment of the rule: its symbols, the same with numbers, its value."""
        self.formula.append(formula)
        self.steps.append(f"{worked} = {fmt(value)}")
        if name is not None:
            self.terms[name] = value
        return value


def explain_update(trace: StepTrace, key: str, index: Sequence[int]) -> UpdateExplanation:
    """The optimizer's update of weight `key[index]` in the traced step, term by term.

    Raises ValueError, in one sentence naming what is missing, for a trace taken without an
    optimizer, a parameter whose values were not kept, or an index outside the tensor.
    """
    record = _record(trace, key)
    index = _checked_index(trace, key, index)
    w = float(trace.weights[key][index])
    actual = w + float(trace.updates[key][index])
    hyper = record.settings[key]
    state = record.state[key]
    sheet = _Sheet()
    sheet.term("w", w)
    g = _gradient(sheet, trace, record, key, index, w)
    t = int(state.get("step", 0)) + 1
    counted = record.name not in ("sgd", "momentum")
    rules = {"sgd": _sgd, "momentum": _sgd, "adagrad": _adagrad, "rmsprop": _rmsprop,
             "adam": _adam, "adamw": _adam}
    predicted = rules[record.name](sheet, w, g, hyper, _state_at(state, index), t)
    return UpdateExplanation(key, index, record.name, t if counted else None,
                             ";  ".join(sheet.formula),
                             sheet.terms, tuple(sheet.steps), predicted, actual)


def _record(trace: StepTrace, key: str) -> OptimizerState:
    record = trace.optimizer_state
    if record is None or not trace.updates:
        raise ValueError("this trace has no optimizer step to explain: it was taken without "
                         "an optimizer (or one other than SGD, Momentum, AdaGrad, RMSProp, "
                         "Adam and AdamW), or in the middle of a gradient-accumulation group")
    if key not in trace.param_stats:
        raise ValueError(f"{key}: no such parameter in the traced model")
    if key not in record.settings or key not in trace.updates:
        why = "frozen" if "grad" not in trace.param_stats[key] else \
            "too large for the trace to keep its values"
        raise ValueError(f"{key}: its update cannot be explained, the parameter is {why}")
    return record


def _checked_index(trace: StepTrace, key: str, index: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(trace.weights[key].shape)
    index = tuple(int(i) for i in index)
    if len(index) != len(shape) or any(not 0 <= i < n for i, n in zip(index, shape,
                                                                        strict=True)):
        raise ValueError(f"{key}: index {','.join(map(str, index))} is outside its shape "
                         f"{'×'.join(map(str, shape))} (indices count from 0)")
    return index


def _state_at(state: dict[str, Any], index: tuple[int, ...]) -> dict[str, float]:
    return {name: float(v) if isinstance(v, float) else float(v[index])
            for name, v in state.items()}


def _gradient(sheet: _Sheet, trace: StepTrace, record: OptimizerState, key: str,
              index: tuple[int, ...], w: float) -> float:
    """g as the optimizer sees it: the loss's gradient, the L1/L2 terms the trainer added
    to the loss, and clipping."""
    g = float(trace.param_grads[key][index])
    reg = record.regularisation
    l1 = reg.l1 if key in record.penalised else 0.0
    l2 = reg.l2 if key in record.penalised else 0.0
    l1_term = l1 * (math.copysign(1.0, w) if w else 0.0)
    loss_grad = g - l1_term - 2 * l2 * w
    sheet.term("dL/dw", loss_grad)
    if l1 or l2:
        formula, worked = ["dL/dw"], [fmt(loss_grad)]
        if l1:
            sheet.term("λ₁", l1)
            sheet.term("λ₁·sign(w)", l1_term)
            formula.append("λ₁·sign(w)")
            worked.append(f"{op(l1)}·{op(math.copysign(1.0, w) if w else 0.0)}")
        if l2:
            sheet.term("λ₂", l2)
            sheet.term("2λ₂·w", 2 * l2 * w)
            formula.append("2λ₂·w")
            worked.append(f"2·{op(l2)}·{op(w)}")
        sheet.rule(f"g = {' + '.join(formula)}", f"g = {' + '.join(worked)}", g, "g")
    sheet.terms["g"] = g
    if reg.clip is not None:
        total = math.sqrt(sum(s["grad"].norm ** 2 for s in trace.param_stats.values()
                              if "grad" in s))
        sheet.term("max norm", reg.clip)
        sheet.term("‖g‖ (all weights)", total)
        c = sheet.rule("c = min(1, max norm / ‖g‖)", f"c = min(1, {op(reg.clip)} / "
                       f"{op(total)})", min(1.0, reg.clip / (total + CLIP_EPS)), "c")
        g = sheet.rule("g ← c·g", f"g ← {op(c)}·{op(g)}", c * g, "c·g")
    return g


def _decay(sheet: _Sheet, w: float, g: float, hyper: dict[str, Any]) -> float:
    """Weight decay through the gradient (every optimizer but AdamW): g ← g + λ·w."""
    wd = float(hyper.get("weight_decay", 0.0))
    if not wd:
        return g
    sheet.term("λ", wd)
    return sheet.rule("g ← g + λ·w", f"g ← {op(g)} + {op(wd)}·{op(w)}", g + wd * w,
                      "g + λ·w")


def _sgd(sheet: _Sheet, w: float, g: float, hyper: dict[str, Any], state: dict[str, float],
         t: int) -> float:
    g = _decay(sheet, w, g, hyper)
    lr = sheet.term("η", float(hyper["lr"]))
    mu = float(hyper.get("momentum", 0.0))
    if not mu:
        return sheet.rule("w ← w − η·g", f"w ← {op(w)} − {op(lr)}·{op(g)}", w - lr * g)
    sheet.term("μ", mu)
    damp = float(hyper.get("dampening", 0.0))
    v0 = sheet.term("v (before)", state.get("momentum_buffer", 0.0))
    if damp and "momentum_buffer" not in state:  # torch starts v at g, undamped
        sheet.term("d", damp)
        v = sheet.rule("v ← g (first step)", f"v ← {op(g)}", g, "v")
    elif damp:
        sheet.term("d", damp)
        v = sheet.rule("v ← μ·v + (1 − d)·g", f"v ← {op(mu)}·{op(v0)} + "
                       f"{op(1 - damp)}·{op(g)}", mu * v0 + (1 - damp) * g, "v")
    else:
        v = sheet.rule("v ← μ·v + g", f"v ← {op(mu)}·{op(v0)} + {op(g)}", mu * v0 + g,
                       "v")
    if hyper.get("nesterov"):
        return sheet.rule("w ← w − η·(g + μ·v)", f"w ← {op(w)} − {op(lr)}·({op(g)} + "
                          f"{op(mu)}·{op(v)})", w - lr * (g + mu * v))
    return sheet.rule("w ← w − η·v", f"w ← {op(w)} − {op(lr)}·{op(v)}", w - lr * v)


def _adagrad(sheet: _Sheet, w: float, g: float, hyper: dict[str, Any],
             state: dict[str, float], t: int) -> float:
    g = _decay(sheet, w, g, hyper)
    lr = sheet.term("η", float(hyper["lr"]))
    eps = sheet.term("ε", float(hyper["eps"]))
    decay = float(hyper.get("lr_decay", 0.0))
    if decay:
        sheet.term("t", t)
        sheet.term("lr decay", decay)
        lr = sheet.rule("η_t = η / (1 + (t − 1)·decay)", f"η_t = {op(lr)} / (1 + {t - 1}·"
                        f"{op(decay)})", lr / (1 + (t - 1) * decay), "η_t")
    g0 = sheet.term("G (before)", state["sum"])
    big_g = sheet.rule("G ← G + g²", f"G ← {op(g0)} + {op(g)}²", g0 + g * g, "G")
    eta = "η_t" if decay else "η"
    return sheet.rule(f"w ← w − {eta}·g / (√G + ε)", f"w ← {op(w)} − {op(lr)}·{op(g)} / "
                      f"(√{op(big_g)} + {op(eps)})", w - lr * g / (math.sqrt(big_g) + eps))


def _rmsprop(sheet: _Sheet, w: float, g: float, hyper: dict[str, Any],
             state: dict[str, float], t: int) -> float:
    g = _decay(sheet, w, g, hyper)
    lr = sheet.term("η", float(hyper["lr"]))
    alpha = sheet.term("α", float(hyper["alpha"]))
    eps = sheet.term("ε", float(hyper["eps"]))
    s0 = sheet.term("s (before)", state.get("square_avg", 0.0))
    s = sheet.rule("s ← α·s + (1 − α)·g²", f"s ← {op(alpha)}·{op(s0)} + {op(1 - alpha)}·"
                   f"{op(g)}²", alpha * s0 + (1 - alpha) * g * g, "s")
    if hyper.get("centered"):
        a0 = sheet.term("ḡ (before)", state.get("grad_avg", 0.0))
        avg = sheet.rule("ḡ ← α·ḡ + (1 − α)·g", f"ḡ ← {op(alpha)}·{op(a0)} + "
                         f"{op(1 - alpha)}·{op(g)}", alpha * a0 + (1 - alpha) * g, "ḡ")
        root, text = math.sqrt(s - avg * avg), f"√({op(s)} − {op(avg)}²)"
        symbol = "√(s − ḡ²)"
    else:
        root, text, symbol = math.sqrt(s), f"√{op(s)}", "√s"
    mu = float(hyper.get("momentum", 0.0))
    if not mu:
        return sheet.rule(f"w ← w − η·g / ({symbol} + ε)", f"w ← {op(w)} − {op(lr)}·"
                          f"{op(g)} / ({text} + {op(eps)})", w - lr * g / (root + eps))
    sheet.term("μ", mu)
    b0 = sheet.term("b (before)", state.get("momentum_buffer", 0.0))
    b = sheet.rule(f"b ← μ·b + g / ({symbol} + ε)", f"b ← {op(mu)}·{op(b0)} + {op(g)} / "
                   f"({text} + {op(eps)})", mu * b0 + g / (root + eps), "b")
    return sheet.rule("w ← w − η·b", f"w ← {op(w)} − {op(lr)}·{op(b)}", w - lr * b)


def _adam(sheet: _Sheet, w: float, g: float, hyper: dict[str, Any], state: dict[str, float],
          t: int) -> float:
    lr = sheet.term("η", float(hyper["lr"]))
    wd = float(hyper.get("weight_decay", 0.0))
    if hyper.get("decoupled_weight_decay") and wd:  # AdamW: decay the weight, not g
        sheet.term("λ", wd)
        w = sheet.rule("w ← w − η·λ·w", f"w ← {op(w)} − {op(lr)}·{op(wd)}·{op(w)}",
                       w - lr * wd * w, "w (decayed)")
    else:
        g = _decay(sheet, w, g, hyper)
    beta1, beta2 = (float(b) for b in hyper["betas"])
    sheet.term("β₁", beta1)
    sheet.term("β₂", beta2)
    eps = sheet.term("ε", float(hyper["eps"]))
    sheet.term("t", t)
    m0 = sheet.term("m (before)", state.get("exp_avg", 0.0))
    v0 = sheet.term("v (before)", state.get("exp_avg_sq", 0.0))
    m = sheet.rule("m ← β₁·m + (1 − β₁)·g", f"m ← {op(beta1)}·{op(m0)} + "
                   f"{op(1 - beta1)}·{op(g)}", beta1 * m0 + (1 - beta1) * g, "m")
    v = sheet.rule("v ← β₂·v + (1 − β₂)·g²", f"v ← {op(beta2)}·{op(v0)} + "
                   f"{op(1 - beta2)}·{op(g)}²", beta2 * v0 + (1 - beta2) * g * g, "v")
    if hyper.get("amsgrad"):
        top = sheet.term("v_max (before)", state.get("max_exp_avg_sq", 0.0))
        v = sheet.rule("v_max ← max(v_max, v)", f"v_max ← max({op(top)}, {op(v)})",
                       max(top, v), "v_max")
    m_hat = sheet.rule("m̂ = m / (1 − β₁ᵗ)", f"m̂ = {op(m)} / (1 − {op(beta1)}^{t})",
                       m / (1 - beta1 ** t), "m̂")
    v_name = "v_max" if hyper.get("amsgrad") else "v"
    v_hat = sheet.rule(f"v̂ = {v_name} / (1 − β₂ᵗ)", f"v̂ = {op(v)} / (1 − {op(beta2)}^{t})",
                       v / (1 - beta2 ** t), "v̂")
    return sheet.rule("w ← w − η·m̂ / (√v̂ + ε)", f"w ← {op(w)} − {op(lr)}·{op(m_hat)} / "
                      f"(√{op(v_hat)} + {op(eps)})", w - lr * m_hat / (math.sqrt(v_hat) + eps))
