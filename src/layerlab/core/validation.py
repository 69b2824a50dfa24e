"""One validation of a project's `training` section, used by the file loader, `check`,
`train` and the window's training form.

Each field is declared once, as data: where it lives in the file, what the form calls it,
its command-line flag, and its range on both sides. Messages name the field as the person
knows it ("learning rate (--lr) must be …"); the location (`training.optimizer.lr`) says
where it is in the file. Every problem is reported at once, not just the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from layerlab.core.catalogue import OPTIMIZERS
from layerlab.core.datasets import DATASETS, DatasetError, resolve_options

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("float32", "bfloat16")
OPTIMIZER_ARGS = {
    "sgd": ("lr", "weight_decay", "nesterov", "dampening"),
    "momentum": ("lr", "momentum", "weight_decay", "nesterov", "dampening"),
    "adagrad": ("lr", "eps", "weight_decay", "lr_decay", "initial_accumulator_value"),
    "rmsprop": ("lr", "alpha", "eps", "weight_decay", "momentum", "centered"),
    "adam": ("lr", "betas", "eps", "weight_decay", "amsgrad"),
    "adamw": ("lr", "betas", "eps", "weight_decay", "amsgrad"),
}
SCHEDULERS = {"step": ("step_size", "gamma"), "cosine": ("eta_min",)}
SEED_MAX = 2**31 - 1

Problem = tuple[str, str]


@dataclass(frozen=True)
class Field:
    """One setting: its place in the section, its names for people, and what it accepts."""

    key: str  # dotted path inside `training`, e.g. "optimizer.lr"
    label: str  # as the training form labels it
    flag: str | None = None  # the command-line option that sets it
    kind: str = "float"  # float, int, choice, bool, pair (two floats)
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False  # low itself is not allowed
    open_high: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False  # null (None) switches the feature off

    @property
    def title(self) -> str:
        """The field as a person knows it: its label, and its flag where it has one."""
        return f"{self.label} ({self.flag})" if self.flag else self.label

    def parse(self, text: str) -> Any:
        """The value a person typed, as the file stores it; ValueError says why not."""
        raw = text.strip()
        if self.nullable and raw.lower() in ("", "none", "off"):
            return None
        try:
            if self.kind == "choice":
                return self._choice(raw)
            if self.kind == "bool":
                return {"true": True, "false": False}[raw.lower()]
            if self.kind == "pair":
                return [float(v) for v in raw.strip("()[] ").split(",")]
            if self.kind == "int":
                return int(raw)
            return float(raw)
        except (ValueError, KeyError):
            raise ValueError(f"{self.title} must be {self.expected()}, not {raw!r}") from None

    def _choice(self, raw: str) -> str:
        match = {c.lower(): c for c in self.choices}.get(raw.lower())
        if match is None:
            raise ValueError(raw)
        return match

    def problem(self, value: Any) -> str | None:
        """Why `value` cannot be used (one sentence naming the field), or None."""
        if value is None and self.nullable:
            return None
        ok = {"choice": lambda v: v in self.choices,
              "bool": lambda v: isinstance(v, bool),
              "pair": lambda v: isinstance(v, list | tuple) and len(v) == 2 and
              all(self._in_range(x) for x in v),
              }.get(self.kind, self._in_range)(value)
        return None if ok else f"{self.title} must be {self.expected()}, not {value!r}"

    def _in_range(self, value: Any) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool) or \
                not math.isfinite(value) or (self.kind == "int" and not isinstance(value, int)):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def expected(self) -> str:
        """What the field accepts, in words: 'a number above 0 and at most 10'."""
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        if self.kind == "bool":
            return "true or false"
        kind = {"int": "a whole number", "pair": "two numbers, each"}.get(self.kind, "a number")
        low = f"above {_num(self.low)}" if self.open_low else f"at least {_num(self.low)}"
        high = f"below {_num(self.high)}" if self.open_high else f"at most {_num(self.high)}"
        bounds = [b for b, v in ((low, self.low), (high, self.high)) if math.isfinite(v)]
        text = f"{kind} {' and '.join(bounds)}".strip()
        return f"{text}, or empty for none" if self.nullable else text


def _num(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 10_000 else \
        f"{value:g}"


def _field(key: str, label: str, flag: str | None = None, **kw: Any) -> tuple[str, Field]:
    return key, Field(key, label, flag, **kw)


FIELDS: dict[str, Field] = dict((
    _field("dataset.name", "dataset", "--dataset", kind="choice", choices=tuple(DATASETS)),
    _field("dataset.validation_split", "validation split", low=0.0, high=0.9),
    _field("optimizer.name", "optimizer", "--optimizer", kind="choice",
           choices=tuple(OPTIMIZERS)),
    _field("optimizer.lr", "learning rate", "--lr", low=0.0, high=1e6, open_low=True),
    _field("optimizer.momentum", "momentum", low=0.0, high=1.0, open_high=True),
    _field("optimizer.betas", "betas", kind="pair", low=0.0, high=1.0, open_high=True),
    _field("optimizer.eps", "eps", low=0.0, high=1.0, open_low=True),
    _field("optimizer.weight_decay", "weight decay", low=0.0, high=1.0),
    _field("optimizer.alpha", "alpha", low=0.0, high=1.0),
    _field("optimizer.dampening", "dampening", low=0.0, high=1.0),
    _field("optimizer.lr_decay", "lr decay", low=0.0, high=1.0),
    _field("optimizer.initial_accumulator_value", "initial accumulator value", low=0.0,
           high=1e6),
    _field("optimizer.nesterov", "nesterov", kind="bool"),
    _field("optimizer.amsgrad", "amsgrad", kind="bool"),
    _field("optimizer.centered", "centered", kind="bool"),
    _field("batch_size", "batch size", "--batch-size", kind="int", low=1, high=1_000_000),
    _field("epochs", "epochs", "--epochs", kind="int", low=1, high=100_000),
    _field("l1", "L1 λ", low=0.0, high=10.0),
    _field("l2", "L2 λ", low=0.0, high=10.0),
    _field("seed", "seed", "--seed", kind="int", low=0, high=SEED_MAX),
    _field("device", "device", "--device", kind="choice", choices=DEVICES),
    _field("clip_grad_norm", "gradient clipping", low=0.0, high=1e6, open_low=True,
           nullable=True),
    _field("precision", "precision", kind="choice", choices=PRECISIONS),
    _field("accumulate", "gradient accumulation", kind="int", low=1, high=10_000),
    _field("pipeline_stages", "pipeline stages", kind="int", low=2, high=64),
    _field("pipeline_balance", "pipeline balance", kind="choice",
           choices=("parameters", "flops")),
))

# keys whose absence means the default; the rest are always present after loading
OPTIONAL_KEYS = {k for k in FIELDS if k.startswith("optimizer.") and
                 k not in ("optimizer.name", "optimizer.lr")} | {
    "dataset.validation_split", "clip_grad_norm", "precision", "accumulate",
    "pipeline_stages", "pipeline_balance"}


def lookup(t: dict[str, Any], key: str) -> tuple[bool, Any]:
    """(present, value) of a dotted key in a training section."""
    head, _, rest = key.partition(".")
    if not rest:
        return head in t, t.get(head)
    inner = t.get(head)
    return (isinstance(inner, dict) and rest in inner,
            inner.get(rest) if isinstance(inner, dict) else None)


def canonical(key: str, value: Any) -> Any:
    """A choice in its canonical spelling ('Adam' → 'adam'); anything else as it is, for
    `training_problems` to report."""
    try:
        return FIELDS[key].parse(value) if isinstance(value, str) else value
    except ValueError:
        return value


def normalise_training(t: dict[str, Any]) -> dict[str, Any]:
    """A copy with choice names in their canonical spelling ('Adam' → 'adam'): names of
    choices are case-insensitive wherever a person types them."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in t.items()}
    for key, spec in FIELDS.items():
        present, value = lookup(out, key)
        if present and spec.kind == "choice":
            head, _, rest = key.partition(".")
            if rest:
                out[head][rest] = canonical(key, value)
            else:
                out[head] = canonical(key, value)
    return out


def training_problems(t: dict[str, Any]) -> list[Problem]:
    """Every problem with a (defaults-filled) training section, each as
    (`training.<key>`, one sentence naming the field as the person knows it)."""
    problems: list[Problem] = []
    for key, spec in FIELDS.items():
        present, value = lookup(t, key)
        if not present and key in OPTIONAL_KEYS:
            continue
        reason = spec.problem(value)
        if reason:
            problems.append((f"training.{key}", reason))
    for check in (_optimizer_arguments, _dataset_options, _scheduler):
        problems.extend(check(t))
    return problems


def _optimizer_arguments(t: dict[str, Any]) -> list[Problem]:
    opt = t.get("optimizer") if isinstance(t.get("optimizer"), dict) else {}
    name = opt.get("name")
    if name not in OPTIMIZER_ARGS:
        return []
    takes = OPTIMIZER_ARGS[name]
    problems = [(f"training.optimizer.{key}", f"optimizer {name} takes no argument {key!r} "
                 f"(it takes {', '.join(takes)})") for key in opt
                if key != "name" and key not in takes]
    defaults = OPTIMIZERS[name].defaults
    momentum = opt.get("momentum", defaults.get("momentum", 0.0))
    if opt.get("nesterov") is True and (momentum in (0, None) or opt.get("dampening", 0) != 0):
        problems.append(("training.optimizer.nesterov", "nesterov needs a momentum above 0 "
                         "and a dampening of 0"))
    return problems


def _dataset_options(t: dict[str, Any]) -> list[Problem]:
    data = t.get("dataset") if isinstance(t.get("dataset"), dict) else {}
    options = data.get("options", {})
    if not isinstance(options, dict):
        return [("training.dataset.options", "the dataset's options must be an object")]
    if data.get("name") not in DATASETS:
        return []
    try:
        resolve_options(data["name"], options)
    except DatasetError as exc:
        return [("training.dataset.options", str(exc))]
    return []


def _scheduler(t: dict[str, Any]) -> list[Problem]:
    sched = t.get("scheduler")
    if sched is None:
        return []
    if not isinstance(sched, dict) or sched.get("name") not in SCHEDULERS:
        return [("training.scheduler", "the learning-rate schedule must be null or "
                 f"{{\"name\": \"step\" or \"cosine\", …}}, not {sched!r}")]
    rules: dict[str, Callable[[Any], bool]] = {
        "step_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "gamma": lambda v: _finite(v) and 0 < v <= 1,
        "eta_min": lambda v: _finite(v) and v >= 0,
    }
    words = {"step_size": "a whole number of epochs of at least 1",
             "gamma": "a number above 0 and at most 1", "eta_min": "a number of at least 0"}
    problems = []
    for key, value in sched.items():
        if key == "name":
            continue
        if key not in SCHEDULERS[sched["name"]]:
            problems.append((f"training.scheduler.{key}", f"schedule {sched['name']} takes "
                             f"no argument {key!r}"))
        elif not rules[key](value):
            problems.append((f"training.scheduler.{key}", f"the schedule's {key} must be "
                             f"{words[key]}, not {value!r}"))
    return problems


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)
