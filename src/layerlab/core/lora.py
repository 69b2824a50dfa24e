"""LoRA: low-rank adapters on a frozen Linear (Hu et al. 2021, "LoRA: Low-Rank Adaptation").

A Linear node with `lora_rank` r > 0 builds a `LoRALinear`: the pre-trained weight W and bias
b stay as they are (frozen, under their usual keys `NODE.weight`, `NODE.bias`, so pre-trained
weights load into it by name), and two small matrices learn the change:

    y = x·Wᵀ + b + (α/r)·(x·Aᵀ)·Bᵀ        A: r × in,  B: out × r

A starts Kaiming-uniform and B at zero (as the paper and peft do), so a fresh adapter changes
nothing: the model starts exactly where pre-training left it, and only r·(in + out) numbers
train instead of in·out. For export the adapter is folded into one plain Linear with
W′ = W + (α/r)·B·A (`merge_adapters`), so every exported format carries an ordinary model.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from layerlab.core.spec import Param

if TYPE_CHECKING:  # layers import this module, and the project module reaches the catalogue
    from layerlab.core.project import Project

ADAPTERS = ("lora_A", "lora_B")  # the adapters' names inside a LoRA layer
LORA_PARAMS = ("lora_rank", "lora_alpha")

LORA_RANK = Param(
    "lora_rank", "int", 0, minimum=0,
    help="LoRA rank r: 0 trains the layer as usual; r > 0 freezes W and b and trains two "
         "small matrices A (r × in) and B (out × r) instead: r·(in + out) numbers, not in·out.")
LORA_ALPHA = Param(
    "lora_alpha", "float", 8.0, minimum=0.0,
    help="LoRA α: the adapter's output is scaled by α / r, so changing r keeps the size of "
         "the update comparable.")

FORMULA = "y = x·Wᵀ + b + (α/r)·(x·Aᵀ)·Bᵀ, W and b frozen"


def is_adapter(name: str) -> bool:
    """Whether a parameter name (`lora_A`, `fc1.lora_B`) is a LoRA adapter."""
    return name.rsplit(".", 1)[-1] in ADAPTERS


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


def has_adapters(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


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
    for name, module in list(plain.named_children()):
        if isinstance(module, LoRALinear):
            setattr(plain, name, module.merged())
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
    return f"LoRA adapters merged into plain Linear layers (within {diff:.1e} of the unmerged)"
