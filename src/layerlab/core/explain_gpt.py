"""Chain-rule rules of the GPT layers, unrolled into their named parts.

CausalSelfAttention is MultiheadAttention's rule (explain_composite) with the scores above
the diagonal set to −∞: their softmax weights are 0, so the softmax's backward sends them
no gradient. Its fused `qkv` Linear holds W_Q, W_K, W_V stacked as MultiheadAttention's
in_proj_weight does. GPTBlock chains LayerNorm, that attention, the residual, LayerNorm,
the GELU MLP and the second residual, with the dropout masks the step drew.
"""

from __future__ import annotations

import dataclasses

import torch

from layerlab.core.explain_composite import (
    _attend,
    _attend_back,
    _drop,
    _linear,
    _linear_back,
    _norm,
    _norm_back,
    _sub,
)
from layerlab.core.explain_rules import (
    Local,
    Part,
    Rule,
    RuleFn,
    Tensor,
    Unexplained,
    gelu_slope,
    need,
)
from layerlab.core.lora import linear_adapter_grads, merged_linear_weights

# our attention's parameter names → MultiheadAttention's, which explain_composite reads
TORCH_NAMES = {"qkv.weight": "in_proj_weight", "qkv.bias": "in_proj_bias",
               "out_proj.weight": "out_proj.weight", "out_proj.bias": "out_proj.bias"}


def _masks(v: Local, count: int) -> list[Tensor | None]:
    """The dropout masks the layer drew, in order; None everywhere without dropout."""
    if v.params["dropout"] == 0 or not v.extras.get("training", True):
        return [None] * count
    masks = v.extras.get("masks", [])
    if len(masks) != count:
        raise Unexplained(f"{v.node}'s dropout masks were not all recorded in this trace")
    keep = v.dy.shape[0]
    return [m[:keep] for m in masks]


def _as_torch(w: dict[str, Tensor]) -> dict[str, Tensor]:
    return {TORCH_NAMES[k]: t for k, t in w.items() if k in TORCH_NAMES}


def _from_torch(grads: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    back = {t: k for k, t in TORCH_NAMES.items()}
    return {f"{prefix}{back[k]}": g for k, g in grads.items()}


def _causal(v: Local) -> Rule:
    need(v, "qkv.weight")
    need(v, "out_proj.weight")
    w = _as_torch(v.weights)
    a = _attend(v.xs[0], w, v.params["num_heads"], v.params["dropout"], _masks(v, 1)[0],
                causal=True)
    dx, params, parts = _attend_back(a, w, v.dy, v.sample)
    return Rule("Q, K, V = {x}·W_Q,K,Vᵀ;  A = softmax(Q·Kᵀ/√d + M) per head, M = −∞ above "
                "the diagonal (A = 0 there: no position reads a later one);  {y} = "
                "(A·V)·W_Oᵀ;  dL/d{x} = dL/dQ·W_Q + dL/dK·W_K + dL/dV·W_V, each found by "
                "going back through the parts below", [dx], _from_torch(params),
                terms={"{x}": v.xs[0][v.sample], "dL/d{y}": v.dy[v.sample],
                       "dL/d{x}": dx[v.sample]}, parts=_causal_parts(parts))


def _causal_parts(parts: list[Part], prefix: str = "") -> list[Part]:
    """The softmax part says that the mask zeroes the weights above the diagonal."""
    return [Part(p.name.replace("softmax", "masked softmax"), "A = softmax(S + M) per row, "
                 "M = −∞ above the diagonal, so A = 0 there;  dL/dS = A ⊙ (dL/dA − Σ dL/dA "
                 "⊙ A), 0 above the diagonal", p.value, p.grad)
            if p.name == f"{prefix}softmax" else p for p in parts]


def _gpt_block(v: Local) -> Rule:
    for name in ("attn.qkv.weight", "attn.out_proj.weight", "fc.weight", "proj.weight"):
        need(v, name)
    x, p, eps, s = v.xs[0], v.params["dropout"], v.params["layer_norm_eps"], v.sample
    m_attn, m1, m2 = _masks(v, 3)
    ln1, ln2 = _sub(v.weights, "ln1."), _sub(v.weights, "ln2.")
    fc, proj = _sub(v.weights, "fc."), _sub(v.weights, "proj.")
    attn_w = _as_torch(_sub(v.weights, "attn."))
    h1 = _norm(x, ln1, eps)
    a = _attend(h1, attn_w, v.params["num_heads"], p, m_attn, causal=True)
    r = x + _drop(a.out, m1, p)
    h2 = _norm(r, ln2, eps)
    hidden = _linear(h2, fc)
    act = torch.nn.functional.gelu(hidden)
    mlp = _linear(act, proj)
    params: dict[str, Tensor] = {}
    dmlp = _drop(v.dy, m2, p)
    dact = _linear_back(act, proj, dmlp, "proj.", params)
    dhidden = dact * gelu_slope(hidden, "none")
    dh2 = _linear_back(h2, fc, dhidden, "fc.", params)
    dr = v.dy + _norm_back(r, ln2, eps, dh2, "ln2.", params)
    dh1, attn_params, attn_parts = _attend_back(a, attn_w, _drop(dr, m1, p), s,
                                                "attention: ")
    dx = dr + _norm_back(x, ln1, eps, dh1, "ln1.", params)
    params.update(_from_torch(attn_params, "attn."))
    parts = [Part("LN₁", "h₁ = LN₁({x})", h1[s], dh1[s]),
             *_causal_parts(attn_parts, "attention: "),
             Part("x + attention", "r = {x} + dropout(Attn(h₁));  dL/dr = dL/d{y} + back "
                  "through the MLP and LN₂", r[s], dr[s]),
             Part("LN₂", "h₂ = LN₂(r)", h2[s], dh2[s]),
             Part("MLP hidden", "z = h₂·W₁ᵀ + b₁;  dL/dz = dL/da ⊙ GELU′(z)", hidden[s],
                  dhidden[s]),
             Part("GELU", "a = GELU(z)", act[s], dact[s]),
             Part("MLP output", "m = a·W₂ᵀ + b₂;  {y} = r + dropout(m)", mlp[s], dmlp[s])]
    return Rule("r = {x} + Attn(LN₁({x}));  {y} = r + MLP(LN₂(r));  the gradient takes both "
                "roads at each residual: dL/dr = dL/d{y} + (back through the MLP and LN₂), "
                "dL/d{x} = dL/dr + (back through attention and LN₁)", [dx], params,
                terms={"{x}": x[s], "dL/d{y}": v.dy[s], "dL/d{x}": dx[s]}, parts=parts)


def _embedding(v: Local) -> Rule:
    """Token ids carry no gradient; each vector used gets dL/dy at its positions."""
    ids, dy, width = v.xs[0].long(), v.dy, v.params["embedding_dim"]
    steps = ids.shape[1]
    d_token = torch.zeros(v.params["num_embeddings"], width, dtype=dy.dtype).index_add_(
        0, ids.reshape(-1), dy.reshape(-1, width))
    d_position = torch.zeros(v.params["max_len"], width, dtype=dy.dtype)
    d_position[:steps] = dy.sum(0)
    s = v.sample
    return Rule("{y}[t] = W_tok[{x}[t]] + W_pos[t];  dL/dW_tok[i] = Σ dL/d{y}[t] over the "
                "positions whose token is i, dL/dW_pos[t] = Σ dL/d{y}[t] over the samples; "
                "token ids get no gradient", [None],
                {"token.weight": d_token, "position": d_position},
                terms={"{x}": ids[s], "dL/d{y}": dy[s]})


def _lora(rule: RuleFn) -> RuleFn:
    """With `lora_rank`: the rule on the merged projections W′ = W + (α/r)·B·A, and the
    chain rule through W′ to the adapters; the layer's other weights are frozen."""
    def explain(v: Local) -> Rule:
        rank = v.params.get("lora_rank")
        if not rank:
            return rule(v)
        scale = v.params["lora_alpha"] / rank
        out = rule(dataclasses.replace(v, weights=merged_linear_weights(v.weights, scale)))
        return dataclasses.replace(
            out, params=linear_adapter_grads(v.weights, out.params, scale),
            formula=f"{out.formula};  LoRA: W′ = W + (α/r)·B·A, α/r = {scale:g};  dL/dA = "
                    "(α/r)·Bᵀ·dL/dW′, dL/dB = (α/r)·dL/dW′·Aᵀ;  every other weight is frozen")
    return explain


RULES: dict[str, RuleFn] = {"CausalSelfAttention": _lora(_causal),
                            "GPTBlock": _lora(_gpt_block),
                            "TokenPositionEmbedding": _embedding}
