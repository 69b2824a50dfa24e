"""Step-through in the window: the events follow the trace, the numbers are the trace's."""

import pytest
import torch
from PySide6.QtCore import Qt

from layerlab.core.timeline import timeline


def enter(window, qtbot):
    window.actions["actionStepThrough"].trigger()
    qtbot.waitUntil(lambda: window.stepper.active, timeout=30_000)
    return window.stepper


@pytest.mark.parametrize("example", ["spiral", "resnet-block"])
def test_stepping_walks_the_trace_in_order_and_shows_its_numbers(window, qtbot, example):
    window.open_example(example)
    stepper = enter(window, qtbot)
    trace = stepper.trace
    assert window.doc.structure_locked
    seen = []
    stepper.eventChanged.connect(seen.append)
    while window.actions["actionStepNext"].isEnabled() and stepper.forward():
        event = stepper.events[stepper.index]
        text = window.stepper_panel.text.text()
        assert event.node in text
        if event.phase == "forward":
            value = float(trace.output(event.node).float().abs().mean())
            assert f"mean |y| {value:.3g}" in text
        elif event.phase == "backward":
            assert f"has norm {trace.grad_stats[event.node].norm:.3g}" in text
    assert seen == list(range(len(stepper.events)))
    events = timeline(trace, window.doc.graph)
    assert [(e.phase, e.node) for e in stepper.events] == [(e.phase, e.node) for e in events]
    forward = [e.node for e in stepper.events if e.phase == "forward"]
    backward = [e.node for e in stepper.events if e.phase == "backward"]
    assert forward == [n for n, _ in trace.forward]
    assert backward == [n for n, _ in trace.backward]
    for u, v in window.doc.graph.edges:  # merges: a node's gradient comes after all users'
        if u in backward and v in backward:
            assert backward.index(v) < backward.index(u)


def test_the_chain_rule_tab_shows_a_linear_layers_rule_for_the_chosen_sample(window, qtbot):
    stepper = enter(window, qtbot)
    panel = window.stepper_panel
    panel.tabs.setCurrentWidget(panel.chain)
    index = next(e.index for e in stepper.events if e.phase == "backward" and e.node == "fc2")
    stepper.go(index)
    qtbot.waitUntil(lambda: not panel.chain.busy, timeout=30_000)  # worked out in a thread
    trace = stepper.trace
    shown = panel.chain.values()
    torch.testing.assert_close(torch.from_numpy(shown["dL/dfc2.weight"]),
                               trace.param_grads["fc2.weight"])  # all 32 samples were kept
    assert panel.chain.check.text().startswith("✓ autograd agrees")
    panel.sample.setValue(5)
    qtbot.waitUntil(lambda: not panel.chain.busy, timeout=30_000)
    assert panel.chain.explanation.sample == 5
    torch.testing.assert_close(torch.from_numpy(panel.chain.values()["dL/dW (this sample)"]),
                               torch.outer(trace.grad("fc2")[5], trace.output("tanh1")[5]))


def test_play_runs_to_the_end_and_stepping_back_restores_colours(window, qtbot):
    stepper = enter(window, qtbot)
    window.stepper_panel.speed.setCurrentText("fast")
    colours = []
    for _ in range(6):
        stepper.forward()
        colours.append({n: (i.highlight, i.caption) for n, i in window.scene.nodes.items()})
    stepper.back()
    now = {n: (i.highlight, i.caption) for n, i in window.scene.nodes.items()}
    assert now == colours[-2]
    with qtbot.waitSignal(stepper.finished, timeout=30_000):
        window.actions["actionStepPlay"].trigger()
    assert stepper.index == len(stepper.events) - 1 and not stepper.playing
    phases = window.scene.nodes["fc1"].highlight
    assert phases is not None  # the update phase colours layers with weights


def test_leaving_stops_every_timer_and_clears_the_canvas(window, qtbot):
    stepper = enter(window, qtbot)
    window.actions["actionStepPlay"].trigger()
    qtbot.wait(100)
    assert stepper.playing
    window.actions["actionStepThrough"].trigger()  # leave
    assert not stepper.active and not stepper.timer.isActive()
    assert stepper.animations == [] and stepper.pulses == []
    assert all(i.highlight is None and i.caption == "" for i in window.scene.nodes.values())
    assert not window.doc.structure_locked
    qtbot.keyClick(window.view, Qt.Key.Key_Right)  # stepping keys do nothing now
    assert stepper.index == -1


def test_a_traced_step_is_a_real_training_step(window, qtbot):
    stepper = enter(window, qtbot)
    trainer = window.training.controller.worker.trainer
    assert trainer.step == 1
    key = "fc1.weight"
    torch.testing.assert_close(stepper.trace.weights[key] + stepper.trace.updates[key],
                               trainer.model.state_dict()[key])


def test_a_chosen_sample_is_stepped_through_without_training_on_it(window, qtbot):
    window.open_example("digits-mlp")
    window.training.preview.sampleChosen.emit(5)
    qtbot.waitUntil(lambda: window.stepper.active, timeout=30_000)
    trainer = window.training.controller.worker.trainer
    trace = window.stepper.trace
    assert trace.kept["batch"] == 1 and trainer.step == 0
    torch.testing.assert_close(trace.output("input")[0], trainer.data.x[5])
    assert [e.phase for e in window.stepper.events].count("update") == 0
    assert window.training.preview.image_index(9 * 2 + 1, 0) == 2  # third 8×8 tile


def test_clicking_a_point_of_the_preview_chooses_it(window, qtbot):
    qtbot.waitUntil(lambda: window.training.preview.points.data.size > 0, timeout=20_000)
    chosen = []
    window.training.preview.sampleChosen.disconnect()
    window.training.preview.sampleChosen.connect(chosen.append)
    points = window.training.preview.points.points()
    window.training.preview.points.sigClicked.emit(window.training.preview.points,
                                                   [points[42]], None)
    assert chosen == [42]
