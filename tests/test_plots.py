"""The training curves: one colour per run, labels in the legend, TensorBoard smoothing, x by
step / epoch / seconds, hiding, hover and export — on the real widget."""

import math
import xml.etree.ElementTree as ElementTree

import numpy as np
import pyqtgraph as pg
import pytest
from PIL import Image
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor
from PySide6.QtSvg import QSvgRenderer

from layerlab.app.plot_tools import Smoother, ema
from layerlab.app.plots import RunPlots, run_colour
from layerlab.core.records import EpochRecord, StepRecord

LABELS = ["sgd lr=0.1", "adam lr=0.01", "rmsprop lr=0.01"]


def rows(run: int, epochs: int = 6) -> list[dict[str, str]]:
    """metrics.csv rows as csv.DictReader gives them: text, '' where absent."""
    out = []
    for epoch in range(1, epochs + 1):
        loss = 1.0 / (epoch + run)
        out.append({"epoch": str(epoch), "step": str(10 * epoch), "train_loss": repr(loss),
                    "val_loss": repr(loss + 0.1), "val_accuracy": repr(1 - loss / 2),
                    "val_r2": "", "seconds": str(run + epoch), "samples_per_s": "100"})
    return out


@pytest.fixture
def plots(qtbot):
    from layerlab.app.application import make_application

    make_application()
    widget = RunPlots()
    qtbot.addWidget(widget)
    widget.resize(1100, 380)
    widget.show()
    qtbot.waitExposed(widget)
    yield widget
    widget.timer.stop()


def load_three(plots):
    for run, label in enumerate(LABELS):
        plots.load_run(f"/runs/{run}", label, run_colour(run), rows(run))
    plots.redraw()


def hand_ema(values, weight):
    """TensorBoard's smoothing, written out: debiased, non-finite values passed through."""
    out, last, count = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out.append(last / (1 - weight ** count))
    return out


def test_each_run_has_its_own_colour_on_every_series(plots):
    colours = [run_colour(i) for i in range(14)]
    assert len(set(colours)) == 14
    assert all(QColor(c).lightness() < 200 for c in colours)  # readable on white
    load_three(plots)
    for run in plots.runs:
        colour = QColor(run.colour)
        raw, smooth, val, score = run.curves
        assert raw.opts["pen"].color().rgb() == colour.rgb()  # same hue, faint
        assert raw.opts["pen"].color().alpha() < 255
        for curve in (smooth, val, score):
            assert curve.opts["pen"].color() == colour
        for curve in (val, score):  # the validation markers too, not a shared navy
            assert pg.mkBrush(curve.opts["symbolBrush"]).color() == colour
            assert pg.mkPen(curve.opts["symbolPen"]).color() == colour
    assert len({run.colour for run in plots.runs}) == 3


def test_the_legend_shows_the_labels_follows_renames_and_stars_the_best(plots, qtbot):
    load_three(plots)
    assert [label.text for _sample, label in plots.legend.items] == LABELS
    plots.rename_run("/runs/1", "adam lr=0.01 (tuned)")
    plots.mark_best("/runs/1")
    texts = [label.text for _sample, label in plots.legend.items]
    assert texts == [LABELS[0], "★ adam lr=0.01 (tuned)", LABELS[2]]
    assert plots.run_list.item(1).text() == "★ adam lr=0.01 (tuned)"
    best, other = plots.runs[1].curves[1], plots.runs[0].curves[1]
    assert best.opts["pen"].widthF() > other.opts["pen"].widthF()
    plots.mark_best(None)
    assert [label.text for _sample, label in plots.legend.items][1] == "adam lr=0.01 (tuned)"
    plots.remove_run("/runs/0")
    assert [label.text for _sample, label in plots.legend.items] == [
        "adam lr=0.01 (tuned)", LABELS[2]]
    assert plots.run_list.count() == 2


def test_smoothing_is_tensorboards_moving_average(plots, qtbot):
    rng = np.random.default_rng(1)
    losses = list(1 / np.arange(1, 61) + 0.2 * rng.random(60))
    losses[7] = math.nan  # a diverged step is drawn as it is and does not feed the average
    records = [StepRecord(1, i + 1, i + 1, 60, v, 0.0, 0.1) for i, v in enumerate(losses)]
    plots.add_run("/runs/live", "live", run_colour(0))
    plots.add(records[:20])
    qtbot.keyClick(plots, Qt.Key.Key_M, Qt.KeyboardModifier.AltModifier)  # its label's mnemonic
    assert plots.smoothing.hasFocus()
    qtbot.keyClick(plots.smoothing, Qt.Key.Key_Home)
    for _ in range(6):
        qtbot.keyClick(plots.smoothing, Qt.Key.Key_PageUp)
    assert plots.smoothing_label.text() == "s&moothing 0.60"
    plots.redraw()
    plots.add(records[20:])  # a live run: the average goes on from where it stood
    plots.redraw()
    raw, smooth = plots.runs[0].curves[:2]
    np.testing.assert_allclose(smooth.getData()[1], hand_ema(losses, 0.6), rtol=1e-12)
    np.testing.assert_array_equal(raw.getData()[1], losses)
    assert raw.isVisible()
    qtbot.keyClick(plots.smoothing, Qt.Key.Key_Home)  # 0: the raw curve alone
    plots.redraw()
    np.testing.assert_array_equal(smooth.getData()[1], losses)
    assert not raw.isVisible()
    for weight in (0.01, 0.5, 0.9, 0.99):  # long series cross ema()'s chunks
        values = rng.normal(size=9000) + np.linspace(5, 0, 9000)
        expected = hand_ema(values, weight)
        np.testing.assert_allclose(ema(values, weight), expected, rtol=1e-9)
        smoother = Smoother()
        for end in (1, 7, 4500, 9000):  # fed as a live run grows
            got = smoother(values[:end], weight)
        np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_the_x_axis_goes_by_step_epoch_or_seconds_of_training(plots, qtbot):
    plots.load_run("/runs/0", "loaded", run_colour(0), rows(0, epochs=3))  # seconds 1, 2, 3
    plots.add_run("/runs/live", "live", run_colour(1))
    plots.add([StepRecord(1, s, s, 4, 1.0 / s, 0.0, 0.1) for s in range(1, 5)]
              + [EpochRecord(1, 4, 0.5, 0.6, 0.7, 2.0, None, 40)]
              + [StepRecord(2, s, s - 4, 4, 1.0 / s, 0.0, 0.1) for s in range(5, 7)])
    plots.redraw()
    loaded, live = plots.runs
    assert list(loaded.curves[2].getData()[0]) == [10, 20, 30]
    assert list(live.curves[0].getData()[0]) == [1, 2, 3, 4, 5, 6]
    plots.x_axis.setFocus()
    qtbot.keyClick(plots.x_axis, Qt.Key.Key_Down)
    assert plots.x_axis.currentText() == "epoch"
    plots.redraw()
    assert list(live.curves[0].getData()[0]) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    qtbot.keyClick(plots.x_axis, Qt.Key.Key_Down)
    assert plots.x_axis.currentText() == "seconds"
    assert plots.loss_plot.getAxis("bottom").labelText == "seconds of training"
    plots.redraw()
    assert list(loaded.curves[2].getData()[0]) == [1, 3, 6]  # the seconds column, summed
    assert list(loaded.curves[3].getData()[0]) == [1, 3, 6]
    # live steps: between epoch ends in proportion, after the last at its pace
    np.testing.assert_allclose(live.curves[0].getData()[0], [0.5, 1, 1.5, 2, 2.5, 3])


def test_a_hidden_run_draws_nothing_and_is_not_named_by_hover(plots, qtbot):
    load_three(plots)
    plots.run_list.setFocus()
    plots.run_list.setCurrentRow(1)
    with qtbot.waitSignal(plots.visibilityChanged) as shown:
        qtbot.keyClick(plots.run_list, Qt.Key.Key_Space)
    assert shown.args == ["/runs/1", False]
    assert plots.run_list.item(1).checkState() == Qt.CheckState.Unchecked
    assert not any(curve.isVisible() for curve in plots.runs[1].curves)
    assert all(curve.isVisible() for curve in plots.runs[0].curves[1:])
    point_at(plots, qtbot, plots.val_plot, 30, 1 / 4 + 0.1)  # run 1's last validation loss
    assert LABELS[1] not in plots.hover_text()
    plots.set_run_visible("/runs/1", True)
    assert plots.run_list.item(1).checkState() == Qt.CheckState.Checked
    assert all(curve.isVisible() for curve in plots.runs[1].curves[1:])
    sample = plots.legend.items[2][0]  # a click on a legend line hides its whole run
    where = plots.view.mapFromScene(sample.mapToScene(sample.boundingRect().center()))
    with qtbot.waitSignal(plots.visibilityChanged) as shown:
        qtbot.mouseClick(plots.view.viewport(), Qt.MouseButton.LeftButton, pos=where)
    assert shown.args == ["/runs/2", False]
    assert not any(curve.isVisible() for curve in plots.runs[2].curves)
    assert plots.run_list.item(2).checkState() == Qt.CheckState.Unchecked


def point_at(plots, qtbot, plot, x, y):
    scene = plot.vb.mapViewToScene(QPointF(x, y))
    qtbot.mouseMove(plots.view.viewport(), plots.view.mapFromScene(scene))
    qtbot.wait(20)


def test_hover_names_the_run_and_the_value_nearest_the_pointer(plots, qtbot):
    load_three(plots)
    point_at(plots, qtbot, plots.val_plot, 30.3, 1 / 4 + 0.1 + 0.002)
    assert plots.hover_text() == f"{LABELS[1]}\nstep 30\nvalidation loss {1 / 4 + 0.1:.4g}"
    point_at(plots, qtbot, plots.acc_plot, 60, 1 - 1 / 16)
    assert plots.hover_text().startswith(f"{LABELS[2]}\nstep 60\nvalidation score 0.9375")
    point_at(plots, qtbot, plots.acc_plot, 5, 0.05)  # far from every point
    assert plots.hover_text() == ""


def test_export_writes_a_png_and_an_svg_of_the_three_plots(plots, qtbot, tmp_path,
                                                            monkeypatch):
    load_three(plots)
    plots.export(tmp_path / "curves.png")
    with Image.open(tmp_path / "curves.png") as image:
        image.load()
        assert image.format == "PNG"
        assert image.width >= 2 * plots.view.ci.width() - 1 and image.height > 300
        assert len(set(image.convert("RGB").get_flattened_data())) > 20  # curves, not a blank page
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(tmp_path / "curves"), "SVG drawing (*.svg)"))
    qtbot.mouseClick(plots.export_button, Qt.MouseButton.LeftButton)
    assert QSvgRenderer(str(tmp_path / "curves.svg")).isValid()
    root = ElementTree.parse(tmp_path / "curves.svg").getroot()
    assert root.tag.endswith("svg")
    text = " ".join("".join(node.itertext()) for node in root.iter())
    assert all(label in text for label in LABELS)
    said = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _parent, _title, text: said.append(text))
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(tmp_path / "gone" / "c.png"), "PNG image (*.png)"))
    qtbot.mouseClick(plots.export_button, Qt.MouseButton.LeftButton)
    assert said == [f"Could not write {tmp_path / 'gone' / 'c.png'}: No such file or directory."]


def test_redraws_slow_down_when_drawing_is_slow(plots, monkeypatch):
    """The GUI thread holds the GIL while it draws and training waits: a redraw that takes
    40 ms (drawing and painting) is followed by the next at least 40 ms / DUTY later (at
    most SLOWEST_REDRAW_MS); a quick one goes back to the quickest pace, 5 a second."""
    import time

    from layerlab.app import plots as module

    load_three(plots)
    draw = plots._draw_all
    monkeypatch.setattr(plots, "_draw_all", lambda: (time.sleep(0.04), draw()))
    plots.add([StepRecord(1, 70, 1, 1, 0.5, 0.0, 0.0)])
    plots.redraw()
    assert min(40 / module.DUTY, module.SLOWEST_REDRAW_MS) <= plots.timer.interval() \
        <= module.SLOWEST_REDRAW_MS
    # a redraw that takes no time, nothing painted since (a real quick one may take more
    # than the 6 ms that keep 5 a second on a busy machine)
    monkeypatch.setattr(plots, "_draw_all", lambda: None)
    plots.view.painting = 0.0
    plots.add([StepRecord(1, 71, 1, 1, 0.5, 0.0, 0.0)])
    plots.redraw()
    assert plots.timer.interval() == module.REDRAW_MS


def test_empty_plots_show_plain_axes(plots):
    plots.redraw()
    for plot in (plots.loss_plot, plots.val_plot):
        (x0, x1), (y0, y1) = plot.viewRange()
        assert (x0, y0, y1) == (0, 0, 1) and x1 >= 1  # not the reset's 1e-9 view
