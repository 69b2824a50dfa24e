"""Chain-rule rules of the layers in layers/extra.py: the piecewise activations of
MobileNet, channel-wise and alpha dropout, stochastic depth (see explain_rules.Local).

The dropout family all multiply dL/dy by the mask the step drew (recorded by
trace_extras, never drawn again) and by the layer's scale; they differ only in the shape
of the mask (a value, a channel, a sample or the whole batch) and in the scale.
"""

from __future__ import annotations

import math

import torch

from layerlab.core.explain_layers import _pointwise as pointwise
from layerlab.core.explain_rules import Local, Rule, RuleFn, Tensor, Unexplained

ALPHA = 1.7580993408473766  # −α′: SELU's negative limit λ·α, as torch's alpha_dropout


def _relu6(v: Local) -> Rule:
    x = v.xs[0]
    return pointwise(v, "dL/d{x} = dL/d{y} ⊙ [0 < {x} < 6]", "[0 < {x} < 6]",
                     ((x > 0) & (x < 6)).to(v.dy.dtype))


def _hardsigmoid(v: Local) -> Rule:
    x = v.xs[0]
    return pointwise(v, "dL/d{x} = dL/d{y} ⊙ (1/6 if −3 < {x} < 3 else 0)", "f′({x})",
                     ((x > -3) & (x < 3)).to(v.dy.dtype) / 6)


def _hardswish(v: Local) -> Rule:
    x = v.xs[0]
    slope = torch.where(x < -3, torch.zeros_like(x),
                        torch.where(x <= 3, x / 3 + 0.5, torch.ones_like(x)))
    return pointwise(v, "dL/d{x} = dL/d{y} ⊙ (0 if {x} < −3, {x}/3 + ½ if {x} ≤ 3, else 1)",
                     "f′({x})", slope)


def _mask(v: Local, scale: float) -> tuple[Tensor, float]:
    """The mask the step drew (shaped to broadcast over the kept samples) and the scale of
    what survived; an evaluation step, or p = 0, passes everything through."""
    p, x = v.params["p"], v.xs[0]
    if not v.extras.get("training", True) or p == 0:
        return torch.ones_like(x, dtype=torch.bool), 1.0
    if p == 1:
        return torch.zeros_like(x, dtype=torch.bool), 0.0
    masks = v.extras.get("masks", [])
    if not masks:
        raise Unexplained(f"{v.node}'s dropout mask was not recorded in this trace")
    return masks[0], scale


def _masked(v: Local, scale: float, what: str, name: str = "1/(1 − p)",
            definition: str = "") -> Rule:
    """dL/dx = dL/dy ⊙ m · scale; the term m is shown for the sample, one entry per `what`."""
    mask, scale = _mask(v, scale)
    dx = v.dy * mask.to(v.dy.dtype) * scale
    s = v.sample
    mine = mask[s if mask.shape[0] > 1 else 0]
    return Rule(f"dL/d{{x}} = dL/d{{y}} ⊙ m · {name}{definition}, p = {v.params['p']:g}, "
                f"{name} = {scale:g} (m: one draw per {what})", [dx], terms={
                    "{x}": v.xs[0][s], f"m (per {what})": mine.reshape(-1).to(v.dy.dtype),
                    "dL/d{y}": v.dy[s], "dL/d{x}": dx[s]})


def _channel_dropout(v: Local) -> Rule:
    p = v.params["p"]
    return _masked(v, 1 / (1 - p) if p < 1 else 0.0, "channel")


def _alpha_dropout(v: Local) -> Rule:
    """y = a·(x·m + α′·(1 − m)) + b: only the kept values depend on x, scaled by a."""
    p = v.params["p"]
    a = 1 / math.sqrt((ALPHA * ALPHA * p + 1) * (1 - p)) if p < 1 else 0.0
    return _masked(v, a, "value", "a", ", a = 1/√((α′²·p + 1)(1 − p)), α′ = −1.758")


def _stochastic_depth(v: Local) -> Rule:
    p = v.params["p"]
    what = "sample" if v.params["mode"] == "row" else "batch"
    return _masked(v, 1 / (1 - p) if p < 1 else 0.0, what)


RULES: dict[str, RuleFn] = {
    "ReLU6": _relu6, "Hardswish": _hardswish, "Hardsigmoid": _hardsigmoid,
    "Dropout1d": _channel_dropout, "Dropout2d": _channel_dropout,
    "AlphaDropout": _alpha_dropout, "StochasticDepth": _stochastic_depth,
}
