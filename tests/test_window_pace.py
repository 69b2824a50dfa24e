"""What the window spends while a run trains (the torch thread waits for the GIL while the GUI
thread paints): the curves' redraw pace counts the paints that follow a redraw, and the
decision-boundary probe runs during a run only while the boundary or the node thumbnails
are on screen."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pyqtgraph as pg
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSpinBox, QTableWidgetItem

from layerlab.app import plots as module
from layerlab.app.plots import RunPlots
from layerlab.app.runs_table import RunsTable
from layerlab.core.insight import BoundaryRecord
from layerlab.core.records import EpochRecord, StepRecord
from layerlab.core.runs import RunInfo


def _plots(qtbot, shown: tuple[int, int] | None = None) -> RunPlots:
    """The curves widget, its redraw timer stopped (tests redraw); shown at `shown` size."""
    from layerlab.app.application import make_application

    make_application()
    plots = RunPlots()
    qtbot.addWidget(plots)
    plots.timer.stop()
    if shown is not None:
        plots.resize(*shown)
        plots.show()
        qtbot.waitExposed(plots)
    return plots


def test_slow_paints_slow_the_redraws(qtbot, monkeypatch):
    """Qt paints after redraw() has returned: a 40 ms paint is counted in the next pace
    (at least 40 / DUTY ms until the redraw after it); instant paints keep the quick pace.
    Drawing and painting are stand-ins here: only their time counts."""
    plots = _plots(qtbot, (900, 300))
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
    plots = _plots(qtbot)
    before = plots.loss_plot.listDataItems()  # the hover's marker
    plots.prepare_run()
    made = plots.loss_plot.listDataItems()
    assert len(made) == len(before) + 2  # raw and smoothed, empty
    plots.add_run("/runs/1", "run 1", "#4c9be8")
    plots.add([StepRecord(1, 1, 1, 2, 0.9, 0.0, 0.1), StepRecord(1, 2, 2, 2, 0.7, 0.0, 0.1)])
    plots.redraw()
    assert plots.loss_plot.listDataItems() == made
    assert list(plots.runs[0].curves[0].getData()[1]) == [0.9, 0.7]


def _run(name: str, status: str = "finished", loss: str = "0.5") -> RunInfo:
    return RunInfo(Path("/runs") / name, f"run {name}", status, f"2026-11-29 0{name}:00",
                   12.0, {"lr": name}, {}, [{"epoch": "1", "val_loss": loss,
                                              "val_accuracy": "0.75"}])


def _cells(table: RunsTable) -> list[list[tuple[object, ...]]]:
    """Every cell as a person sees it: text, tick, tooltip, bold, swatch colour."""
    grid = table.table

    def cell(item: QTableWidgetItem) -> tuple[object, ...]:
        icon = item.icon()
        colour = icon.pixmap(12, 12).toImage().pixelColor(6, 6).name() if not icon.isNull() \
            else ""
        return (item.text(), item.checkState() if item.column() == 0 else None,
                item.toolTip(), item.font().bold(), colour)

    return [[cell(grid.item(row, column)) for column in range(grid.columnCount())]
            for row in range(grid.rowCount())]


def _key(name: str) -> str:
    return str(Path("/runs") / name)


def test_a_run_beginning_or_ending_fills_only_its_own_row(qtbot):
    """The runs are listed again as each run begins and ends, while the training thread
    waits for the GUI thread: rows that show the same run as before keep their cells, and
    the table shows exactly what a table filled from scratch shows (sorted by a header too)."""
    table = RunsTable()
    qtbot.addWidget(table)
    colours = {_key(n): c for n, c in zip("01234", ("#000000", "#111111", "#222222", "#333333",
                                                     "#444444"), strict=True)}
    table.refresh([_run("1"), _run("2"), _run("3", "running")], colours)
    first, second = table.table.item(0, 0), table.table.item(1, 3)
    table.refresh([_run("1"), _run("2"), _run("3", "finished", "0.25")], colours)
    assert table.table.item(0, 0) is first and table.table.item(1, 3) is second
    table.set_live(_key("3"), "paused")  # the state, before run.json says so
    table.live = ("", "")  # the run is over: its row shows run.json's status again
    table.refresh([_run("1"), _run("2"), _run("3", "finished", "0.25")], colours)
    assert _cells(table)[2][1][0] == "finished"
    table.table.item(0, 0).setText("typed")  # a rename the folder refused: run.json keeps
    table.refresh([_run("1"), _run("2"), _run("3", "finished", "0.25")], colours)
    assert _cells(table)[0][0][0] == "run 1"
    table.table.item(1, 0).setCheckState(Qt.CheckState.Unchecked)  # run 2 hidden
    table.mark_best(_key("1"))
    colours[_key("3")] = "#e8744c"
    twin = RunsTable()
    qtbot.addWidget(twin)
    twin.hidden, twin.best = {_key("2")}, _key("1")
    for later in ([_run("1", "stopped"), _run("2"), _run("3", "finished", "0.25"),
                   _run("4", "running")],
                  [_run("0"), _run("1", "stopped"), _run("2"), _run("3", "finished", "0.25"),
                   _run("4", "running")],  # a run copied in that began earlier: first
                  [_run("0"), _run("1"), _run("2", "stopped"), _run("4", "finished")],
                  [_run("0"), _run("4", "finished")]):
        table.refresh(later, colours)
        twin.refresh(later, colours)
        assert _cells(table) == _cells(twin)
        assert [table.key_at(row) for row in range(len(later))] == [r.key for r in later]
    assert _cells(table)[1][0][4] == "#444444" and _cells(table)[0][4][3] is False
    table.table.selectAll()
    table.table.sortItems(1, Qt.SortOrder.DescendingOrder)  # by status: running first
    table.refresh([_run("0"), _run("4", "running")], colours)
    assert _cells(table)[0][0][0] == "run 4" and _cells(table)[0][1][0] == "running"
    assert [table.key_at(row) for row in range(2)] == [_key("4"), _key("0")]
    assert sorted(table.selected()) == [_key("0"), _key("4")]  # every selected run stays


def test_listing_the_runs_again_leaves_their_curves_alone(qtbot):
    """Listing the runs again (as each run begins and ends) restyles a run's curves only
    when its label or colour changed: a new pen repaints every line of every run."""
    plots = _plots(qtbot)
    rows = [{"epoch": "1", "step": "10", "train_loss": "0.9", "val_loss": "0.8",
             "val_accuracy": "0.5", "seconds": "1.0"}]
    for key in ("/runs/1", "/runs/2"):
        plots.load_run(key, key[-1], "#4c9be8", rows)
    pens = [curve.opts["pen"] for run in plots.runs for curve in run.curves]
    for key in ("/runs/1", "/runs/2"):
        plots.load_run(key, key[-1], "#4c9be8", rows)
    assert all(a is b for a, b in zip([c.opts["pen"] for r in plots.runs for c in r.curves],
                                      pens, strict=True))
    plots.load_run("/runs/2", "renamed", "#e8744c", rows)
    assert plots.legend.getLabel(plots.runs[1].curves[1]).text == "renamed"
    assert plots.runs[1].curves[1].opts["pen"].color().name() == "#e8744c"
    assert plots.runs[0].curves[1].opts["pen"] is pens[1]


POOL_THREADS = """
import os, sys
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QApplication
if sys.argv[1] == "layerlab":
    from layerlab.app.application import make_application
    make_application()
else:
    QApplication([])
image = QImage(1600, 1000, QImage.Format.Format_ARGB32_Premultiplied)
painter = QPainter(image)
painter.fillRect(image.rect(), QColor(76, 155, 232, 70))  # 1,000 rows blended: to helpers
painter.end()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(sum(name.startswith("Thread (pooled)") for name in names))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="threads listed by /proc")
def test_the_window_paints_without_qts_helper_threads():
    """Qt's helper threads for large fills preempt the training thread on a 2-core machine
    while the GUI thread waits for them holding the interpreter lock; the application
    paints on its own thread (bare Qt, the control, starts helpers for the same paint)."""
    env = {k: v for k, v in os.environ.items() if k != "QT_NO_GUI_THREADPOOL"}
    env["QT_QPA_PLATFORM"] = "offscreen"
    counts = {how: int(subprocess.run([sys.executable, "-c", POOL_THREADS, how], env=env,
                                      capture_output=True, text=True, check=True)
                       .stdout.split()[-1]) for how in ("bare", "layerlab")}
    if counts["bare"] == 0:  # one core, or a Qt that keeps such fills on its own thread
        pytest.skip("bare Qt starts no helper threads here")
    assert counts["layerlab"] == 0


def test_a_new_run_leaves_the_view_and_the_other_runs_alone(qtbot):
    """A run that begins inside the view's range neither resets the views (which repaints
    every run's lines, ~50 ms the training thread waited through at every run's start with
    a few runs shown) nor changes any run's visibility: its swatch is not a tick."""
    plots = _plots(qtbot)
    steps = [StepRecord(1, i, i, 40, 2.0 - i / 40, 0.0, 0.1) for i in range(1, 41)]
    plots.add_run("/runs/1", "run 1", "#4c9be8")
    plots.add(steps)
    plots.redraw()
    ranges = [plot.viewRange() for plot in plots._plots()]
    shown: list[tuple[str, bool]] = []
    plots.visibilityChanged.connect(lambda key, on: shown.append((key, on)))
    with qtbot.assertNotEmitted(plots.loss_plot.getViewBox().sigRangeChanged, wait=0):
        plots.add_run("/runs/2", "run 2", "#e8744c")
        plots.add(steps[:10])
        plots.redraw()
    assert [plot.viewRange() for plot in plots._plots()] == ranges
    assert shown == []
    plots.set_run_visible("/runs/1", False)  # a real change: the views fit what is shown
    assert shown == [("/runs/1", False)]


def test_a_growing_run_repaints_its_own_lines_and_markers_only(qtbot, monkeypatch):
    """While a run grows, the other runs' lines and epoch markers are painted from their
    cached pixmaps (pyqtgraph paints in Python, under the interpreter lock the training
    thread waits for): only the live run's items paint again."""
    painted: list[object] = []
    counting = [False]
    for cls in (pg.PlotCurveItem, pg.ScatterPlotItem):  # before any is made or painted
        original = cls.paint
        monkeypatch.setattr(cls, "paint", lambda item, *a, _o=original: (
            counting[0] and painted.append(item), _o(item, *a))[1])
    plots = _plots(qtbot, (1200, 400))

    def grow(key: str, first: int, last: int) -> None:
        plots.add_run(key, key, "#4c9be8" if key == "done" else "#e8744c")
        plots.add([StepRecord(1, i, i, 40, 2.0 - i / 40, 0.0, 0.1) for i in range(first, last)]
                  + [EpochRecord(e, 10 * e, 1.0, 1.2 - e / 10, 0.5 + e / 20, 1.0)
                     for e in range(1 + first // 10, 1 + last // 10)])
        plots.redraw()
        plots.view.grab()

    grow("done", 1, 41)
    grow("live", 1, 11)
    counting[0] = True
    grow("live", 11, 21)
    done, live = plots.runs
    others = {id(c.curve) for c in done.curves} | {id(c.scatter) for c in done.curves}
    assert not others & {id(item) for item in painted}
    assert {id(live.curves[1].curve), id(live.curves[2].scatter)} <= {id(i) for i in painted}
