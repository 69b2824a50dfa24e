"""Render the window on each bundled example to PNG (the README's pictures).

    python -m layerlab.app.screenshots [OUTDIR]      (default assets/screenshots)

Runs offscreen. The default example is trained for a while first, so that its picture
shows curves and a decision boundary.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEventLoop, QSettings, QTimer

from layerlab.app.application import make_application
from layerlab.app.main_window import MainWindow
from layerlab.core.examples import DEFAULT_EXAMPLE, example_names

SIZE = (1500, 950)


def wait(ms: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def render(out: Path) -> list[Path]:
    make_application()
    # a fresh window, not the layout this user left last time
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                      tempfile.mkdtemp(prefix="layerlab-shots-"))
    out.mkdir(parents=True, exist_ok=True)
    window = MainWindow(offer_recovery=False)
    window.confirm_discard = lambda: True  # the spiral's run is not kept: no question asked
    window.resize(*SIZE)
    window.show()
    written = []
    for name in example_names():
        window.open_example(name)
        wait(300)
        window.view.fit()
        if name == DEFAULT_EXAMPLE:
            window.actions["actionTrain"].trigger()
            loop = QEventLoop()
            window.training.controller.stateChanged.connect(
                lambda state, done=loop: done.quit() if state == "idle" else None)
            loop.exec()
            window.training.tabs.setCurrentWidget(window.training.boundary)
            wait(300)
        else:
            window.training.tabs.setCurrentWidget(window.training.preview)
            wait(1500)  # the dataset preview is loaded in the torch thread
        path = out / f"{name}.png"
        window.grab().save(str(path))
        written.append(path)
    window.doc.undo_stack.setClean()
    window.close()
    return written


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("assets/screenshots")
    for path in render(folder):
        print(f"wrote {path}")
