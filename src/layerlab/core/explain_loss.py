"""Chain-rule rules of the losses: dL/dŷ from the model's output ŷ and the targets t.

Every loss here is a mean over the batch (torch's default reduction), so each sample's
share carries 1/N, N the whole batch's count of the values averaged — not the kept ones.
"""

from __future__ import annotations

import math

import torch

from layerlab.core.explain_rules import Local, Rule, RuleFn, Tensor, Unexplained


def _targets(v: Local) -> Tensor:
    if v.targets is None:
        raise Unexplained(f"the targets of {v.node} were not recorded in this trace")
    return v.targets


def _class_dist(v: Local) -> tuple[Tensor, int]:
    """The target distribution over the classes (dimension 1) and the mean's count."""
    scores, t = v.xs[0], _targets(v)
    classes = scores.shape[1]
    if t.is_floating_point():  # class probabilities, shaped like the scores
        dist, count = t.to(scores.dtype), v.batch * math.prod(scores.shape[2:])
    else:
        dist = torch.nn.functional.one_hot(t.long(), classes).movedim(-1, 1).to(scores.dtype)
        count = v.batch * math.prod(t.shape[1:])
    return dist, count


def _cross_entropy(v: Local) -> Rule:
    z, s = v.xs[0], v.sample
    dist, n = _class_dist(v)
    eps = v.params["label_smoothing"]
    target = (1 - eps) * dist + eps / z.shape[1] if eps else dist
    p = torch.softmax(z, dim=1)
    dz = (p - target) / n
    name = "onehot(t)" if not _targets(v).is_floating_point() else "t"
    smooth = f" smoothed by ε = {eps:g}: (1 − ε)·{name} + ε/C" if eps else ""
    return Rule(f"dL/dŷ = (softmax(ŷ) − {name}) / N, N = {n}{smooth}", [dz], terms={
        "ŷ": z[s], "t": _targets(v)[s], "softmax(ŷ)": p[s], name: target[s], "dL/dŷ": dz[s]})


def _nll(v: Local) -> Rule:
    z, s = v.xs[0], v.sample
    dist, n = _class_dist(v)
    dz = -dist / n
    return Rule(f"dL/dŷ = −onehot(t) / N, N = {n}", [dz], terms={
        "ŷ": z[s], "t": _targets(v)[s], "dL/dŷ": dz[s]})


def _elementwise(v: Local) -> tuple[Tensor, Tensor, int]:
    z, t = v.xs[0], _targets(v)
    return z, t.to(z.dtype).reshape(z.shape), v.batch * math.prod(z.shape[1:])


def _mse(v: Local) -> Rule:
    z, t, n = _elementwise(v)
    dz = 2 * (z - t) / n
    s = v.sample
    return Rule(f"dL/dŷ = 2·(ŷ − t) / N, N = {n}", [dz], terms={
        "ŷ": z[s], "t": t[s], "ŷ − t": (z - t)[s], "dL/dŷ": dz[s]})


def _l1(v: Local) -> Rule:
    z, t, n = _elementwise(v)
    dz = torch.sign(z - t) / n
    s = v.sample
    return Rule(f"dL/dŷ = sign(ŷ − t) / N, N = {n}", [dz], terms={
        "ŷ": z[s], "t": t[s], "sign(ŷ − t)": torch.sign(z - t)[s], "dL/dŷ": dz[s]})


def _bce_logits(v: Local) -> Rule:
    z, t, n = _elementwise(v)
    p = torch.sigmoid(z)
    dz = (p - t) / n
    s = v.sample
    return Rule(f"dL/dŷ = (σ(ŷ) − t) / N, N = {n}", [dz], terms={
        "ŷ": z[s], "t": t[s], "σ(ŷ)": p[s], "dL/dŷ": dz[s]})


RULES: dict[str, RuleFn] = {
    "CrossEntropyLoss": _cross_entropy, "NLLLoss": _nll, "MSELoss": _mse, "L1Loss": _l1,
    "BCEWithLogitsLoss": _bce_logits,
}
