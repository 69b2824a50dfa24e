"""What a person does with the mouse and keyboard, as Qt events sent to the real widgets
(shared/measurements.md, "Driving the canvas in tests"): drops from the palette, drags on
the canvas, clicks, key presses, typing into a field. Works with or without pytest."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QEvent, QEventLoop, QPoint, QPointF, Qt, QTimer
from PySide6.QtGui import (
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QKeyEvent,
    QMouseEvent,
    QWheelEvent,
)
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QGraphicsView, QWidget

from layerlab.app.canvas.view import layer_mime

LEFT = Qt.MouseButton.LeftButton
NO_MOD = Qt.KeyboardModifier.NoModifier
CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


def wait(ms: int) -> None:
    """Let Qt deliver what is queued (signals from the torch thread, timers, repaints).
    An event loop, not QTest.qWait: PySide6's qWait keeps the GIL while it sleeps, so a torch
    thread gets about 4 small steps a second and a Stop seems to take seconds (measured:
    4 vs 114,000 iterations/s of a 32×16 matmul loop; pytest-qt's qtbot.wait does the same)."""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_until(condition: Callable[[], bool], timeout_s: float,
               poll_ms: int = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        wait(poll_ms)


def drop(view: QGraphicsView, type_name: str, point: QPoint) -> bool:
    """A drop from the palette at a viewport point, as Qt delivers it (without QDrag's own
    event loop); returns whether the view accepted it."""
    mime = layer_mime(type_name)
    viewport = view.viewport()
    actions = Qt.DropAction.CopyAction
    for cls in (QDragEnterEvent, QDragMoveEvent):
        QApplication.sendEvent(viewport, cls(point, actions, mime, LEFT, NO_MOD))
    event = QDropEvent(QPointF(point), actions, mime, LEFT, NO_MOD)
    QApplication.sendEvent(viewport, event)
    return event.isAccepted()


def drag(widget: QWidget, start: QPoint, end: QPoint,
         button: Qt.MouseButton = LEFT, modifiers: Qt.KeyboardModifier = NO_MOD) -> None:
    """Press at `start`, move with the button held (qtbot's mouseMove carries no button),
    release at `end`; points in `widget`'s coordinates."""
    QTest.mousePress(widget, button, modifiers, start)
    for t in (0.25, 0.6, 1.0):
        p = QPointF(start + (end - start) * t)
        QApplication.sendEvent(widget, QMouseEvent(
            QEvent.Type.MouseMove, p, widget.mapToGlobal(p), Qt.MouseButton.NoButton,
            button, modifiers))
    QTest.mouseRelease(widget, button, modifiers, end)


def click(widget: QWidget, point: QPoint | None = None,
          modifiers: Qt.KeyboardModifier = NO_MOD, double: bool = False) -> None:
    point = widget.rect().center() if point is None else point
    if double:
        QTest.mouseClick(widget, LEFT, modifiers, point)
        QTest.mouseDClick(widget, LEFT, modifiers, point)
    else:
        QTest.mouseClick(widget, LEFT, modifiers, point)


def wheel(widget: QWidget, point: QPoint, up: bool) -> None:
    p = QPointF(point)
    QApplication.sendEvent(widget, QWheelEvent(
        p, widget.mapToGlobal(p), QPoint(0, 0), QPoint(0, 120 if up else -120),
        Qt.MouseButton.NoButton, NO_MOD, Qt.ScrollPhase.NoScrollPhase, False))


def key(widget: QWidget, name: Qt.Key, modifiers: Qt.KeyboardModifier = NO_MOD) -> None:
    QTest.keyClick(widget, name, modifiers)


def focused(fallback: QWidget) -> QWidget:
    """Where a key press goes: the focus widget, as for a person at the keyboard."""
    widget = QApplication.focusWidget()
    return widget if widget is not None and widget.isVisible() else fallback


def type_text(widget: QWidget, text: str) -> None:
    """Key presses for `text`. QTest.keyClicks aborts the process on a character outside
    ASCII (its asciiToKey asserts), so those go as key events that carry only their text,
    as an input method delivers them."""
    for char in text:
        if char.isascii():
            QTest.keyClicks(widget, char)
            continue
        for kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            QApplication.sendEvent(widget, QKeyEvent(kind, 0, NO_MOD, char))


def type_into(widget: QWidget, text: str, finish: str) -> None:
    """Click into a field, select what is there, type `text`, then end the edit with
    Return, Tab, or Escape (Escape then Tab: the field loses focus with the text kept)."""
    widget.setFocus(Qt.FocusReason.MouseFocusReason)
    key(widget, Qt.Key.Key_A, CTRL)
    if text:
        type_text(widget, text)
    else:
        key(widget, Qt.Key.Key_Delete)
    if finish == "return":
        key(widget, Qt.Key.Key_Return)
    elif finish == "tab":
        key(widget, Qt.Key.Key_Tab)
    else:
        key(widget, Qt.Key.Key_Escape)
        key(widget, Qt.Key.Key_Tab)
