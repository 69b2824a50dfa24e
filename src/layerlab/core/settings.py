"""Training settings from a project's `training` section, checked, and the torch objects
(optimizer, scheduler) they describe."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from layerlab.core.catalogue import OPTIMIZERS
from layerlab.core.errors import GraphError
from layerlab.core.validation import canonical, training_problems

CHOICE_OVERRIDES = {"dataset": "dataset.name", "optimizer": "optimizer.name",
                    "device": "device"}


@dataclass(frozen=True)
class TrainSettings:
    dataset: str
    dataset_options: dict[str, Any]
    validation_split: float
    optimizer: str
    optimizer_args: dict[str, Any]
    batch_size: int
    epochs: int
    l1: float = 0.0
    l2: float = 0.0
    seed: int = 0
    device: str = "auto"
    clip_grad_norm: float | None = None
    scheduler: dict[str, Any] | None = None
    precision: str = "float32"
    accumulate: int = 1

    @property
    def lr(self) -> float:
        return float(self.optimizer_args["lr"])


def with_overrides(training: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A copy of a training section with command-line overrides (None: not given) applied.
    A different dataset drops the old one's options; a different optimizer its arguments."""
    t = copy.deepcopy(training)  # nothing of the caller's section is shared
    for key, value in overrides.items():
        if value is None:
            continue
        if key in CHOICE_OVERRIDES:  # `--optimizer Adam` means adam
            value = canonical(CHOICE_OVERRIDES[key], value)
        if key == "dataset":
            if value != t["dataset"].get("name"):
                t["dataset"] = {**t["dataset"], "name": value, "options": {}}
        elif key == "optimizer":
            if value != t["optimizer"].get("name"):
                t["optimizer"] = {"name": value, "lr": t["optimizer"].get("lr")}
        elif key == "lr":
            t["optimizer"]["lr"] = value
        else:
            t[key] = value
    return t


def settings_from(training: dict[str, Any], **overrides: Any) -> TrainSettings:
    """Settings from a (defaults-filled) training section plus command-line overrides;
    GraphError lists every problem by its JSON location."""
    t = with_overrides(training, **overrides)
    errors = training_problems(t)
    if errors:
        raise GraphError(errors)
    opt = dict(t["optimizer"])
    name = opt.pop("name")
    args = {**{k: v for k, v in OPTIMIZERS[name].defaults.items() if k != "lr"}, **opt}
    return TrainSettings(
        dataset=t["dataset"]["name"], dataset_options=dict(t["dataset"].get("options", {})),
        validation_split=float(t["dataset"].get("validation_split", 0.1)),
        optimizer=name, optimizer_args=args, batch_size=t["batch_size"], epochs=t["epochs"],
        l1=float(t["l1"]), l2=float(t["l2"]), seed=t["seed"], device=t["device"],
        clip_grad_norm=t.get("clip_grad_norm"), scheduler=t.get("scheduler"),
        precision=t.get("precision", "float32"), accumulate=t.get("accumulate", 1),
    )


# The fastest implementation torch has of each optimizer on each device type: "fused" (one
# kernel updates every parameter), "foreach" (multi-tensor operations); absent: torch's own
# choice. Same mathematics as the default per-parameter loop, equal to it within float
# rounding. Measured on CPU (shared/measurements.md): Adam 314 → 117 µs per spiral step.
FAST_KERNELS: dict[str, dict[str, str]] = {
    "cpu": {"sgd": "fused", "momentum": "fused", "adagrad": "fused", "rmsprop": "foreach",
            "adam": "fused", "adamw": "fused"},
    "cuda": {"sgd": "fused", "momentum": "fused", "adagrad": "fused", "rmsprop": "foreach",
             "adam": "fused", "adamw": "fused"},
    "mps": {"sgd": "fused", "momentum": "fused", "adam": "fused", "adamw": "fused"},
}
OPTIMIZER_CLASSES = {"sgd": "SGD", "momentum": "SGD", "adagrad": "Adagrad",
                     "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}


def kernel_args(optimizer: str, device: torch.device | None) -> dict[str, bool]:
    """The keyword that picks the fast implementation for `device` ({} for torch's own)."""
    kernel = FAST_KERNELS.get(device.type, {}).get(optimizer) if device else None
    return {kernel: True} if kernel else {}


def make_optimizer(settings: TrainSettings, params: Iterable[torch.nn.Parameter],
                   device: torch.device | None = None) -> torch.optim.Optimizer:
    """torch's own optimizer class for the setting (momentum is SGD with momentum); given
    the parameters' device, its fused or multi-tensor implementation where torch has one."""
    args = dict(settings.optimizer_args)
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    cls = getattr(torch.optim, OPTIMIZER_CLASSES[settings.optimizer])
    return cls(list(params), **args, **kernel_args(settings.optimizer, device))


def with_kernels(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A saved optimizer state that keeps `optimizer`'s implementation (fused, foreach): a
    checkpoint written by another version or on another device must not switch it."""
    groups = [{**saved, **{k: now[k] for k in ("fused", "foreach") if k in now}}
              for saved, now in zip(state["param_groups"], optimizer.param_groups, strict=True)]
    return {**state, "param_groups": groups}


def make_scheduler(settings: TrainSettings, optimizer: torch.optim.Optimizer
                   ) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-epoch learning-rate schedule, or None."""
    if not settings.scheduler:
        return None
    args = {k: v for k, v in settings.scheduler.items() if k != "name"}
    if settings.scheduler["name"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.get("step_size", 10),
                                               gamma=args.get("gamma", 0.1))
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs,
                                                      eta_min=args.get("eta_min", 0.0))
