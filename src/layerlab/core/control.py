"""Pause, resume, single-step and stop: requests from another thread (the window's) or a
Ctrl+C handler (the command line's), obeyed by the training loop between batches, so a
stopped model is always one that finished its last step."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Control:
    """Requests from another thread, obeyed by the loop between batches."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._stopping = False
        self._steps = 0
        self._announced = False  # the loop has said it is paused

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def step(self, batches: int = 1) -> None:
        """While paused, let `batches` more batches run."""
        with self._cond:
            self._steps += batches
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def paused(self) -> bool:
        return self._paused

    def wait_turn(self, on_pause: Callable[[], None], on_resume: Callable[[], None]) -> bool:
        """Block while paused (saying so once per pause); False once a stop was asked for."""
        with self._cond:
            while True:
                if self._stopping:
                    return False
                if not self._paused:
                    if self._announced:
                        self._announced = False
                        on_resume()
                    return True
                if self._steps:
                    self._steps -= 1
                    return True
                if not self._announced:
                    self._announced = True
                    on_pause()
                self._cond.wait()
