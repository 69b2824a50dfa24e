"""What the window spends while a run trains (the torch thread waits for the GIL while the GUI
thread paints): the curves' redraw pace counts the paints that follow a redraw, and the
decision-boundary probe runs during a run only while the boundary or the node thumbnails
are on screen."""

import time

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSpinBox

from layerlab.app import plots as module
from layerlab.app.plots import RunPlots
from layerlab.core.insight import BoundaryRecord
from layerlab.core.records import StepRecord


def test_slow_paints_slow_the_redraws(qtbot, monkeypatch):
    """Qt paints after redraw() has returned: a 40 ms paint is counted in the next pace
    (at least 40 / DUTY ms until the redraw after it); instant paints keep the quick pace.
    Drawing and painting are stand-ins here: only their time counts."""
    from layerlab.app.application import make_application

    make_application()
    plots = RunPlots()
    qtbot.addWidget(plots)
    plots.timer.stop()
    plots.resize(900, 300)
    plots.show()
    qtbot.waitExposed(plots)
    monkeypatch.setattr(plots, "_draw_all", lambda: None)
    plots.add([StepRecord(1, 1, 1, 4, 0.9, 0.0, 0.1)])
    plots.redraw()  # counts the real paints that showed the widget
    for seconds, step in ((0.0, 2), (0.04, 3), (0.0, 4)):
        monkeypatch.setattr(pg.GraphicsView, "paintEvent",
                            lambda _view, _event, s=seconds: time.sleep(s))
        plots.view.grab()  # painted, as the event loop paints it after a redraw
        plots.add([StepRecord(1, step, step, 4, 0.9, 0.0, 0.1)])
        plots.redraw()
        quick = plots.timer.interval() == module.REDRAW_MS
        assert quick if seconds == 0 else \
            0.04 / module.DUTY * 1000 <= plots.timer.interval() <= module.SLOWEST_REDRAW_MS


def test_boundary_probes_only_while_someone_looks(window, qtbot):
    """The Curves tab shows: the run sends the boundary once as it begins, not every
    250 ms; the Decision boundary tab or the node thumbnails bring the probes back."""
    boundaries: list[BoundaryRecord] = []
    steps: list[StepRecord] = []
    worker = window.training.controller.worker
    worker.records.connect(lambda records: (
        boundaries.extend(r for r in records if isinstance(r, BoundaryRecord)),
        steps.extend(r for r in records if isinstance(r, StepRecord))))
    epochs = window.training.findChild(QSpinBox, "epochs")
    epochs.setFocus()
    epochs.selectAll()
    qtbot.keyClicks(epochs, "5000")  # a run that lasts while the tabs change
    qtbot.keyClick(epochs, Qt.Key.Key_Return)
    tabs = window.training.tabs
    assert tabs.currentIndex() == 0  # the curves
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: len(steps) > 0, timeout=20_000)
    qtbot.wait(800)  # three probes' time
    assert len(boundaries) == 1 and window.training.controller.state == "running"

    bar = tabs.tabBar()
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton,
                     pos=bar.tabRect(tabs.indexOf(window.training.boundary)).center())
    qtbot.waitUntil(lambda: len(boundaries) >= 3, timeout=5000)
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(0).center())
    qtbot.wait(300)  # a probe under way when the tab changed
    seen = len(boundaries)
    qtbot.wait(800)
    assert len(boundaries) == seen

    window.thumbs.trigger()  # View ▸ Node Thumbnails
    qtbot.waitUntil(lambda: len(boundaries) >= seen + 2, timeout=5000)
    assert window.training.controller.state == "running"
    window.training.controller.stop()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=20_000)


def test_a_run_takes_the_curves_made_ahead(qtbot):
    """Train makes the next run's curves at once (while the trainer is built); the run that
    begins then draws into them instead of making its own as training starts."""
    from layerlab.app.application import make_application

    make_application()
    plots = RunPlots()
    qtbot.addWidget(plots)
    plots.timer.stop()
    before = plots.loss_plot.listDataItems()  # the hover's marker
    plots.prepare_run()
    made = plots.loss_plot.listDataItems()
    assert len(made) == len(before) + 2  # raw and smoothed, empty
    plots.add_run("/runs/1", "run 1", "#4c9be8")
    plots.add([StepRecord(1, 1, 1, 2, 0.9, 0.0, 0.1), StepRecord(1, 2, 2, 2, 0.7, 0.0, 0.1)])
    plots.redraw()
    assert plots.loss_plot.listDataItems() == made
    assert list(plots.runs[0].curves[0].getData()[1]) == [0.9, 0.7]
