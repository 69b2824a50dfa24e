"""Chain-rule rules of the attention layers, unrolled into their named parts.

MultiheadAttention (self-attention, batch first, as the compiler emits it) is rebuilt from
its weights: Q, K, V; the scores Q·Kᵀ/√d; their softmax; its dropout mask when training;
the weighted sum of V; the output projection — and the gradient goes back through each.
TransformerEncoderLayer chains that with its residuals, LayerNorms and feed-forward
network, in torch's order (post-LN or pre-LN), with the dropout masks the step drew.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from layerlab.core.explain_rules import (
    Local,
    Part,
    Rule,
    RuleFn,
    Tensor,
    Unexplained,
    gelu_slope,
    layer_norm,
    layer_norm_back,
    linear_back,
    need,
    softmax_back,
)
from layerlab.core.lora import attention_adapter_grads, merged_attention_weights


@dataclass
class _Attention:
    """The forward pass of self-attention over x [N, T, D], every piece kept."""

    x: Tensor
    q: Tensor  # [N, H, T, d] (and k, v)
    k: Tensor
    v: Tensor
    scores: Tensor  # [N, H, T, T]
    weights: Tensor  # softmax of the scores
    kept: Tensor  # the weights after dropout (the weights themselves without it)
    scale: float  # 1/(1 − p) where kept, 0 where dropped; 1 without dropout
    mask: Tensor | None
    mixed: Tensor  # the weighted sum of V, heads joined: [N, T, D]
    out: Tensor


def _heads(t: Tensor, h: int) -> Tensor:
    n, steps, dim = t.shape
    return t.reshape(n, steps, h, dim // h).transpose(1, 2)


def _join(t: Tensor) -> Tensor:
    n, h, steps, d = t.shape
    return t.transpose(1, 2).reshape(n, steps, h * d)


def _attend(x: Tensor, w: dict[str, Tensor], heads: int, p: float,
            mask: Tensor | None, causal: bool = False) -> _Attention:
    """`causal`: scores above the diagonal are −∞ (CausalSelfAttention), so their weights
    are 0 and the softmax's backward sends them no gradient."""
    qkv = x @ w["in_proj_weight"].T
    if "in_proj_bias" in w:
        qkv = qkv + w["in_proj_bias"]
    q, k, v = (_heads(t, heads) for t in qkv.chunk(3, dim=-1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    masked = scores
    if causal:
        steps = scores.shape[-1]
        future = torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1)
        masked = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(masked, dim=-1)
    scale = 1.0
    kept = weights
    if mask is not None:
        scale = 1.0 / (1.0 - p)
        kept = weights * mask.to(weights.dtype) * scale
    mixed = _join(kept @ v)
    out = mixed @ w["out_proj.weight"].T
    if "out_proj.bias" in w:
        out = out + w["out_proj.bias"]
    return _Attention(x, q, k, v, scores, weights, kept, scale, mask, mixed, out)


def _attend_back(a: _Attention, w: dict[str, Tensor], dout: Tensor, s: int,
                 prefix: str = "") -> tuple[Tensor, dict[str, Tensor], list[Part]]:
    """dL/dx, the parameter gradients and the parts, from dL/d(output)."""
    heads = a.q.shape[1]
    dmixed, dwo, dbo = linear_back(a.mixed, w["out_proj.weight"], dout)
    dsum = _heads(dmixed, heads)
    dkept = dsum @ a.v.transpose(-1, -2)
    dv = a.kept.transpose(-1, -2) @ dsum
    dweights = dkept if a.mask is None else dkept * a.mask.to(dkept.dtype) * a.scale
    dscores = softmax_back(a.weights, dweights, -1)
    root = 1 / math.sqrt(a.q.shape[-1])
    dq, dk = dscores @ a.k * root, dscores.transpose(-1, -2) @ a.q * root
    dqkv = torch.cat([_join(dq), _join(dk), _join(dv)], dim=-1)
    dx, dwin, dbin = linear_back(a.x, w["in_proj_weight"], dqkv)
    params = {"in_proj_weight": dwin, "out_proj.weight": dwo}
    if "in_proj_bias" in w:
        params["in_proj_bias"] = dbin
    if "out_proj.bias" in w:
        params["out_proj.bias"] = dbo
    parts = [
        Part(f"{prefix}Q", "Q = {x}·W_Qᵀ + b_Q, split into heads", a.q[s], dq[s]),
        Part(f"{prefix}K", "K = {x}·W_Kᵀ + b_K", a.k[s], dk[s]),
        Part(f"{prefix}V", "V = {x}·W_Vᵀ + b_V", a.v[s], dv[s]),
        Part(f"{prefix}scores", "S = Q·Kᵀ/√d;  dL/dQ = dL/dS·K/√d, dL/dK = dL/dSᵀ·Q/√d",
             a.scores[s], dscores[s]),
        Part(f"{prefix}softmax", "A = softmax(S) per row;  dL/dS = A ⊙ (dL/dA − Σ dL/dA ⊙ A)",
             a.weights[s], dweights[s]),
    ]
    if a.mask is not None:
        parts.append(Part(f"{prefix}attention dropout", "A′ = A ⊙ m / (1 − p)",
                          a.kept[s], dkept[s]))
    parts += [
        Part(f"{prefix}weighted sum", "O = A·V, heads joined;  dL/dA = dL/dO·Vᵀ, "
             "dL/dV = Aᵀ·dL/dO", a.mixed[s], dmixed[s]),
        Part(f"{prefix}output projection", "out = O·W_Oᵀ + b_O;  dL/dO = dL/dout·W_O",
             a.out[s], dout[s]),
    ]
    return dx, params, parts


def _masks(v: Local, count: int) -> list[Tensor | None]:
    """The dropout masks a composite layer drew, in order; None everywhere when none."""
    masks = v.extras.get("masks", [])
    if not masks:
        return [None] * count
    if len(masks) != count:
        raise Unexplained(f"{v.node}'s dropout masks were not all recorded in this trace")
    keep = v.dy.shape[0]
    return [m[:keep] for m in masks]


def _attention(v: Local) -> Rule:
    heads = v.params["num_heads"]
    need(v, "in_proj_weight")
    need(v, "out_proj.weight")
    weights, rank = v.weights, v.params.get("lora_rank")
    if rank:  # LoRA: the projections are W′ = W + (α/r)·B·A
        scale = v.params["lora_alpha"] / rank
        weights = merged_attention_weights(weights, scale)
    mask = _masks(v, 1)[0] if v.params["dropout"] > 0 else None
    a = _attend(v.xs[0], weights, heads, v.params["dropout"], mask)
    dx, params, parts = _attend_back(a, weights, v.dy, v.sample)
    lora = ""
    if rank:
        params = attention_adapter_grads(weights, params, scale)
        lora = (f";  LoRA: W′ = W + (α/r)·B·A, α/r = {scale:g};  dL/dA = (α/r)·Bᵀ·dL/dW′, "
                "dL/dB = (α/r)·dL/dW′·Aᵀ;  W and the biases are frozen")
    return Rule("Q, K, V = {x}·W_Q,K,Vᵀ;  A = softmax(Q·Kᵀ/√d) per head;  {y} = (A·V)·W_Oᵀ;  "
                "dL/d{x} = dL/dQ·W_Q + dL/dK·W_K + dL/dV·W_V, each found by going back "
                "through the parts below" + lora, [dx], params,
                terms={"{x}": v.xs[0][v.sample], "dL/d{y}": v.dy[v.sample],
                       "dL/d{x}": dx[v.sample]}, parts=parts)


def _sub(weights: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: t for k, t in weights.items() if k.startswith(prefix)}


def _norm(x: Tensor, w: dict[str, Tensor], eps: float) -> Tensor:
    x_hat, _ = layer_norm(x, eps)
    y = x_hat * w["weight"] if "weight" in w else x_hat
    return y + w["bias"] if "bias" in w else y


def _norm_back(x: Tensor, w: dict[str, Tensor], eps: float, dy: Tensor,
               prefix: str, params: dict[str, Tensor]) -> Tensor:
    dx, dg, db = layer_norm_back(x, w.get("weight"), eps, dy)
    if "weight" in w:
        params[f"{prefix}weight"] = dg
    if "bias" in w:
        params[f"{prefix}bias"] = db
    return dx


def _linear(x: Tensor, w: dict[str, Tensor]) -> Tensor:
    y = x @ w["weight"].T
    return y + w["bias"] if "bias" in w else y


def _linear_back(x: Tensor, w: dict[str, Tensor], dy: Tensor, prefix: str,
                 params: dict[str, Tensor]) -> Tensor:
    dx, dw, db = linear_back(x, w["weight"], dy)
    params[f"{prefix}weight"] = dw
    if "bias" in w:
        params[f"{prefix}bias"] = db
    return dx


def _drop(t: Tensor, mask: Tensor | None, p: float) -> Tensor:
    return t if mask is None else t * mask.to(t.dtype) / (1 - p)


class _FeedForward:
    """linear2(dropout(activation(linear1(x)))) with its backward."""

    def __init__(self, v: Local, x: Tensor, mask: Tensor | None) -> None:
        self.v, self.x, self.mask = v, x, mask
        self.w1, self.w2 = _sub(v.weights, "linear1."), _sub(v.weights, "linear2.")
        self.hidden = _linear(x, self.w1)
        gelu = v.params["activation"] == "gelu"
        self.act = torch.nn.functional.gelu(self.hidden) if gelu else self.hidden.clamp(min=0)
        self.slope = gelu_slope(self.hidden, "none") if gelu else (self.hidden > 0).float()
        self.out = _linear(_drop(self.act, mask, v.params["dropout"]), self.w2)

    def back(self, dout: Tensor, params: dict[str, Tensor], parts: list[Part]) -> Tensor:
        p, s = self.v.params["dropout"], self.v.sample
        dropped = _drop(self.act, self.mask, p)
        dact = _drop(_linear_back(dropped, self.w2, dout, "linear2.", params), self.mask, p)
        dhidden = dact * self.slope
        parts += [Part("feed-forward hidden", "h₁ = linear1(·);  dL/dh₁ = dL/da ⊙ f′(h₁)",
                       self.hidden[s], dhidden[s]),
                  Part("feed-forward activation", "a = f(h₁)", self.act[s], dact[s]),
                  Part("feed-forward output", "linear2(dropout(a))", self.out[s], dout[s])]
        return _linear_back(self.x, self.w1, dhidden, "linear1.", params)


def _encoder(v: Local) -> Rule:
    x, p, eps, s = v.xs[0], v.params["dropout"], v.params["layer_norm_eps"], v.sample
    if p > 0 and v.extras.get("training", True) and not v.extras.get("masks"):
        raise Unexplained(f"{v.node}'s dropout masks were not recorded in this trace")
    m_attn, m1, m_ff, m2 = _masks(v, 4) if p > 0 else [None] * 4
    for name in ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight",
                 "linear2.weight"):
        need(v, name)
    attn_w = _sub(v.weights, "self_attn.")
    n1, n2 = _sub(v.weights, "norm1."), _sub(v.weights, "norm2.")
    params: dict[str, Tensor] = {}
    parts: list[Part] = []
    if v.params["norm_first"]:
        h1 = _norm(x, n1, eps)
        a = _attend(h1, attn_w, v.params["nhead"], p, m_attn)
        r1 = x + _drop(a.out, m1, p)
        h2 = _norm(r1, n2, eps)
        ff = _FeedForward(v, h2, m_ff)
        dr1 = v.dy + _norm_back(r1, n2, eps, ff.back(_drop(v.dy, m2, p), params, parts),
                                "norm2.", params)
        dh1, attn_params, attn_parts = _attend_back(a, attn_w, _drop(dr1, m1, p), s,
                                                    "attention: ")
        dx = dr1 + _norm_back(x, n1, eps, dh1, "norm1.", params)
        formula = ("r = {x} + Attn(LN₁({x}));  {y} = r + FF(LN₂(r));  the gradient takes "
                   "both roads at each residual: dL/dr = dL/d{y} + (back through FF, LN₂)")
    else:
        a = _attend(x, attn_w, v.params["nhead"], p, m_attn)
        r1 = x + _drop(a.out, m1, p)
        h = _norm(r1, n1, eps)
        ff = _FeedForward(v, h, m_ff)
        r2 = h + _drop(ff.out, m2, p)
        dr2 = _norm_back(r2, n2, eps, v.dy, "norm2.", params)
        dh = dr2 + ff.back(_drop(dr2, m2, p), params, parts)
        dr1 = _norm_back(r1, n1, eps, dh, "norm1.", params)
        dxa, attn_params, attn_parts = _attend_back(a, attn_w, _drop(dr1, m1, p), s,
                                                    "attention: ")
        dx = dr1 + dxa
        parts.insert(0, Part("LN₁(x + attention)", "h = LN₁(r₁);  dL/dh = dL/dr₂ + back "
                             "through FF", h[s], dh[s]))
        parts.append(Part("h + feed-forward", "r₂ = h + FF(h);  dL/dr₂ = back through LN₂",
                          r2[s], dr2[s]))
        formula = ("r₁ = {x} + Attn({x});  h = LN₁(r₁);  {y} = LN₂(h + FF(h));  the gradient "
                   "takes both roads at each residual: dL/dr₁ = back through LN₁ of "
                   "(dL/dh + back through FF)")
    params.update({f"self_attn.{k}": t for k, t in attn_params.items()})
    parts = [*attn_parts, Part("x + attention", "r₁ = {x} + dropout(Attn)", r1[s], dr1[s]),
             *parts]
    return Rule(formula, [dx], params, terms={"{x}": x[s], "dL/d{y}": v.dy[s],
                                               "dL/d{x}": dx[s]}, parts=parts)


RULES: dict[str, RuleFn] = {"MultiheadAttention": _attention,
                            "TransformerEncoderLayer": _encoder}
