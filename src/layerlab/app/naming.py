"""Every widget a person or a screen reader meets gets a stable object name, an accessible
name and, where it helps, a tooltip: one helper that sets all three."""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtWidgets import QWidget

W = TypeVar("W", bound=QWidget)


def named(widget: W, name: str, accessible: str, tip: str) -> W:
    """`widget` with its object name, accessible name and tooltip (none when `tip` is empty)."""
    widget.setObjectName(name)
    widget.setAccessibleName(accessible)
    if tip:
        widget.setToolTip(tip)
    return widget
