"""Catch a broken Qt binding before users do.

PySide6 6.12.0 on CPython < 3.12 drops a reference to True on every Signal.emit() and to None
in void methods, until the interpreter aborts (shared/measurements.md).
"""

import sys

from PySide6.QtCore import QObject, QTimer, Signal


class Emitter(QObject):
    fired = Signal(int)


def test_signals_and_void_calls_do_not_leak_references(qtbot):
    emitter = Emitter()
    received = []
    emitter.fired.connect(received.append)
    timer = QTimer()
    for i in range(200):  # warm up caches before measuring
        emitter.fired.emit(i)
    true_before, none_before = sys.getrefcount(True), sys.getrefcount(None)
    for i in range(20_000):
        emitter.fired.emit(i)
        timer.setInterval(i % 100 + 1)
    true_after, none_after = sys.getrefcount(True), sys.getrefcount(None)
    assert len(received) == 20_200
    assert abs(true_after - true_before) < 100, "Signal.emit leaks references to True"
    assert abs(none_after - none_before) < 100, "void Qt methods leak references to None"
