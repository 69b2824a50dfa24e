"""Start the window: `layerlab` (the default example) or `layerlab FILE`."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from layerlab import __version__

ORGANIZATION = "LayerLab"
APPLICATION = "LayerLab"
log = logging.getLogger("layerlab")


def make_application(argv: list[str] | None = None) -> QApplication:
    # Qt's raster engine hands every fill of 96 rows or more to a pool of helper threads and
    # waits for them, holding Python's interpreter lock; on a 2-core machine those helpers
    # preempt the training thread (30-40 times a run) and made its steps ~10% slower for
    # fills that take well under a millisecond on one core. Paint on the GUI thread alone
    # (Qt's smooth image scaling and conversions, previews and PNG export, go serial too).
    os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")
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


def error_dialog(parent: QWidget | None, summary: str, details: str) -> QDialog:
    """What went wrong in one sentence, the traceback to read, and a button that copies it."""
    dialog = QDialog(parent)
    dialog.setObjectName("errorDialog")
    dialog.setAccessibleName("Unexpected error")
    dialog.setWindowTitle("Unexpected error")
    text = QLabel(f"LayerLab met an error it did not expect: {summary}\n"
                  "It was logged. “Copy details” puts the details on the clipboard, for a "
                  "bug report.")
    text.setWordWrap(True)
    view = QPlainTextEdit(details)
    view.setObjectName("errorDetails")
    view.setAccessibleName("Error details")
    view.setReadOnly(True)
    copy = QPushButton("Copy details")
    copy.setObjectName("copyDetails")
    copy.setAccessibleName("Copy details")
    copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(details))
    close = QPushButton("Close")
    close.setObjectName("closeError")
    close.setAccessibleName("Close")
    close.setDefault(True)
    close.clicked.connect(dialog.accept)
    buttons = QHBoxLayout()
    buttons.addStretch(1)
    buttons.addWidget(copy)
    buttons.addWidget(close)
    layout = QVBoxLayout(dialog)
    layout.addWidget(text)
    layout.addWidget(view, 1)
    layout.addLayout(buttons)
    dialog.resize(640, 360)
    return dialog


class ErrorReporter(QObject):
    """The window's sys.excepthook: an exception nobody caught (in a slot, a timer, any
    thread) is logged with its traceback and shown in a dialog, never lost on a terminal
    nobody reads. `show(summary, details)` runs in the GUI thread; tests replace it."""

    raised = Signal(str, str)

    def __init__(self, window: QWidget | None,
                 show: Callable[[str, str], None] | None = None) -> None:
        super().__init__()
        self.window = window
        self.show = show or self.open_dialog
        self.raised.connect(self._show)  # queued into the GUI thread from any other

    def __call__(self, kind: type[BaseException], value: BaseException,
                 tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        details = "".join(traceback.format_exception(kind, value, tb))
        log.error("unexpected error\n%s", details)
        self.raised.emit(f"{kind.__name__}: {value}", details)

    @Slot(str, str)
    def _show(self, summary: str, details: str) -> None:
        self.show(summary, details)

    def open_dialog(self, summary: str, details: str) -> None:
        dialog = error_dialog(self.window, summary, details)
        dialog.setModal(True)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()


def refuse(message: str) -> None:
    """A file given on the command line that cannot be opened: said on stderr and in a
    dialog (the window was started from a desktop as often as from a terminal)."""
    print(message, file=sys.stderr)
    QMessageBox.critical(None, "Cannot open project", message)


def run_window(path: str | None = None) -> int:
    """Open the window (on `path` when given) and run until it closes. A file with problems
    opens with them listed; only a file that cannot be read as a project is refused."""
    from layerlab.app.file_ops import describe_load_error
    from layerlab.app.main_window import MainWindow
    from layerlab.core.errors import GraphError, ProjectFileError
    from layerlab.core.project import load_project_lenient

    app = make_application()
    project, problems = None, []
    if path is not None:
        try:
            project, problems = load_project_lenient(path)
        except (ProjectFileError, GraphError) as exc:
            refuse(describe_load_error(Path(path), exc))
            return 2
    window = MainWindow(project)
    reporter = ErrorReporter(window)
    sys.excepthook = reporter
    if path is not None:
        window.opened(Path(path), problems)
    window.show()
    try:
        return app.exec()
    finally:
        sys.excepthook = sys.__excepthook__
