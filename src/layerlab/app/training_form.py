"""The pieces of the training form: how a field is read, written back into a training
section, marked when core says it cannot be used, and which field owns a problem.

Core (core/validation.py) parses and checks every value; the form only shows what it says.
"""

from __future__ import annotations

import ast
import copy
from typing import Any

from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QSpinBox, QWidget

from layerlab.core.catalogue import OPTIMIZERS
from layerlab.core.validation import FIELDS

ARGUMENTS = "optimizer.arguments"  # the field that edits the optimizer's other arguments
_ARROW = "url(:/qt-project.org/styles/commonstyle/images/arrow-{}-16.png)"  # Qt's own
FORM_STYLE = (  # a styled frame drops a spin box's native arrows: give them back
    'QLineEdit[invalid="true"], QAbstractSpinBox[invalid="true"], QComboBox[invalid="true"] '
    '{ border: 2px solid #e0443e; border-radius: 3px; } '
    'QAbstractSpinBox[invalid="true"]::up-button, QAbstractSpinBox[invalid="true"]::down-button '
    '{ width: 16px; border: none; } '
    f'QAbstractSpinBox[invalid="true"]::up-arrow {{ image: {_ARROW.format("up")}; '
    'width: 9px; height: 9px; } '
    f'QAbstractSpinBox[invalid="true"]::down-arrow {{ image: {_ARROW.format("down")}; '
    'width: 9px; height: 9px; }')
INT32 = 2**31
FORM_KEYS = ("dataset.name", "dataset.validation_split", "optimizer.name", ARGUMENTS,
             "optimizer.lr", "batch_size", "epochs", "l1", "l2", "seed", "device")


class IntSpin(QSpinBox):
    """A spin box that keeps whatever a person types, so that a mistake can be marked with
    its reason instead of being swallowed: `-5` stays -5 (core says it is out of range),
    `abc` stays on screen while typed (the spin box restores its number on leaving)."""

    def __init__(self) -> None:
        super().__init__()
        self.setRange(-INT32, INT32 - 1)
        self.setKeyboardTracking(False)

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        try:
            whole = -INT32 <= int(text) < INT32
        except ValueError:
            whole = False
        state = QValidator.State.Acceptable if whole else QValidator.State.Intermediate
        return state, text, pos


def mark(widget: QWidget, reason: str | None, tip: str) -> None:
    """Frame `widget` in red with `reason` as its tooltip and accessible description, or
    show it as usual (its own `tip`) when reason is None."""
    invalid = reason is not None
    if widget.property("invalid") != invalid:
        widget.setProperty("invalid", invalid)
        widget.style().unpolish(widget)
        widget.style().polish(widget)
    widget.setToolTip(reason or tip)
    widget.setAccessibleDescription(reason or "")


def owner(where: str) -> str | None:
    """The form field that shows a problem at `where` (`training.optimizer.betas`), or None
    for settings the form does not edit (the schedule, clipping, …)."""
    key = where.removeprefix("training.")
    if key in FORM_KEYS:
        return key
    if key.startswith("optimizer.") and key not in ("optimizer.name", "optimizer.lr"):
        return ARGUMENTS
    return "dataset.name" if key.startswith("dataset.") else None


def with_field(t: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of training section `t` with one field of the form set. Another dataset starts
    without options, another optimizer with its default arguments."""
    t = copy.deepcopy(t)
    head, _, rest = key.partition(".")
    if key == "dataset.name" and value != t["dataset"].get("name"):
        t["dataset"] = {"name": value, "options": {},
                        "validation_split": t["dataset"].get("validation_split", 0.1)}
    elif key == "optimizer.name" and value != t["optimizer"].get("name"):
        t["optimizer"] = {"name": value, "lr": t["optimizer"].get("lr")}
    elif key == ARGUMENTS:
        t["optimizer"] = {"name": t["optimizer"].get("name"), "lr": t["optimizer"].get("lr"),
                          **value}
    elif rest:
        t[head][rest] = value
    else:
        t[head] = value
    return t


def format_args(optimizer: dict[str, Any]) -> str:
    """The optimizer's arguments besides lr: the project's, else torch's defaults."""
    spec = OPTIMIZERS.get(optimizer.get("name", ""))
    defaults = {k: v for k, v in (spec.defaults if spec else {}).items() if k != "lr"}
    own = {k: v for k, v in optimizer.items() if k not in ("name", "lr")}
    return ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}"
                     for k, v in {**defaults, **own}.items())


def parse_args(text: str) -> dict[str, Any]:
    """`momentum=0.9, betas=(0.9, 0.999)` as the file stores it; ValueError says why not.
    Each value is read by its field in core; core also names arguments the optimizer lacks."""
    values: dict[str, Any] = {}
    for item in _split_top_level(text):
        name, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not name.isidentifier():
            raise ValueError(f"optimizer arguments must be name=value pairs separated by "
                             f"commas, not {item.strip()!r}")
        field = FIELDS.get(f"optimizer.{name}")
        values[name] = field.parse(raw) if field else _literal(name, raw)
    return values


def _split_top_level(text: str) -> list[str]:
    """`a=1, b=(2, 3)` → ['a=1', ' b=(2, 3)']: commas inside brackets do not split."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "([") - (char in ")]")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item.strip()]


def _literal(name: str, raw: str) -> Any:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"optimizer argument {name} must be a number, not {raw!r}") from None
    return list(value) if isinstance(value, tuple) else value
