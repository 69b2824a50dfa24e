"""The chain-rule and update tabs, clicked through as a student would, on a conv net and a
transformer: the numbers they show are torch autograd's and torch's optimizer step's."""

import json
import re

import numpy as np
import pytest
import torch
import torch.fx
from PySide6.QtCore import Qt

from layerlab.core.compiler import NODE_META, build_loss, build_model
from monkey_support import write_idx_dataset

from conftest import EXAMPLES

BATCH = 4  # every sample of the batch is kept, so parameter gradients are checked too


def open_small(window, tmp_path, example, **params):
    """The example with a batch of BATCH (and MNIST as a small local file set); `params`
    override node parameters."""
    project = json.loads((EXAMPLES / f"{example}.layerlab.json").read_text())
    project["training"]["batch_size"] = BATCH
    if project["training"]["dataset"]["name"] == "mnist":
        write_idx_dataset(tmp_path / "mnist", 64, 16)
        project["training"]["dataset"]["options"] = {"root": str(tmp_path / "mnist"),
                                                      "download": False}
    for node in project["graph"]["nodes"]:
        node["params"].update(params.get(node["id"], {}))
    path = tmp_path / f"{example}.layerlab.json"
    path.write_text(json.dumps(project))
    assert window.open_path(path, confirmed=True)


def enter(window, qtbot):
    window.actions["actionStepThrough"].trigger()
    qtbot.waitUntil(lambda: window.stepper.active, timeout=30_000)
    return window.stepper


def click_tab(qtbot, panel, widget):
    bar = panel.tabs.tabBar()
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton,
                     pos=bar.tabRect(panel.tabs.indexOf(widget)).center())
    assert panel.tabs.currentWidget() is widget


def go_to(stepper, phase, node):
    stepper.go(next(e.index for e in stepper.events if e.phase == phase and e.node == node))


class _Keep(torch.fx.Interpreter):
    """Runs the model and keeps every node's output, asking autograd for its gradient."""

    def __init__(self, module):
        super().__init__(module)
        self.outputs = {}

    def run_node(self, n):
        out = super().run_node(n)
        node = n.meta.get(NODE_META)
        if node is not None and isinstance(out, torch.Tensor) and out.requires_grad:
            out.retain_grad()
            self.outputs[node] = out
        return out


def fresh_autograd(graph, trace):
    """The traced step again, from the weights before it, by torch autograd alone:
    (dL/d(output) per node, dL/dθ per parameter)."""
    model = build_model(graph)
    model.load_state_dict({**model.state_dict(), **trace.weights})
    x = trace.output("input").clone()
    if x.is_floating_point():
        x.requires_grad_(True)
    keep = _Keep(model)
    loss = build_loss(graph)(keep.run(x), trace.targets)
    torch.testing.assert_close(loss.detach(), trace.loss)  # the same step
    loss.backward()
    return ({n: out.grad for n, out in keep.outputs.items()},
            {k: p.grad for k, p in model.named_parameters()})


def shown_chain(panel, qtbot, stepper, node):
    """The chain-rule tab at the node's backward event (the loss: its loss event)."""
    phase = "loss" if node == "loss" else "backward"
    go_to(stepper, phase, node)
    click_tab(qtbot, panel, panel.chain)
    qtbot.waitUntil(lambda: not panel.chain.busy, timeout=30_000)  # worked out in a thread
    e = panel.chain.explanation
    assert e is not None and e.node == node and e.sample == panel.sample.value()
    return panel.chain.values()


def assert_shown(panel, name, expected, err_msg=""):
    """The row `name` holds `expected` (autograd's), and its first values are written out."""
    np.testing.assert_allclose(panel.chain.values()[name], expected, rtol=1e-4, atol=1e-7,
                               err_msg=err_msg or name)
    table = panel.chain.table
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == name)
    written = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?",
                                            table.item(row, 2).text().split("…")[0])]
    np.testing.assert_allclose(written, np.asarray(expected).flatten()[:len(written)],
                               rtol=2e-3, atol=1e-6, err_msg=f"{name} as written")


def assert_check_line(panel):
    e = panel.chain.explanation
    text = panel.chain.check.text()
    match = re.fullmatch(r"✓ autograd agrees \(max diff (\S+)\)", text)
    assert match, text
    assert float(match.group(1)) == pytest.approx(e.max_diff, rel=0.5, abs=1e-12)


def test_the_chain_rule_and_update_tabs_on_a_conv_net_show_autograds_numbers(window, qtbot,
                                                                           tmp_path):
    open_small(window, tmp_path, "lenet5")
    stepper = enter(window, qtbot)
    trace, graph, panel = stepper.trace, window.doc.graph, window.stepper_panel
    grads, param_grads = fresh_autograd(graph, trace)
    s = 2
    panel.sample.setValue(s)
    for node in ("fc3", "relu3", "flatten", "pool2", "conv2", "relu1", "conv1"):
        shown_chain(panel, qtbot, stepper, node)
        source = trace.inputs[node][0]
        name = "ŷ" if source == trace.inputs["loss"][0] else source
        assert_shown(panel, f"dL/d{name}", grads[source][s].numpy(), node)
        for key in ("weight", "bias") if node.startswith(("conv", "fc")) else ():
            assert_shown(panel, f"dL/d{node}.{key}", param_grads[f"{node}.{key}"].numpy())
        assert_check_line(panel)
        assert panel.chain.formula.text()
    shown_chain(panel, qtbot, stepper, "loss")  # dL/dŷ = (softmax(ŷ) − onehot(t)) / N
    assert_shown(panel, "dL/dŷ", grads["fc3"][s].numpy())
    assert "ŷ" in panel.chain.formula.text()
    check_update(window, qtbot, "conv1.weight", (2, 7), (2, 0, 1, 2),
                 param_grads["conv1.weight"])


def test_the_chain_rule_tab_unrolls_a_transformer_layer_and_explains_its_update(
        window, qtbot, tmp_path):
    open_small(window, tmp_path, "tiny-transformer")
    stepper = enter(window, qtbot)
    trace, panel = stepper.trace, window.stepper_panel
    s = 1
    panel.sample.setValue(s)
    shown = shown_chain(panel, qtbot, stepper, "encoder")
    # the real step's autograd, dropout masks included (recorded by tensor hooks)
    assert_shown(panel, "dL/dembed", trace.grad("embed")[s].numpy())
    for key in ("encoder.self_attn.in_proj_weight", "encoder.linear1.weight"):
        assert_shown(panel, f"dL/d{key}", trace.param_grads[key].numpy())
    assert len(panel.chain.explanation.parts) >= 4  # Q, K, V, scores, softmax, …
    for part in panel.chain.explanation.parts:
        assert part.name in shown and f"dL/d({part.name})" in shown
    assert_check_line(panel)
    shown = shown_chain(panel, qtbot, stepper, "embed")  # rows receive the gradient
    assert "dL/dinput" not in shown  # token ids carry no gradient
    assert_shown(panel, "dL/dembed.weight", trace.param_grads["embed.weight"].numpy())
    key = "encoder.self_attn.in_proj_weight"
    check_update(window, qtbot, key, (5, 3), (5, 3), trace.param_grads[key])


def click_weight(qtbot, panel, heatmap, row, column):
    qtbot.mouseClick(heatmap.view.viewport(), Qt.MouseButton.LeftButton,
                     pos=heatmap.cell_centre(row, column).toPoint())


def shown_update(panel):
    table = panel.update_view.table
    terms = {table.item(r, 0).text(): float(table.item(r, 1).text())
             for r in range(table.rowCount())}
    predicted = float(re.search(r"w′ by the rule = (\S+)", panel.update_view.result.text())
                      .group(1))
    return terms, predicted


def check_update(window, qtbot, key, cell, index, grad):
    """Click weight `cell` of `key`'s heatmap at its node's update event: the Update tab
    shows `key[index]`, its gradient `grad` (autograd's) and torch's new weight."""
    stepper, panel = window.stepper, window.stepper_panel
    trace = stepper.trace
    go_to(stepper, "update", key.split(".")[0])
    click_tab(qtbot, panel, panel.tensor)
    panel.tensor.parameter.setCurrentText(key)
    click_weight(qtbot, panel, panel.tensor.heatmaps[0], *cell)
    assert panel.tabs.currentWidget() is panel.update_view
    title = panel.update_view.title.text()
    assert f"{key}[{', '.join(map(str, index))}]" in title
    assert "adam" in title and "step t = 1" in title
    terms, predicted = shown_update(panel)
    after = window.training.controller.worker.trainer.model.state_dict()[key]  # torch's step
    assert terms["w"] == pytest.approx(float(trace.weights[key][index]), rel=1e-7)
    assert terms["g"] == pytest.approx(float(grad[index]), rel=1e-5)
    assert terms["m (before)"] == 0.0 and terms["v (before)"] == 0.0  # a first Adam step
    assert predicted == pytest.approx(float(after[index]), rel=1e-6, abs=1e-9)
    assert "✓" in panel.update_view.result.text()
    assert "m̂" in panel.update_view.formula.text()
    weights = panel.update_view.weights  # Δw of the parameter, the weight outlined
    np.testing.assert_allclose(weights.values.reshape(trace.updates[key].shape),
                               trace.updates[key].numpy())
    assert weights.marker.isVisible() and weights.marker.rect().topLeft().toTuple() == \
        (cell[1], cell[0])
    click_weight(qtbot, panel, weights, 0, 1)  # another weight, clicked right there
    other = (0, 1) if len(index) == 2 else (0, 0, 0, 1)
    assert f"{key}[{', '.join(map(str, other))}]" in panel.update_view.title.text()
    terms, predicted = shown_update(panel)
    assert terms["w"] == pytest.approx(float(trace.weights[key][other]), rel=1e-7)
    assert predicted == pytest.approx(float(after[other]), rel=1e-6, abs=1e-9)
