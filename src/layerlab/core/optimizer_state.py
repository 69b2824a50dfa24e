"""The optimizer as it stood just before a traced step: its settings, its per-weight state
(velocity, m, v, G, E[g²], …) and what the trainer did to the gradient on the way (L1/L2
terms, clipping). `layerlab.explain_update` rebuilds the step from this record.

Only the parameters whose values the trace keeps are copied, so the record costs about one
copy of those parameters per state tensor the optimizer holds (none for plain SGD).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

EXPLAINED = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW")


@dataclass(frozen=True)
class Regularisation:
    """What the trainer adds to the gradient before the optimizer sees it."""

    l1: float = 0.0  # λ₁ of λ₁·Σ|w| in the loss
    l2: float = 0.0  # λ₂ of λ₂·Σw² in the loss
    clip: float | None = None  # the max norm of clip_grad_norm_ over all gradients


NO_REGULARISATION = Regularisation()


@dataclass(frozen=True)
class OptimizerState:
    """The optimizer before the step, for the parameters the trace keeps."""

    name: str  # product.md's name: sgd, momentum, adagrad, rmsprop, adam, adamw
    settings: dict[str, dict[str, Any]]  # key → its param group's settings (lr, betas, …)
    state: dict[str, dict[str, torch.Tensor | float]]  # key → state before the step
    penalised: frozenset[str] = field(default_factory=frozenset)  # keys L1/L2 apply to
    regularisation: Regularisation = NO_REGULARISATION


def optimizer_name(optimizer: torch.optim.Optimizer) -> str | None:
    """product.md's name for a torch optimizer (SGD with momentum is "momentum", Adam with
    decoupled weight decay "adamw"), or None for one explain_update cannot explain."""
    cls = type(optimizer).__name__
    if cls not in EXPLAINED:
        return None
    group = optimizer.param_groups[0]
    if cls == "SGD":
        return "momentum" if group.get("momentum", 0) else "sgd"
    if cls in ("Adam", "AdamW"):
        return "adamw" if group.get("decoupled_weight_decay") or cls == "AdamW" else "adam"
    return cls.lower()


def capture(optimizer: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter],
            keys: Iterable[str], regularisation: Regularisation) -> OptimizerState | None:
    """Copy the optimizer's state for `keys` (call it after clipping, before the step)."""
    name = optimizer_name(optimizer)
    if name is None:
        return None
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    settings: dict[str, dict[str, Any]] = {}
    state: dict[str, dict[str, torch.Tensor | float]] = {}
    penalised = set()
    for key in keys:
        param = params[key]
        group = group_of.get(id(param))
        if group is None:  # not trained by this optimizer (frozen)
            continue
        settings[key] = {k: v for k, v in group.items() if k != "params"}
        state[key] = {s: float(v) if s == "step" else v.detach().clone().cpu()
                      for s, v in optimizer.state.get(param, {}).items()
                      if s == "step" or isinstance(v, torch.Tensor)}
        if param.requires_grad and param.dim() >= 2:
            penalised.add(key)
    return OptimizerState(name, settings, state, frozenset(penalised), regularisation)

