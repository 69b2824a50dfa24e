"""Start the window: `layerlab` (the default example) or `layerlab FILE`."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication

from layerlab import __version__

ORGANIZATION = "LayerLab"
APPLICATION = "LayerLab"


def make_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication(argv or [sys.argv[0]])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationVersion(__version__)
    app.setStyle("Fusion")  # follows the system's light or dark scheme
    import pyqtgraph as pg

    dark = app.palette().color(app.palette().ColorRole.Window).lightness() < 128  # type: ignore
    pg.setConfigOptions(antialias=True, background=None if dark else "w",
                        foreground="#dddddd" if dark else "#333333")
    return app  # type: ignore[return-value]


def run_window(path: str | None = None) -> int:
    """Open the window (on `path` when given) and run until it closes."""
    from layerlab.app.main_window import MainWindow

    app = make_application()
    window = MainWindow()
    if path is not None and not window.open_path(Path(path), confirmed=True):
        return 2
    window.show()
    return app.exec()
