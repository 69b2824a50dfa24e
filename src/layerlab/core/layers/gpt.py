"""The parts of a GPT: token + learned position embedding, causal self-attention, and the
pre-norm block. Written out in plain torch (no fused kernel) so that the attention weights
can be looked at, the Python export carries the same code, and ONNX exports it op by op.
"""

from __future__ import annotations

import torch
from torch import nn

from layerlab.core.layers.common import BIAS, INIT
from layerlab.core.lora import LORA_ALPHA, LORA_RANK, adapt_linears, caption
from layerlab.core.spec import Ctor, Ctx, LayerSpec, Param, Shape, ShapeError, ctor, need_rank


class TokenPositionEmbedding(nn.Module):
    """A learned vector per token id plus a learned vector per position (GPT-2's wte + wpe);
    positions beyond `max_len` have no vector. Both start as nn.Embedding's do, N(0, 1)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, max_len: int) -> None:
        super().__init__()
        self.token = nn.Embedding(num_embeddings, embedding_dim)
        self.position = nn.Parameter(torch.empty(max_len, embedding_dim))
        nn.init.normal_(self.position)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.token(x) + self.position[: x.shape[1]]


class CausalSelfAttention(nn.Module):
    """Self-attention in which position t sees positions 0 … t only: the scores above the
    diagonal are set to −∞ before the softmax, so those weights are exactly 0."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output [N, T, D] and the attention weights [N, heads, T, T]."""
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        scores = q @ k.transpose(-2, -1) * (d // self.num_heads) ** -0.5
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        mixed = (self.drop(weights) @ v).transpose(1, 2).reshape(n, t, d)
        return self.out_proj(mixed), weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x)[0]


class GPTBlock(nn.Module):
    """GPT-2's block: x + Attn(LN₁(x)), then + MLP(LN₂(·)), the MLP Linear–GELU–Linear."""

    parts = (CausalSelfAttention,)  # classes the Python export writes out before this one

    def __init__(self, embed_dim: int, num_heads: int, dim_feedforward: int,
                 dropout: float = 0.0, bias: bool = True, layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.attn = CausalSelfAttention(embed_dim, num_heads, dropout, bias)
        self.ln2 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.fc = nn.Linear(embed_dim, dim_feedforward, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim_feedforward, embed_dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.proj(self.act(self.fc(self.ln2(x)))))


class LoRACausalSelfAttention(CausalSelfAttention):
    """CausalSelfAttention with its weights frozen and a LoRA adapter on `qkv` and
    `out_proj` (core/lora.py); the same keys, so a pre-trained layer loads by name."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0,
                 bias: bool = True, rank: int = 4, alpha: float = 8.0) -> None:
        super().__init__(embed_dim, num_heads, dropout, bias)
        adapt_linears(self, ("qkv", "out_proj"), rank, alpha)


class LoRAGPTBlock(GPTBlock):
    """GPTBlock with every weight frozen and a LoRA adapter on its attention's projections,
    and on the MLP's two Linears with `mlp` (core/lora.py)."""

    def __init__(self, embed_dim: int, num_heads: int, dim_feedforward: int,
                 dropout: float = 0.0, bias: bool = True, layer_norm_eps: float = 1e-5,
                 rank: int = 4, alpha: float = 8.0, mlp: bool = False) -> None:
        super().__init__(embed_dim, num_heads, dim_feedforward, dropout, bias, layer_norm_eps)
        adapt_linears(self, ("attn.qkv", "attn.out_proj", *(("fc", "proj") if mlp else ())),
                      rank, alpha)


def _attention(ctx: Ctx) -> Ctor:
    p = ctx.params
    if p["lora_rank"]:  # frozen projections plus trainable adapters (core/lora.py)
        return ctor(LoRACausalSelfAttention, ctx.shape[-1], p["num_heads"],
                    dropout=p["dropout"], bias=p["bias"], rank=p["lora_rank"],
                    alpha=p["lora_alpha"])
    return ctor(CausalSelfAttention, ctx.shape[-1], p["num_heads"], dropout=p["dropout"],
                bias=p["bias"])


def _embedding_shape(ctx: Ctx) -> Shape:
    need_rank(ctx, (1,), "[T] token-id")
    steps, most = ctx.shape[0], ctx.params["max_len"]
    if steps > most:
        raise ShapeError(f"{ctx.node_id} has position vectors for max_len={most} tokens but "
                         f"receives {ctx.src()}; raise max_len to at least {steps}")
    return (steps, ctx.params["embedding_dim"])


def _heads_shape(ctx: Ctx) -> Shape:
    need_rank(ctx, (2,), "[T, D] sequence")
    dim, heads = ctx.shape[-1], ctx.params["num_heads"]
    if dim % heads:
        raise ShapeError(f"num_heads={heads} must divide the feature size {dim} of "
                         f"{ctx.src()}")
    return ctx.shape


def feedforward_width(ctx: Ctx) -> int:
    """The MLP's width: as given, else GPT's four times the feature size."""
    width = ctx.params["dim_feedforward"]
    return 4 * ctx.shape[-1] if width is None else width


def _block(ctx: Ctx) -> Ctor:
    p = ctx.params
    common = {"dropout": p["dropout"], "bias": p["bias"], "layer_norm_eps": p["layer_norm_eps"]}
    if p["lora_rank"]:  # every weight frozen, adapters on the projections (core/lora.py)
        return ctor(LoRAGPTBlock, ctx.shape[-1], p["num_heads"], feedforward_width(ctx),
                    **common, rank=p["lora_rank"], alpha=p["lora_alpha"], mlp=p["lora_mlp"])
    return ctor(GPTBlock, ctx.shape[-1], p["num_heads"], feedforward_width(ctx), **common)


HEADS = Param("num_heads", "int", minimum=1, suggest=2,
              help="Parallel attention heads; must divide the feature size.")
DROPOUT = Param("dropout", "float", 0.0, minimum=0.0, maximum=1.0,
                help="Dropout on the attention weights and the residual branches while "
                     "training.")

SPECS = [
    LayerSpec(
        "TokenPositionEmbedding", "sequence", "A learned vector for each token id plus a "
        "learned vector for each position, so that attention can tell the order of tokens "
        "(GPT's input).", "y[t] = W_tok[x[t]] + W_pos[t]",
        params=(
            Param("num_embeddings", "int", minimum=1, suggest=100,
                  help="Vocabulary size: token ids run from 0 to num_embeddings - 1."),
            Param("embedding_dim", "int", minimum=1, suggest=32,
                  help="Length of each token's vector."),
            Param("max_len", "int", minimum=1, suggest=64,
                  help="Positions with a learned vector: the longest sequence it reads."),
            INIT,
        ),
        infer=_embedding_shape,
        build=lambda c: ctor(TokenPositionEmbedding, c.params["num_embeddings"],
                             c.params["embedding_dim"], c.params["max_len"]),
        input_dtype="int64", key_params=("num_embeddings", "embedding_dim"),
        keywords=("positional", "wpe", "wte", "gpt"),
    ),
    LayerSpec(
        "CausalSelfAttention", "sequence", "Self-attention that only looks back: position t "
        "mixes the values of positions 0 … t, so a model can be trained to predict the next "
        "token at every position at once.",
        "y = softmax(Q·Kᵀ/√d + M)·V per head, then Wₒ; M = −∞ above the diagonal",
        params=(HEADS, DROPOUT, BIAS, INIT, LORA_RANK, LORA_ALPHA),
        infer=_heads_shape, build=_attention, key_params=("num_heads",),
        caption=caption(("num_heads",)),
        keywords=("masked", "attention", "gpt", "decoder", "lora", "adapter"),
    ),
    LayerSpec(
        "GPTBlock", "sequence", "One GPT block: causal self-attention and an MLP, each read "
        "through a LayerNorm first and added back to its input (pre-norm residuals).",
        "h = x + Attn(LN₁(x));  y = h + W₂·GELU(W₁·LN₂(h))",
        params=(
            HEADS,
            Param("dim_feedforward", "int", None, minimum=1, nullable=True,
                  help="Width of the MLP; empty: 4 × the feature size, as in GPT."),
            DROPOUT, BIAS,
            Param("layer_norm_eps", "float", 1e-5, minimum=0.0, help="LayerNorm's ε."),
            INIT, LORA_RANK, LORA_ALPHA,
            Param("lora_mlp", "bool", False, help="With lora_rank > 0: adapters on the "
                  "MLP's two Linears too, not only on the attention's projections."),
        ),
        infer=_heads_shape, build=_block, key_params=("num_heads",),
        caption=caption(("num_heads",)),
        keywords=("transformer", "decoder", "causal", "lora", "adapter"),
    ),
]
