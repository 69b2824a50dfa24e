"""Training settings from a project's `training` section, checked, and the torch objects
(optimizer, scheduler) they describe."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from layerlab.core.catalogue import OPTIMIZERS
from layerlab.core.errors import GraphError
from layerlab.core.project import training_errors

OPTIMIZER_ARGS = {
    "sgd": ("lr", "weight_decay", "nesterov", "dampening"),
    "momentum": ("lr", "momentum", "weight_decay", "nesterov", "dampening"),
    "adagrad": ("lr", "eps", "weight_decay", "lr_decay", "initial_accumulator_value"),
    "rmsprop": ("lr", "alpha", "eps", "weight_decay", "momentum", "centered"),
    "adam": ("lr", "betas", "eps", "weight_decay", "amsgrad"),
    "adamw": ("lr", "betas", "eps", "weight_decay", "amsgrad"),
}
SCHEDULERS = {"step": ("step_size", "gamma"), "cosine": ("eta_min",)}


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
    t = {**training, "dataset": dict(training["dataset"]),
         "optimizer": dict(training["optimizer"])}
    for key, value in overrides.items():
        if value is None:
            continue
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
    errors = training_errors(t) + _extra_errors(t)
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


def _extra_errors(t: dict[str, Any]) -> list[tuple[str | None, str]]:
    errors: list[tuple[str | None, str]] = []
    name = t["optimizer"].get("name")
    if name in OPTIMIZER_ARGS:
        for key in t["optimizer"]:
            if key != "name" and key not in OPTIMIZER_ARGS[name]:
                errors.append((f"training.optimizer.{key}", f"optimizer {name} takes no "
                               f"argument {key!r} (it takes {', '.join(OPTIMIZER_ARGS[name])})"))
    clip = t.get("clip_grad_norm")
    if clip is not None and not (_number(clip) and clip > 0):
        errors.append(("training.clip_grad_norm", "training.clip_grad_norm must be a number "
                       f"above 0, or null, not {clip!r}"))
    if t.get("precision", "float32") not in ("float32", "bfloat16"):
        errors.append(("training.precision", "training.precision must be float32 or "
                       f"bfloat16, not {t['precision']!r}"))
    acc = t.get("accumulate", 1)
    if isinstance(acc, bool) or not isinstance(acc, int) or acc < 1:
        errors.append(("training.accumulate", "training.accumulate must be a whole number of "
                       f"at least 1, not {acc!r}"))
    sched = t.get("scheduler")
    if sched is not None:
        if not isinstance(sched, dict) or sched.get("name") not in SCHEDULERS:
            errors.append(("training.scheduler", "training.scheduler must be null or "
                           f"{{\"name\": \"step\" or \"cosine\", …}}, not {sched!r}"))
        else:
            for key in sched:
                if key != "name" and key not in SCHEDULERS[sched["name"]]:
                    errors.append((f"training.scheduler.{key}", f"scheduler {sched['name']} "
                                   f"takes no argument {key!r}"))
    return errors


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


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
