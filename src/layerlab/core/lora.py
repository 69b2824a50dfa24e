"""LoRA: low-rank adapters on a frozen Linear or attention layer (Hu et al. 2021, "LoRA:
Low-Rank Adaptation of Large Language Models").

A Linear node with `lora_rank` r > 0 builds a `LoRALinear`: the pre-trained weight W and bias
b stay as they are (frozen, under their usual keys `NODE.weight`, `NODE.bias`, so pre-trained
weights load into it by name), and two small matrices learn the change:

    y = x·Wᵀ + b + (α/r)·(x·Aᵀ)·Bᵀ        A: r × in,  B: out × r

A starts Kaiming-uniform and B at zero (as the paper and peft do), so a fresh adapter changes
nothing: the model starts exactly where pre-training left it, and only r·(in + out) numbers
train instead of in·out. For export the adapter is folded into one plain Linear with
W′ = W + (α/r)·B·A (`merge_adapters`), so every exported format carries an ordinary model.
A MultiheadAttention node with `lora_rank` > 0 does the same to its two projections (Q, K, V
packed as torch packs them, and the output projection); a CausalSelfAttention node to its
`qkv` and `out_proj` Linears, and a GPTBlock node to its attention's two (and, with
`lora_mlp`, its MLP's `fc` and `proj`), every other weight of the layer frozen as it was
pre-trained (`adapt_linears`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from layerlab.core.spec import Param

if TYPE_CHECKING:  # layers import this module, and the project module reaches the catalogue
    from layerlab.core.project import Project

ADAPTERS = ("lora_A", "lora_B")  # how the adapters' names end inside a LoRA layer
LORA_PARAMS = ("lora_rank", "lora_alpha")

LORA_RANK = Param(
    "lora_rank", "int", 0, minimum=0,
    help="LoRA rank r: 0 trains the layer as usual; r > 0 freezes W and b and trains two "
         "small matrices A (r × in) and B (out × r) instead: r·(in + out) numbers, not "
         "in·out. y = x·Wᵀ + b + (α/r)·(x·Aᵀ)·Bᵀ; B starts at 0, so the layer starts as it "
         "was. Export folds the adapter into W.")
FORMULA = "LoRA: W′ = W + (α/r)·B·A; W and b frozen, only A and B train"
LORA_ALPHA = Param(
    "lora_alpha", "float", 8.0, minimum=0.0,
    help="LoRA α: the adapter's output is scaled by α / r, so changing r keeps the size of "
         "the update comparable.")



def is_adapter(name: str) -> bool:
    """Whether a parameter name (`lora_A`, `fc1.lora_B`, `attn.in_proj_lora_A`) is a LoRA
    adapter."""
    return name.rsplit(".", 1)[-1].endswith(ADAPTERS)


class LoRALinear(nn.Linear):
    """nn.Linear with its weight and bias frozen and a trainable low-rank update beside them.

    A subclass of nn.Linear so that `weight` and `bias` keep torch's names and shapes: a
    state dict saved from a plain Linear loads into it unchanged.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rank: int = 4, alpha: float = 8.0, device: Any = None,
                 dtype: Any = None) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, not {rank}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.rank, self.alpha = rank, alpha
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(out_features, rank, device=device, dtype=dtype))
        self.reset_adapters()

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def reset_adapters(self) -> None:
        """A as peft starts it (Kaiming-uniform with a = √5, nn.Linear's own), B at zero."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight, self.bias)
        return base + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """W + (α/r)·B·A: the one matrix that does what base and adapter do together."""
        return self.weight + (self.lora_B @ self.lora_A) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain nn.Linear equal to this layer (up to float rounding)."""
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(self.merged_weight())
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain.train(self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"


class LoRAMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention with its projections frozen and a low-rank update on each:
    W_in′ = W_in + (α/r)·B_in·A_in (Q, K and V together, 3E × E) and W_O′ = W_O + (α/r)·B_O·A_O.

    The merged projections are formed at each forward (two r-rank products, small beside
    the attention itself) and handed to torch's own attention, so this is torch's layer in
    every other respect; gradients reach A and B through W′.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0,
                 bias: bool = True, batch_first: bool = True, rank: int = 4,
                 alpha: float = 8.0, device: Any = None, dtype: Any = None) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, not {rank}")
        super().__init__(embed_dim, num_heads, dropout=dropout, bias=bias,
                         batch_first=batch_first, device=device, dtype=dtype)
        self.rank, self.alpha = rank, alpha
        for param in self.parameters():
            param.requires_grad_(False)
        made = {"device": device, "dtype": dtype}
        self.in_proj_lora_A = nn.Parameter(torch.empty(rank, embed_dim, **made))
        self.in_proj_lora_B = nn.Parameter(torch.empty(3 * embed_dim, rank, **made))
        self.out_proj_lora_A = nn.Parameter(torch.empty(rank, embed_dim, **made))
        self.out_proj_lora_B = nn.Parameter(torch.empty(embed_dim, rank, **made))
        for a, b in ((self.in_proj_lora_A, self.in_proj_lora_B),
                     (self.out_proj_lora_A, self.out_proj_lora_B)):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.zeros_(b)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def merged_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_in + (α/r)·B_in·A_in, W_O + (α/r)·B_O·A_O)."""
        assert self.in_proj_weight is not None  # one packed projection: self-attention
        return (self.in_proj_weight + (self.in_proj_lora_B @ self.in_proj_lora_A) * self.scaling,
                self.out_proj.weight + (self.out_proj_lora_B @ self.out_proj_lora_A)
                * self.scaling)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.batch_first:  # one tensor stays one: torch projects self-attention packed
            flipped = {id(t): t.transpose(0, 1) for t in (query, key, value)}
            query, key, value = (flipped[id(t)] for t in (query, key, value))
        w_in, w_out = self.merged_weights()
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, w_in, self.in_proj_bias,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout, w_out,
            self.out_proj.bias, training=self.training, key_padding_mask=key_padding_mask,
            need_weights=need_weights, attn_mask=attn_mask,
            average_attn_weights=average_attn_weights, is_causal=is_causal)
        return (out.transpose(0, 1) if self.batch_first else out), weights

    def merged(self) -> nn.MultiheadAttention:
        """A plain nn.MultiheadAttention equal to this layer (up to float rounding)."""
        plain = nn.MultiheadAttention(
            self.embed_dim, self.num_heads, dropout=self.dropout,
            bias=self.in_proj_bias is not None, batch_first=self.batch_first,
            device=self.in_proj_lora_A.device, dtype=self.in_proj_lora_A.dtype)
        w_in, w_out = self.merged_weights()
        with torch.no_grad():
            plain.in_proj_weight.copy_(w_in)
            plain.out_proj.weight.copy_(w_out)
            if self.in_proj_bias is not None:
                plain.in_proj_bias.copy_(self.in_proj_bias)
                plain.out_proj.bias.copy_(self.out_proj.bias)
        return plain.train(self.training)


def adapt_linears(module: nn.Module, names: Sequence[str], rank: int, alpha: float) -> None:
    """Freeze every parameter of `module` and put a LoRA adapter on each of its nn.Linear
    submodules `names` (dotted paths such as `attn.qkv`), in place: the Linear becomes a
    LoRALinear holding the same W and b under the same keys, so weights pre-trained for the
    plain layer load into it by name, and it starts as exactly the layer it was."""
    for param in module.parameters():
        param.requires_grad_(False)
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = module.get_submodule(parent)
        plain = getattr(owner, leaf)
        if type(plain) is not nn.Linear:
            raise TypeError(f"{name} is a {type(plain).__name__}, not an nn.Linear")
        adapted = LoRALinear(plain.in_features, plain.out_features, bias=plain.bias is not None,
                             rank=rank, alpha=alpha, device=plain.weight.device,
                             dtype=plain.weight.dtype)
        with torch.no_grad():
            adapted.weight.copy_(plain.weight)
            if plain.bias is not None:
                adapted.bias.copy_(plain.bias)
        setattr(owner, leaf, adapted.train(plain.training))


ADAPTED = (LoRALinear, LoRAMultiheadAttention)
_PROJECTIONS = (("in_proj_weight", "in_proj_lora_"), ("out_proj.weight", "out_proj_lora_"))


def merged_attention_weights(weights: dict[str, torch.Tensor],
                             scale: float) -> dict[str, torch.Tensor]:
    """A LoRA attention layer's weights (by their names inside it) with each projection
    replaced by W′ = W + (α/r)·B·A, the matrix its forward uses."""
    out = dict(weights)
    for base, adapter in _PROJECTIONS:
        out[base] = weights[base] + (weights[adapter + "B"] @ weights[adapter + "A"]) * scale
    return out


def attention_adapter_grads(weights: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                            scale: float) -> dict[str, torch.Tensor]:
    """From dL/dW′ of each merged projection to its adapters, by the chain rule through
    W′ = W + (α/r)·B·A: dL/dA = (α/r)·Bᵀ·dL/dW′, dL/dB = (α/r)·dL/dW′·Aᵀ. The frozen W
    and biases get none."""
    out = {}
    for base, adapter in _PROJECTIONS:
        a, b = weights[adapter + "A"], weights[adapter + "B"]
        out[adapter + "A"] = scale * b.T @ grads[base]
        out[adapter + "B"] = scale * grads[base] @ a.T
    return out


def merged_linear_weights(weights: dict[str, torch.Tensor],
                          scale: float) -> dict[str, torch.Tensor]:
    """A layer's weights (by their names inside it) with the weight of each LoRA Linear in
    it (`P.weight` beside `P.lora_A`, `P.lora_B`) replaced by W′ = W + (α/r)·B·A."""
    out = dict(weights)
    for name in weights:
        if name.endswith(".lora_A") or name == "lora_A":
            prefix = name[: -len("lora_A")]
            out[prefix + "weight"] = weights[prefix + "weight"] + (
                weights[prefix + "lora_B"] @ weights[name]) * scale
    return out


def linear_adapter_grads(weights: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                         scale: float) -> dict[str, torch.Tensor]:
    """From dL/dW′ of each merged LoRA Linear in a layer to its adapters (the chain rule
    through W′ = W + (α/r)·B·A, as `attention_adapter_grads`); every other weight of the
    layer is frozen and gets none."""
    out = {}
    for name in weights:
        if name.endswith(".lora_A") or name == "lora_A":
            prefix = name[: -len("lora_A")]
            a, b, dw = weights[name], weights[prefix + "lora_B"], grads[prefix + "weight"]
            out[name] = scale * b.T @ dw
            out[prefix + "lora_B"] = scale * dw @ a.T
    return out


def caption(keys: tuple[str, ...]) -> Callable[[dict[str, Any], int], str]:
    """The canvas lines of a layer that takes LoRA: its key parameters, and below them the
    adapter's rank and α when one is on."""
    def lines(params: dict[str, Any], _inputs: int) -> str:
        text = ", ".join(f"{k}={params[k]}" for k in keys if k in params)
        if params.get("lora_rank"):
            alpha = params.get("lora_alpha", LORA_ALPHA.default)
            text += f"\nLoRA r={params['lora_rank']}, α={alpha:g}"
        return text
    return lines


def has_adapters(model: nn.Module) -> bool:
    return any(isinstance(m, ADAPTED) for m in model.modules())


def merge_adapters(project: Project, model: torch.fx.GraphModule
                   ) -> tuple[Project, torch.fx.GraphModule]:
    """The project and model with every LoRA layer folded into a plain Linear.

    The rule: W′ = W + (α/r)·B·A and b′ = b, so x·W′ᵀ + b′ = x·Wᵀ + b + (α/r)·(x·Aᵀ)·Bᵀ.
    The copy's graph has the LoRA parameters removed, so its nodes build (and its Python
    export writes) `nn.Linear`; the given project and model are left as they were.
    """
    if not has_adapters(model):
        return project, model
    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, ADAPTED):
            parent, _, leaf = name.rpartition(".")
            setattr(plain.get_submodule(parent), leaf, module.merged())
    graph = copy.deepcopy(project.graph)
    for _, data in graph.nodes(data=True):
        params = data.get("params")
        if isinstance(params, dict):
            for key in LORA_PARAMS:
                params.pop(key, None)
    return dataclasses.replace(project, graph=graph), plain


def merge_check(model: nn.Module, plain: nn.Module, x: torch.Tensor) -> str:
    """One line saying how closely the merged model reproduces the model with adapters on
    `x`; ValueError when they differ beyond float rounding (nothing should be written)."""
    with torch.no_grad():
        want, got = model(x), plain(x)
    diff = float((want - got).abs().max())
    if not diff <= 1e-5 + 1e-4 * float(want.abs().max()):
        raise ValueError(f"merging the LoRA adapters changed the model's output by {diff:.1e}; "
                         "nothing was written")
    return f"LoRA adapters merged into plain layers (within {diff:.1e} of the unmerged model)"
