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


def make_optimizer(settings: TrainSettings,
                   params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """torch's own optimizer class for the setting (momentum is SGD with momentum)."""
    args = dict(settings.optimizer_args)
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    cls = {
        "sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
        "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    }[settings.optimizer]
    return cls(list(params), **args)


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
