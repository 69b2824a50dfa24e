"""What the step-through shows besides the chain rule: the tensors of the node in view,
the gradient flow, the value labels and verdict badges on the canvas, the thumbnails, and
the curves after a traced step."""

from dataclasses import replace

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtWidgets import QSpinBox

from layerlab.app.canvas.items import LINE, NODE_WIDTH
from layerlab.core.diagnostics import Verdict, trace_grad_norms


def enter(window, qtbot):
    window.actions["actionStepThrough"].trigger()
    qtbot.waitUntil(lambda: window.stepper.active, timeout=30_000)
    return window.stepper


def go_to(stepper, phase, node):
    stepper.go(next(e.index for e in stepper.events if e.phase == phase and e.node == node))


def label_rect(item):
    """Where the node's value label is drawn (above the node), in scene coordinates."""
    return item.mapRectToScene(QRectF(0, -LINE - 2, NODE_WIDTH, LINE))


def visible(view):
    return view.mapToScene(view.viewport().rect()).boundingRect()


def test_value_labels_stay_on_the_canvas_after_fit_and_when_scrolled_to_the_top(window,
                                                                                 qtbot):
    stepper = enter(window, qtbot)
    stepper.jump("loss")  # every node has its value label now, named as in the chain rule
    nodes, stats = window.scene.nodes, stepper.trace.stats
    assert nodes["fc1"].caption == f"mean |fc1| {stats['fc1'].mean_abs:.3g}"
    assert nodes["fc3"].caption == f"mean |ŷ| {stats['fc3'].mean_abs:.3g}"
    go_to(stepper, "backward", "fc2")
    assert nodes["fc3"].caption == f"‖dL/dŷ‖ {stepper.trace.grad_stats['fc3'].norm:.2g}"
    assert nodes["fc2"].caption.startswith("‖dL/dfc2‖ ")
    stepper.jump("loss")
    top = min(window.scene.nodes.values(), key=lambda item: item.scenePos().y())
    assert top.caption
    # what an item paints must lie in its bounding rect: the view repaints, scrolls and
    # fits by it, and leaves a label outside it stale or cut off
    badge = top.mapRectToScene(QRectF(0, top.height + 2, NODE_WIDTH, LINE))
    assert top.sceneBoundingRect().contains(label_rect(top))
    assert top.sceneBoundingRect().contains(badge)
    window.actions["actionFit"].trigger()
    assert visible(window.view).contains(label_rect(top))
    assert top.compact_label() == top.caption  # zoomed out, the block shows its value
    window.view.resetTransform()
    window.view.scale(3, 3)  # zoomed in: the canvas scrolls, up to its scene rect only
    window.view.verticalScrollBar().setValue(window.view.verticalScrollBar().minimum())
    view_top = visible(window.view).top()
    assert window.view.sceneRect().contains(label_rect(top))
    assert view_top <= label_rect(top).top()


def test_a_verdict_badge_shows_only_at_the_phase_it_is_about(window, qtbot):
    stepper = enter(window, qtbot)
    stepper.verdicts = [Verdict("fc1", "vanishing", "fc1: vanishing"),
                        Verdict("tanh1", "dead", "tanh1: dead"),
                        Verdict("fc3", "update-large", "fc3: update too large")]
    badges = {}
    for event in stepper.events:
        stepper.go(event.index)
        badges[(event.phase, event.node)] = {n: i.verdict for n, i in
                                             window.scene.nodes.items() if i.verdict}
    forward = [e for e in stepper.events if e.phase == "forward"]
    before = forward[[e.node for e in forward].index("tanh1") - 1]
    assert badges[(before.phase, before.node)] == {}  # tanh1 not reached yet
    assert badges[("forward", "tanh1")] == {"tanh1": "dead"}
    assert badges[("loss", "loss")] == {"tanh1": "dead"}
    backward = [e.node for e in stepper.events if e.phase == "backward"]
    assert badges[("backward", backward[0])] == {}  # fc1 is reached last
    assert badges[("backward", "fc1")] == {"fc1": "vanishing"}
    updates = [e.node for e in stepper.events if e.phase == "update"]
    assert updates.index("fc1") < updates.index("fc3")
    assert badges[("update", "fc1")] == {}
    assert badges[("update", "fc3")] == {"fc3": "update-large"}
    assert window.scene.nodes["fc3"].compact_label() == "update-large"  # badge: drawn
    # "nonfinite": an output that holds inf or NaN (forward), else a gradient (backward)
    trace = stepper.trace
    trace.stats["tanh1"] = replace(trace.stats["tanh1"], finite=False)
    stepper.verdicts = [Verdict("tanh1", "nonfinite", "tanh1: the first output with NaN"),
                        Verdict("fc2", "nonfinite", "fc2: gradient is nan")]
    badge = {}
    for phase, node in (("forward", "fc3"), ("backward", "fc2"), ("backward", "fc1")):
        go_to(stepper, phase, node)
        badge[phase, node] = {n: i.verdict for n, i in window.scene.nodes.items() if i.verdict}
    assert badge["forward", "fc3"] == {"tanh1": "nonfinite"}  # an output: forward
    assert badge["backward", "fc2"] == {"fc2": "nonfinite"}  # a gradient: backward
    assert badge["backward", "fc1"] == {"fc2": "nonfinite"}


def test_the_tensor_tab_shows_the_nodes_weights_gradient_and_change_with_named_axes(window,
                                                                                   qtbot):
    stepper = enter(window, qtbot)
    trace = stepper.trace
    tensor = window.stepper_panel.tensor
    go_to(stepper, "backward", "fc3")
    go_to(stepper, "update", "fc2")
    titles = [h.title.text() for h in tensor.heatmaps]
    assert titles == ["W · fc2.weight", "dL/dW · fc2.weight", "Δw · fc2.weight"]
    for heatmap, t in zip(tensor.heatmaps, (trace.weights, trace.param_grads, trace.updates),
                          strict=True):
        assert heatmap.isVisibleTo(tensor)
        np.testing.assert_allclose(heatmap.values, t["fc2.weight"].numpy(), rtol=1e-6)
        bound = float(t["fc2.weight"].abs().max())
        np.testing.assert_allclose(heatmap.bar.levels(), (-bound, bound), rtol=1e-6)
    assert tensor.histogram.plotItem.titleLabel.text.startswith("Δw · fc2.weight: mean")
    stats = trace.param_stats["fc2.weight"]["update"]
    curve = tensor.histogram.plotItem.listDataItems()[0]
    assert tuple(curve.yData) == stats.hist
    tensor.parameter.setCurrentText("fc2.bias")
    assert tensor.heatmaps[2].title.text() == "Δw · fc2.bias"
    np.testing.assert_allclose(tensor.heatmaps[2].values[0], trace.updates["fc2.bias"].numpy())
    go_to(stepper, "update", "fc1")  # named axes, whole indices at the cells' centres
    heatmap = tensor.heatmaps[0]  # fc1.weight: 16 × 2
    left, bottom = heatmap.plot.getAxis("left"), heatmap.plot.getAxis("bottom")
    assert left.labelText == "output unit" and bottom.labelText == "input unit"
    assert [label for _, label in bottom._tickLevels[0]] == ["0", "1"]
    rows = left._tickLevels[0]
    assert len(rows) <= 6 and all(pos == int(label) + 0.5 for pos, label in rows)
    go_to(stepper, "forward", "tanh1")
    assert not tensor.parameter.isVisibleTo(tensor)
    assert tensor.heatmaps[0].title.text().startswith("tanh1")
    assert not tensor.heatmaps[1].isVisibleTo(tensor)
    assert tensor.histogram.plotItem.titleLabel.text.startswith("tanh1: mean")
    go_to(stepper, "backward", "fc3")  # the model's output is ŷ, as in the chain rule
    assert tensor.heatmaps[0].title.text().startswith("dL/dŷ (first 32 samples)")
    np.testing.assert_allclose(tensor.heatmaps[0].values, trace.grad("fc3").numpy())
    go_to(stepper, "forward", "fc3")
    assert tensor.heatmaps[0].title.text().startswith("ŷ (fc3)")


def test_clicking_a_row_of_values_explains_that_sample(window, qtbot):
    stepper = enter(window, qtbot)
    panel = window.stepper_panel
    go_to(stepper, "backward", "fc2")
    panel.tabs.setCurrentWidget(panel.tensor)
    heatmap = panel.tensor.heatmaps[0]
    qtbot.mouseClick(heatmap.view.viewport(), Qt.MouseButton.LeftButton,
                     pos=heatmap.cell_centre(7, 3).toPoint())
    assert panel.tabs.currentWidget() is panel.chain and panel.sample.value() == 7
    qtbot.waitUntil(lambda: not panel.chain.busy, timeout=30_000)  # worked out in a thread
    assert panel.chain.explanation.node == "fc2" and panel.chain.explanation.sample == 7
    np.testing.assert_allclose(panel.chain.values()["dL/dfc2"],
                               stepper.trace.grad("fc2")[7].numpy())


def test_gradient_flow_bars_rise_from_the_axis_bottom_so_larger_is_longer(window, qtbot):
    stepper = enter(window, qtbot)
    flow = window.stepper_panel.flow
    norms = trace_grad_norms(stepper.trace)
    bars = flow.bars.opts
    lengths = np.asarray(bars["y1"]) - bars["y0"]
    assert (lengths > 0).all()
    assert bars["y0"] == flow.plot.viewRange()[1][0]
    np.testing.assert_allclose(lengths, np.log10(list(norms.values())) - bars["y0"])
    order = np.argsort(list(norms.values()))
    assert (np.diff(lengths[order]) > 0).all()
    flow.show_trace(stepper.trace, [Verdict("fc1", "vanishing", "fc1: vanishing")])
    brushes = [pg.mkBrush(b).color().name() for b in flow.bars.opts["brushes"]]
    assert brushes == ["#d64545" if n == "fc1" else "#7b3fc4" for n in norms]
    assert flow.verdict_list.item(0).text() == "fc1: vanishing"


def test_a_thumbnail_says_it_shows_the_mean_of_the_nodes_units(window, qtbot):
    item = window.scene.nodes["fc2"]
    window.scene.show_thumbnails({"fc2": np.linspace(-1, 1, 16).reshape(4, 4)})
    assert item.thumbnail.isVisible()
    caption = item.thumbnail.childItems()[0]
    assert caption.isVisible() and caption.text() == "mean of\nall units"
    assert "mean of all its units" in item.thumbnail.toolTip()


def test_a_traced_step_joins_the_run_it_begins_or_continues(window, qtbot):
    spin = window.training.findChild(QSpinBox, "epochs")
    spin.setValue(1)
    stepper = enter(window, qtbot)
    loss = float(stepper.trace.loss)
    qtbot.wait(300)  # the plots redraw on a timer
    plots = window.training.plots
    assert plots.runs == [] and plots.run_list.count() == 0
    window.actions["actionStepThrough"].trigger()  # leave
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=30_000)
    assert len(plots.runs) == 1
    x, y = plots.runs[0].loss.data()
    assert x[0] == 1 and (np.diff(x) == 1).all() and len(x) > 1
    assert abs(y[0] - loss) < 1e-5
    enter(window, qtbot)  # the next step continues the finished run's curve
    qtbot.waitUntil(lambda: plots.runs[0].loss.n == len(x) + 1, timeout=5_000)
    assert len(plots.runs) == 1 and plots.run_list.count() == 1


def test_a_matrix_that_started_at_zero_is_not_judged_by_the_size_of_its_updates(window,
                                                                                qtbot):
    """LoRA's B, or a layer initialised to zero, moves by about its own size at each early
    step: the step-through judges update sizes only of the weights that were not zero as
    the run began, as the health checks of a run and `layerlab trace` do."""
    from layerlab.app.commands import set_param
    from layerlab.core.diagnostics import diagnose

    window.doc.undo_stack.push(set_param(window.doc, "fc2", "init", "zeros"))
    enter(window, qtbot)  # the first traced step: fc2 is zero before it, so not judged
    window.actions["actionStepThrough"].trigger()  # leave
    qtbot.waitUntil(lambda: not window.stepper.active)
    stepper = enter(window, qtbot)  # the second step, from the first one's weights
    assert stepper.trace.param_stats["fc2.weight"]["weight"].norm > 0
    assert ("fc2", "update-large") in {(v.node, v.kind) for v in diagnose(stepper.trace)}
    assert stepper.trace.judged == {"fc1.weight", "fc3.weight"}
    assert "update-large" not in {v.kind for v in stepper.verdicts}
