import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"


def pytest_configure(config):
    """Qt tests get their own settings and data folders, never the user's. Torch runs on
    one thread: the tests' models are tiny, and on two cores an OpenMP pool costs more per
    op than it saves (shape grids: 10 s → 0.9 s)."""
    import tempfile

    import torch
    from PySide6.QtCore import QSettings, QStandardPaths

    torch.set_num_threads(1)
    # Each pytest-xdist worker (and a plain run) gets a home of its own: the recovery file,
    # dataset caches and Qt's test-mode folders of one window test never meet another's.
    os.environ["HOME"] = tempfile.mkdtemp(prefix="layerlab-home-")
    QStandardPaths.setTestModeEnabled(True)
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                      tempfile.mkdtemp(prefix="layerlab-settings-"))


@pytest.fixture
def window(qtbot):
    """The real main window on the default example, shown; closed cleanly afterwards with
    no thread left running. Dialogs that would block ask nothing unless a test asks."""
    from PySide6.QtCore import QSettings

    from layerlab.app.application import make_application
    from layerlab.app.main_window import MainWindow, recovery_path

    make_application()
    QSettings().clear()  # no dock or layout left behind by the test before (pytest-xdist
    recovery_path().unlink(missing_ok=True)  # orders a worker's tests its own way)
    win = MainWindow(offer_recovery=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.confirm_discard = lambda: True
    yield win
    win.stepper.leave()
    win.training.controller.stop()
    qtbot.waitUntil(lambda: win.training.controller.state == "idle", timeout=20_000)
    win.doc.undo_stack.setClean()
    win.close()
    assert not win.training.controller.thread.isRunning()


@pytest.fixture
def gpt(window, tmp_path):
    """The window on the tiny GPT with a small dataset and one short epoch (4 batches)."""
    data = json.loads((EXAMPLES / "tiny-gpt.layerlab.json").read_text())
    data["training"]["dataset"]["options"]["n_samples"] = 256
    data["training"]["epochs"] = 1
    path = tmp_path / "gpt.layerlab.json"
    path.write_text(json.dumps(data))
    window.open_path(path, confirmed=True)
    return window


@pytest.fixture
def small_spiral(tmp_path):
    """The spiral example on 200 samples (5 batches an epoch), saved in tmp_path."""
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    data["training"]["dataset"]["options"]["n_samples"] = 200
    path = tmp_path / "spiral.layerlab.json"
    path.write_text(json.dumps(data))
    return path
