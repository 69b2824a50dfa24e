"""Sequence layers over [T, D] (time steps × features), batch first as torch says."""

from __future__ import annotations

import operator

import torch.fx
from torch import nn

from layerlab.core.layers.common import BIAS, INIT
from layerlab.core.lora import LORA_ALPHA, LORA_RANK, LoRAMultiheadAttention, caption
from layerlab.core.spec import (
    Ctor,
    Ctx,
    LayerSpec,
    Param,
    Shape,
    ShapeError,
    batch_dim,
    ctor,
    need_rank,
)

DROPOUT = Param("dropout", "float", 0.0, minimum=0.0, maximum=1.0,
                help="Dropout probability inside the layer during training.")


def _embedding_shape(ctx: Ctx) -> Shape:
    pad, vocab = ctx.params["padding_idx"], ctx.params["num_embeddings"]
    if pad is not None and not -vocab <= pad < vocab:
        raise ShapeError(f"padding_idx={pad} is not a token id below num_embeddings={vocab}")
    return (*ctx.shape, ctx.params["embedding_dim"])


def _embedding(ctx: Ctx) -> Ctor:
    return ctor(nn.Embedding, **{k: v for k, v in ctx.params.items() if k != "init"})


def _heads_shape(ctx: Ctx, heads: str) -> Shape:
    need_rank(ctx, (2,), "[T, D] sequence")
    dim, n = ctx.shape[-1], ctx.params[heads]
    if dim % n:
        raise ShapeError(f"{heads}={n} must divide the feature size {dim} of {ctx.src()}")
    return ctx.shape


def _emit_attention(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
    """Self-attention: query, key and value are all the input; keep the output only."""
    x = args[0]
    pair = g.call_module(ctx.node_id, (x, x, x), {"need_weights": False})
    return g.call_function(operator.getitem, (pair, 0))


def _attention(ctx: Ctx) -> Ctor:
    p = ctx.params
    if p["lora_rank"]:  # frozen projections plus trainable adapters (core/lora.py)
        return ctor(LoRAMultiheadAttention, ctx.shape[-1], p["num_heads"],
                    dropout=p["dropout"], bias=p["bias"], batch_first=True,
                    rank=p["lora_rank"], alpha=p["lora_alpha"])
    return ctor(nn.MultiheadAttention, ctx.shape[-1], p["num_heads"], dropout=p["dropout"],
                bias=p["bias"], batch_first=True)


def _emit_first(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
    """Recurrent layers return (output sequence, final state); keep the sequence."""
    pair = g.call_module(ctx.node_id, (args[0],))
    return g.call_function(operator.getitem, (pair, 0))


def _rnn_shape(ctx: Ctx) -> Shape:
    need_rank(ctx, (2,), "[T, D] sequence")
    dirs = 2 if ctx.params["bidirectional"] else 1
    return (ctx.shape[0], ctx.params["hidden_size"] * dirs)


def _rnn(cls: type[nn.Module]):
    def build(ctx: Ctx) -> Ctor:
        p = {k: v for k, v in ctx.params.items() if k != "init"}
        return ctor(cls, ctx.shape[-1], batch_first=True, **p)
    return build


def _mean_shape(ctx: Ctx) -> Shape:
    dims = ctx.params["dim"]
    listed = [batch_dim(ctx, d) for d in (dims if isinstance(dims, list) else [dims])]
    axes = set(listed)
    if len(axes) < len(listed):
        raise ShapeError(f"dim={dims} names one dimension twice; torch refuses that")
    if ctx.params["keepdim"]:
        return tuple(1 if i in axes else s for i, s in enumerate(ctx.shape))
    return tuple(s for i, s in enumerate(ctx.shape) if i not in axes)


def _emit_mean(g: torch.fx.Graph, ctx: Ctx, args: list[torch.fx.Node]) -> torch.fx.Node:
    dims = ctx.params["dim"]
    dim = tuple(dims) if isinstance(dims, list) else dims
    return g.call_method("mean", (args[0],), {"dim": dim, "keepdim": ctx.params["keepdim"]})


def _rnn_spec(name: str, description: str, formula: str, cls: type[nn.Module]) -> LayerSpec:
    return LayerSpec(
        name, "sequence", description, formula,
        params=(
            Param("hidden_size", "int", minimum=1, suggest=32,
                  help="Features of the hidden state (per direction)."),
            Param("num_layers", "int", 1, minimum=1, help="Stacked recurrent layers."),
            BIAS,
            Param("dropout", "float", 0.0, minimum=0.0, maximum=1.0,
                  help="Dropout between stacked layers (needs num_layers ≥ 2)."),
            Param("bidirectional", "bool", False, help="Also read the sequence backwards."),
            INIT,
        ),
        infer=_rnn_shape, build=_rnn(cls), emit=_emit_first, key_params=("hidden_size",),
    )


SPECS = [
    LayerSpec(
        "Embedding", "sequence", "Looks up a learned vector for each token id.",
        "y = W[x]",
        params=(
            Param("num_embeddings", "int", minimum=1, suggest=100,
                  help="Vocabulary size: token ids run from 0 to num_embeddings - 1."),
            Param("embedding_dim", "int", minimum=1, suggest=32,
                  help="Length of each token's vector."),
            Param("padding_idx", "int", None, nullable=True,
                  help="A token id whose vector stays zero and gets no gradient."),
            INIT,
        ),
        infer=_embedding_shape, build=_embedding, input_dtype="int64",
        key_params=("num_embeddings", "embedding_dim"),
    ),
    LayerSpec(
        "MultiheadAttention", "sequence", "Self-attention: every position mixes the values of "
        "all positions, weighted by how well its query matches their keys.",
        "y = softmax(Q·Kᵀ / √d)·V per head, then Wₒ",
        params=(
            Param("num_heads", "int", minimum=1, suggest=2, help="Parallel attention heads; "
                  "must divide the feature size."),
            DROPOUT, BIAS, INIT, LORA_RANK, LORA_ALPHA,
        ),
        infer=lambda c: _heads_shape(c, "num_heads"),
        build=_attention, emit=_emit_attention, key_params=("num_heads",),
        caption=caption(("num_heads",)), keywords=("lora", "adapter", "fine-tuning"),
    ),
    LayerSpec(
        "TransformerEncoderLayer", "sequence", "One transformer encoder block: self-attention "
        "and a feed-forward network, each with a residual connection and LayerNorm.",
        "y = LN(x + Attn(x)); y = LN(y + FF(y))",
        params=(
            Param("nhead", "int", minimum=1, suggest=2, help="Attention heads; must divide "
                  "the feature size."),
            Param("dim_feedforward", "int", 2048, minimum=1,
                  help="Width of the feed-forward network."),
            Param("dropout", "float", 0.1, minimum=0.0, maximum=1.0,
                  help="Dropout probability during training."),
            Param("activation", "choice", "relu", choices=("relu", "gelu"),
                  help="Activation of the feed-forward network."),
            Param("layer_norm_eps", "float", 1e-5, minimum=0.0, help="LayerNorm's ε."),
            Param("norm_first", "bool", False, help="Normalise before attention (pre-LN)."),
            BIAS, INIT,
        ),
        infer=lambda c: _heads_shape(c, "nhead"),
        build=lambda c: ctor(nn.TransformerEncoderLayer,
            c.shape[-1], batch_first=True, **{k: v for k, v in c.params.items()
                                              if k != "init"}),
        key_params=("nhead", "dim_feedforward"),
    ),
    _rnn_spec("LSTM", "Long short-term memory: a recurrent layer whose gates decide what to "
              "keep, forget and output at each step.",
              "c_t = f⊙c_{t-1} + i⊙g; h_t = o⊙tanh(c_t)", nn.LSTM),
    _rnn_spec("GRU", "Gated recurrent unit: a lighter LSTM with update and reset gates.",
              "h_t = (1 - z)⊙n + z⊙h_{t-1}", nn.GRU),
    LayerSpec(
        "Mean", "sequence", "Averages over the given dimension(s), e.g. over time steps to get "
        "one vector per sequence.", "y = mean(x, dim)",
        params=(
            Param("dim", "dims", 1, help="Dimension(s) to average over (batch is 0)."),
            Param("keepdim", "bool", False, help="Keep the averaged dimensions as size 1."),
        ),
        infer=_mean_shape, emit=_emit_mean, key_params=("dim",),
    ),
]
