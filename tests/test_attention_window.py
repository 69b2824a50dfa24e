"""Attention in the window: the step-through's Attention tab, Run ▸ Show Attention… and the
causal mask in the inspector, driven with qtbot and checked against core's numbers."""

from __future__ import annotations

import re

import numpy as np
import torch
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor

from layerlab.app.attention_view import MASKED
from layerlab.app.mask_view import ALLOWED, CausalMaskView
from layerlab.app.mask_view import MASKED as MASK_GREY
from layerlab.core.attention_maps import sample_attention
from layerlab.core.project import Project
from layerlab.core.text_data import ADDITION_VOCAB

from helpers import chain_graph


def addition_project(steps: int = 8) -> Project:
    """A two-node GPT body on 64 sums: n1 causal attention (2 heads), n2 a block (4)."""
    g = chain_graph([steps], ("TokenPositionEmbedding", {"num_embeddings": 12,
                                                         "embedding_dim": 16, "max_len": 64}),
                    ("CausalSelfAttention", {"num_heads": 2}), ("GPTBlock", {"num_heads": 4}),
                    ("Linear", {"out_features": 12}), ("Transpose", {"dim0": 1, "dim1": 2}),
                    dtype="int64", loss="CrossEntropyLoss")
    return Project(g, name="sums", training={
        "dataset": {"name": "addition", "options": {"n_samples": 64}, "validation_split": 0.25},
        "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 16, "epochs": 1, "l1": 0.0,
        "l2": 0.0, "seed": 0, "device": "cpu"})


def left_labels(plot) -> list[str]:
    return [text for _, text in plot.getAxis("left")._tickLevels[0]]


def test_step_through_shows_each_heads_map_of_an_attention_node(window, qtbot):
    window.set_project(addition_project())
    qtbot.keyClick(window, Qt.Key.Key_F11)
    qtbot.waitUntil(lambda: window.stepper.active, timeout=30_000)
    panel, stepper = window.stepper_panel, window.stepper
    while stepper.events[stepper.index].node != "n2" if stepper.index >= 0 else True:
        qtbot.keyClick(window, Qt.Key.Key_Right)
    bar = panel.tabs.tabBar()
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(
        panel.tabs.indexOf(panel.attention)).center())
    assert panel.tabs.currentWidget() is panel.attention
    panel.sample.setValue(1)
    heads, trace = panel.attention.heads, stepper.trace
    text = "".join(ADDITION_VOCAB[i] for i in trace.output("x")[1])
    assert heads.values.shape == (4, 8, 8) and len(heads.plots) == 4
    np.testing.assert_array_equal(heads.values, trace.attention["n2"][1].numpy())
    assert heads.labels == tuple(text)
    for plot in heads.plots:
        assert left_labels(plot) == list(text)
        image = plot.items[0].image  # the cells as drawn: masked ones grey
        assert tuple(image[0, 1]) == MASKED and tuple(image[1, 0]) != MASKED
    centre = heads.view.mapFromScene(heads.plots[0].vb.mapViewToScene(QPointF(0.5, 3.5)))
    qtbot.mouseMove(heads.view.viewport(), centre)
    qtbot.waitUntil(lambda: "reads key" in heads.hover.text())
    said = re.fullmatch(r"head 0: query '(.)' \(position (\d)\) reads key '(.)' \(position "
                        r"(\d)\) with weight (0\.\d{3})", heads.hover.text())
    row, column = int(said[2]), int(said[4])  # the cell under the pointer (±1 pixel)
    assert abs(row - 3) + abs(column - 0) <= 1 and column <= row
    assert (said[1], said[3]) == (text[row], text[column])
    assert said[5] == f"{heads.values[0, row, column]:.3f}"
    while stepper.events[stepper.index].node != "n3":
        qtbot.keyClick(window, Qt.Key.Key_Right)
    assert heads.plots == [] and "attention node" in heads.title.text()


def test_inspector_mask_and_show_attention_of_a_chosen_sample(window, qtbot):
    check_causal_masks(window)
    window.set_project(addition_project())
    window.training.controller.train()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=30_000)
    window.scene.select_only(["n1"])
    qtbot.keyClick(window, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier
                   | Qt.KeyboardModifier.ShiftModifier)
    ops = window.attention
    panel = ops.panel
    assert ops.dock.isVisible() and panel.node.currentText() == "n1"
    qtbot.waitUntil(lambda: panel.record is not None, timeout=10_000)
    panel.sample.selectAll()
    qtbot.keyClicks(panel.sample, "13")
    qtbot.keyClick(panel.sample, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: panel.record.index == 13, timeout=10_000)
    trainer = window.training.controller.worker.trainer
    expected = sample_attention(trainer.model, trainer.data, 13, torch.device("cpu"))
    text = "".join(ADDITION_VOCAB[i] for i in trainer.data.x[13])
    assert panel.record.samples == 64 and text in panel.text.text()
    assert "after 3 training steps" in panel.status.text()
    np.testing.assert_array_equal(panel.heads.values, expected.maps["n1"].weights[0].numpy())
    assert panel.heads.values.shape == (2, 8, 8)
    panel.node.setCurrentText("n2")  # another node of the same answer: no new request
    np.testing.assert_array_equal(panel.heads.values, expected.maps["n2"].weights[0].numpy())
    assert left_labels(panel.heads.plots[0]) == list(text)
    panel.sample.setValue(64)  # past the end: the spin box stops at the last sample
    assert panel.sample.value() == 63
    assert ops.action.toolTip() and ops.action in window.view.context_actions


def check_causal_masks(window):
    """The inspector's mask of a causal node: T from the input, at most 32 drawn."""
    window.set_project(addition_project(steps=40))
    window.scene.select_only(["n1"])
    mask = window.inspector.findChild(CausalMaskView, "causalMask")
    assert mask is not None and mask.grid.steps == 32
    assert "the first 32 of 40 positions" in mask.caption.text()
    window.set_project(addition_project(steps=6))
    window.scene.select_only(["n2"])
    mask = window.inspector.findChild(CausalMaskView, "causalMask")
    assert mask.grid.steps == 6 and mask.caption.text().startswith("6×6")
    picture = mask.grid.grab().toImage()
    for (row, column), colour in (((0, 1), MASK_GREY), ((1, 0), ALLOWED),
                                  ((5, 5), ALLOWED), ((2, 5), MASK_GREY)):
        centre = mask.grid.cell(row, column).center().toPoint()
        assert QColor(picture.pixel(centre)) == colour, (row, column)
    window.scene.select_only(["n3"])  # a Linear: no mask
    assert window.inspector.findChild(CausalMaskView, "causalMask") is None
