"""Chain-rule rules of the plain layers: dense, activations, merges, normalisation,
Embedding and Mean. One small function per catalogue type (see explain_rules.Local).

Formulas and term names are templates: {x} (or {x0}, {x1}, … for merges) is the input,
{y} the output; explain_node fills them with node ids (ŷ for the model's output).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from layerlab.core.explain_rules import (
    Local,
    Rule,
    RuleFn,
    Tensor,
    Unexplained,
    floating,
    gelu_slope,
    layer_norm_back,
    linear_back,
    need,
    sample_dim,
    softmax_back,
)


def _pointwise(v: Local, formula: str, local_name: str, local: Tensor) -> Rule:
    """dL/dx = dL/dy ⊙ f′ for an element-wise function."""
    dx = v.dy * local
    s = v.sample
    return Rule(formula, [dx], terms={"{x}": v.xs[0][s], "{y}": v.y[s], "dL/d{y}": v.dy[s],
                                      local_name: local[s], "dL/d{x}": dx[s]})


def _relu(v: Local) -> Rule:
    return _pointwise(v, "dL/d{x} = dL/d{y} ⊙ [{x} > 0]", "[{x} > 0]",
                      (v.xs[0] > 0).to(v.dy.dtype))


def _leaky_relu(v: Local) -> Rule:
    a = v.params["negative_slope"]
    x = v.xs[0]
    return _pointwise(v, f"dL/d{{x}} = dL/d{{y}} ⊙ (1 if {{x}} > 0 else α = {a:g})",
                      "f′({x})", torch.where(x > 0, torch.ones_like(x), torch.full_like(x, a)))


def _sigmoid(v: Local) -> Rule:
    return _pointwise(v, "dL/d{x} = dL/d{y} ⊙ {y}·(1 − {y})", "{y}·(1 − {y})",
                      v.y * (1 - v.y))


def _tanh(v: Local) -> Rule:
    return _pointwise(v, "dL/d{x} = dL/d{y} ⊙ (1 − {y}²)", "1 − {y}²", 1 - v.y * v.y)


def _gelu(v: Local) -> Rule:
    approx = v.params["approximate"]
    rule = ("Φ({x}) + {x}·φ({x})" if approx == "none" else
            "f′({x}), f(x) = ½x·(1 + tanh(√(2/π)·(x + 0.044715x³)))")
    return _pointwise(v, f"dL/d{{x}} = dL/d{{y}} ⊙ ({rule})", "f′({x})",
                      gelu_slope(v.xs[0], approx))


def _silu(v: Local) -> Rule:
    sig = torch.sigmoid(v.xs[0])
    return _pointwise(v, "dL/d{x} = dL/d{y} ⊙ σ({x})·(1 + {x}·(1 − σ({x})))", "f′({x})",
                      sig * (1 + v.xs[0] * (1 - sig)))


def _elu(v: Local) -> Rule:
    a, x = v.params["alpha"], v.xs[0]
    return _pointwise(v, f"dL/d{{x}} = dL/d{{y}} ⊙ (1 if {{x}} > 0 else α·e^{{x}}, α = {a:g})",
                      "f′({x})", torch.where(x > 0, torch.ones_like(x), a * torch.exp(x)))


def _softmax(v: Local) -> Rule:
    dim = sample_dim(v.params["dim"], v.y.dim())
    dx = softmax_back(v.y, v.dy, dim)
    s = v.sample
    return Rule("dL/d{x} = {y} ⊙ (dL/d{y} − Σⱼ dL/d{y}ⱼ·{y}ⱼ)", [dx], terms={
        "{x}": v.xs[0][s], "{y}": v.y[s], "dL/d{y}": v.dy[s],
        "Σⱼ dL/d{y}ⱼ·{y}ⱼ": (v.dy * v.y).sum(dim, keepdim=True)[s], "dL/d{x}": dx[s]})


def _log_softmax(v: Local) -> Rule:
    dim = sample_dim(v.params["dim"], v.y.dim())
    p = torch.exp(v.y)
    dx = v.dy - p * v.dy.sum(dim, keepdim=True)
    s = v.sample
    return Rule("dL/d{x} = dL/d{y} − softmax({x})·Σⱼ dL/d{y}ⱼ", [dx], terms={
        "{x}": v.xs[0][s], "{y}": v.y[s], "dL/d{y}": v.dy[s], "softmax({x})": p[s],
        "dL/d{x}": dx[s]})


def _linear(v: Local) -> Rule:
    if v.params.get("lora_rank"):
        return _lora_linear(v)
    x, w = v.xs[0], need(v, "weight")
    dx, dw, db = linear_back(x, w, v.dy)
    s = v.sample
    params = {"weight": dw}
    if "bias" in v.weights:
        params["bias"] = db
    share = v.dy[s].reshape(-1, w.shape[0]).T @ x[s].reshape(-1, w.shape[1])
    return Rule("dL/d{x} = dL/d{y}·W;  dL/dW = Σₙ (dL/d{y}ₙ)ᵀ·{x}ₙ;  dL/db = Σₙ dL/d{y}ₙ",
                [dx], params, terms={"{x}": x[s], "dL/d{y}": v.dy[s],
                                     "dL/dW (this sample)": share,
                                     "dL/db (this sample)": v.dy[s].reshape(-1, w.shape[0])
                                     .sum(0), "dL/d{x}": dx[s]})


def _lora_linear(v: Local) -> Rule:
    """y = x·Wᵀ + b + (α/r)·h·Bᵀ with h = x·Aᵀ: Linear's rule on the frozen path, and the
    chain rule through the adapter's two small maps; only A and B get gradients."""
    x, w = v.xs[0], need(v, "weight")
    a, b = need(v, "lora_A"), need(v, "lora_B")
    scale = v.params["lora_alpha"] / v.params["lora_rank"]
    h = x @ a.T
    dy_b, db, _ = linear_back(h, b, v.dy)  # dL/dy·B and Σ dL/dyᵀ·h
    dh = scale * dy_b
    dx_adapter, da, _ = linear_back(x, a, dh)
    dx = v.dy @ w + dx_adapter
    s = v.sample
    rows = (v.dy[s].reshape(-1, b.shape[0]), h[s].reshape(-1, a.shape[0]),
            dh[s].reshape(-1, a.shape[0]), x[s].reshape(-1, a.shape[1]))
    return Rule(f"h = {{x}}·Aᵀ;  dL/dh = (α/r)·dL/d{{y}}·B, α/r = {scale:g};  "
                "dL/d{x} = dL/d{y}·W + dL/dh·A;  dL/dB = (α/r)·Σₙ (dL/d{y}ₙ)ᵀ·hₙ;  "
                "dL/dA = Σₙ (dL/dhₙ)ᵀ·{x}ₙ;  W and b are frozen: no gradient",
                [dx], {"lora_A": da, "lora_B": scale * db},
                terms={"{x}": x[s], "dL/d{y}": v.dy[s], "h": h[s], "dL/dh": dh[s],
                       "dL/dB (this sample)": scale * rows[0].T @ rows[1],
                       "dL/dA (this sample)": rows[2].T @ rows[3], "dL/d{x}": dx[s]})


def _reshaped(v: Local) -> Rule:
    x = v.xs[0]
    dx = v.dy.reshape(x.shape) if floating(x) else None
    terms = {"dL/d{y}": v.dy[v.sample]}
    if dx is not None:
        terms["dL/d{x}"] = dx[v.sample]
    return Rule("dL/d{x} = dL/d{y}, rearranged back to the shape of {x}", [dx], terms=terms)


def _identity(v: Local) -> Rule:
    dx = v.dy if floating(v.xs[0]) else None
    return Rule("dL/d{x} = dL/d{y}", [dx], terms={"dL/d{y}": v.dy[v.sample]})


def _dropout(v: Local) -> Rule:
    p, x, s = v.params["p"], v.xs[0], v.sample
    masks = v.extras.get("masks", [])
    if not v.extras.get("training", True) or p == 0:
        mask, scale = torch.ones_like(x, dtype=torch.bool), 1.0
    elif p == 1:
        mask, scale = torch.zeros_like(x, dtype=torch.bool), 0.0
    elif masks:
        mask, scale = masks[0], 1 / (1 - p)
    else:
        raise Unexplained(f"{v.node}'s dropout mask was not recorded in this trace")
    dx = v.dy * mask.to(v.dy.dtype) * scale
    return Rule(f"dL/d{{x}} = dL/d{{y}} ⊙ m / (1 − p), p = {p:g}, 1/(1 − p) = {scale:g}",
                [dx], terms={"{x}": x[s], "m": mask[s].to(v.dy.dtype), "dL/d{y}": v.dy[s],
                             "dL/d{x}": dx[s]})


def _per_input(v: Local, rule: Callable[[int], str],
               grads: list[Tensor | None]) -> tuple[str, dict[str, Tensor]]:
    """A merge's formula written out for each of its inputs, and their gradients."""
    formula = ";  ".join(f"dL/d{{x{k}}} = {rule(k)}" for k in range(len(v.xs)))
    terms = {"dL/d{y}": v.dy[v.sample]}
    terms.update({f"dL/d{{x{k}}}": g[v.sample] for k, g in enumerate(grads) if g is not None})
    return formula, terms


def _add(v: Local) -> Rule:
    grads: list[Tensor | None] = [v.dy.sum_to_size(x.shape) for x in v.xs]
    formula, terms = _per_input(v, lambda k: "dL/d{y}", grads)
    return Rule(formula + " (each input gets it whole, summed over broadcast dimensions)",
                grads, terms=terms)


def _multiply(v: Local) -> Rule:
    grads: list[Tensor | None] = []
    for k, x in enumerate(v.xs):
        others = torch.ones_like(v.dy)
        for j, other in enumerate(v.xs):
            if j != k:
                others = others * other
        grads.append((v.dy * others).sum_to_size(x.shape))
    formula, terms = _per_input(v, lambda k: " ⊙ ".join(
        ["dL/d{y}", *(f"{{x{j}}}" for j in range(len(v.xs)) if j != k)]), grads)
    terms.update({f"{{x{k}}}": x[v.sample] for k, x in enumerate(v.xs)})
    return Rule(formula, grads, terms=terms)


def _concat(v: Local) -> Rule:
    dim = sample_dim(v.params["dim"], v.dy.dim())
    grads: list[Tensor | None] = list(
        torch.split(v.dy, [x.shape[dim] for x in v.xs], dim=dim))
    formula, terms = _per_input(
        v, lambda k: f"the slice of dL/d{{y}} where {{x{k}}} was placed", grads)
    return Rule(formula, grads, terms=terms)


def _mean(v: Local) -> Rule:
    x = v.xs[0]
    dims = v.params["dim"] if isinstance(v.params["dim"], list) else [v.params["dim"]]
    axes = sorted(sample_dim(d, x.dim()) for d in dims)
    count = math.prod(x.shape[a] for a in axes)
    dy = v.dy
    if not v.params["keepdim"]:
        for a in axes:
            dy = dy.unsqueeze(a)
    dx = dy.expand_as(x) / count
    return Rule(f"dL/d{{x}} = dL/d{{y}} / {count}, copied to each of the {count} averaged "
                "values", [dx], terms={"dL/d{y}": v.dy[v.sample], "dL/d{x}": dx[v.sample]})


def _embedding(v: Local) -> Rule:
    tokens, s = v.xs[0], v.sample
    rows, width = v.params["num_embeddings"], v.params["embedding_dim"]
    flat = tokens.reshape(-1)
    dw = torch.zeros(rows, width, dtype=v.dy.dtype).index_add_(0, flat, v.dy.reshape(-1, width))
    pad = v.params["padding_idx"]
    if pad is not None:
        dw[pad % rows] = 0
    used = torch.unique(tokens[s].reshape(-1))
    share = torch.zeros(rows, width, dtype=v.dy.dtype).index_add_(
        0, tokens[s].reshape(-1), v.dy[s].reshape(-1, width))
    return Rule("dL/dW[i] = Σ over positions holding token i of dL/d{y} (repeated tokens "
                "add up); token ids get no gradient", [None], {"weight": dw}, terms={
                    "{x}": tokens[s], "dL/d{y}": v.dy[s], "tokens used": used,
                    "dL/dW rows of the tokens used (this sample)": share[used]})


def _batch_norm(v: Local) -> Rule:
    x, e, s = v.xs[0], v.extras, v.sample
    shape = [1, -1, *[1] * (x.dim() - 2)]
    inv = (e["var"].float() + v.params["eps"]).rsqrt().view(shape)
    x_hat = (x - e["mean"].float().view(shape)) * inv
    gamma = v.weights.get("weight")
    g = gamma.view(shape) if gamma is not None else 1.0
    if e["training"]:
        if "sum_dy" not in e:
            raise Unexplained(f"{v.node}'s batch sums were not recorded in this trace")
        m = v.batch * math.prod(x.shape[2:])
        dx = g * inv * (v.dy - e["sum_dy"].view(shape) / m
                        - x_hat * e["sum_dy_xhat"].view(shape) / m)
        formula = ("dL/d{x} = γ/σ · (dL/d{y} − mean_batch(dL/d{y}) − x̂·mean_batch(dL/d{y}·x̂))"
                   ", x̂ = ({x} − μ_batch)/σ, σ = √(var_batch + ε)")
    else:
        dx = g * inv * v.dy
        formula = "dL/d{x} = γ/σ · dL/d{y}, σ = √(running_var + ε) (evaluation mode)"
    dims = [0, *range(2, x.dim())]
    params = {}
    if gamma is not None:
        params["weight"] = (v.dy * x_hat).sum(dims)
    if "bias" in v.weights:
        params["bias"] = v.dy.sum(dims)
    terms = {"{x}": x[s], "μ": e["mean"], "σ": inv.reshape(-1).reciprocal(), "x̂": x_hat[s],
             "dL/d{y}": v.dy[s], "dL/d{x}": dx[s]}
    if e["training"]:
        terms["mean_batch(dL/d{y})"] = e["sum_dy"] / m
        terms["mean_batch(dL/d{y}·x̂)"] = e["sum_dy_xhat"] / m
    return Rule(formula + ";  dL/dγ = Σ dL/d{y}·x̂;  dL/dβ = Σ dL/d{y}", [dx], params, terms)


def _layer_norm(v: Local) -> Rule:
    """Over several trailing dimensions it is the rule over one, on them flattened."""
    x, s, k = v.xs[0], v.sample, v.params["normalized_dims"]
    gamma = v.weights.get("weight")
    dx, dg, db = layer_norm_back(x.flatten(-k), None if gamma is None else gamma.flatten(),
                                 v.params["eps"], v.dy.flatten(-k))
    dx = dx.reshape(x.shape)
    params = {}
    if gamma is not None:
        params["weight"] = dg.reshape(gamma.shape)
    if "bias" in v.weights:
        params["bias"] = db.reshape(v.weights["bias"].shape)
    over = "the last dimension" if k == 1 else f"the last {k} dimensions together"
    return Rule("dL/d{x} = (1/σ)·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)), ĝ = γ ⊙ dL/d{y}, "
                f"x̂ = ({{x}} − mean({{x}}))/σ over {over};  dL/dγ = Σ dL/d{{y}}·x̂;  "
                "dL/dβ = Σ dL/d{y}", [dx], params,
                terms={"{x}": x[s], "dL/d{y}": v.dy[s], "dL/d{x}": dx[s]})


def _standardize(v: Local) -> Rule:
    std, s = v.extras["std"].float(), v.sample
    dx = v.dy / std
    return Rule("dL/d{x} = dL/d{y} / std_train (the training data's fixed statistics)", [dx],
                terms={"{x}": v.xs[0][s], "std_train": std, "dL/d{y}": v.dy[s],
                       "dL/d{x}": dx[s]})


RULES: dict[str, RuleFn] = {
    "Linear": _linear, "Flatten": _reshaped, "Reshape": _reshaped, "Identity": _identity,
    "Dropout": _dropout, "ReLU": _relu, "LeakyReLU": _leaky_relu, "Sigmoid": _sigmoid,
    "Tanh": _tanh, "GELU": _gelu, "SiLU": _silu, "ELU": _elu, "Softmax": _softmax,
    "LogSoftmax": _log_softmax, "Add": _add, "Multiply": _multiply, "Concat": _concat,
    "Mean": _mean, "Embedding": _embedding, "BatchNorm1d": _batch_norm,
    "BatchNorm2d": _batch_norm, "LayerNorm": _layer_norm, "Standardize": _standardize,
}
