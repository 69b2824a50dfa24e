"""The window's large-model tools, driven through the real widgets: Generate (F9) continues a
prompt in the torch thread, streaming each token with the probability core's generate()
gives it; Open Block into Parts (node menu, Ctrl+Shift+B) opens a trained GPTBlock into a
group that computes the same, and undo gives the file back byte for byte; the status bar
tells how many parameters train once LoRA freezes the base weights."""

import time

import pytest
import torch
from PySide6.QtCore import QEvent, QPoint, Qt, QTimer
from PySide6.QtGui import QContextMenuEvent, QHelpEvent
from PySide6.QtWidgets import QApplication, QSpinBox, QToolTip

import layerlab
from layerlab.app.generate_ops import TRAIN_FIRST, GenerateOps
from layerlab.core.generate import generate
from layerlab.core.text_data import encode

CTRL_SHIFT = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier


def train(window, qtbot):
    qtbot.keyClick(window, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: window.training.controller.state == "idle"
                    and window.training.controller.worker.trainer is not None, timeout=30_000)
    return window.training.controller.worker.trainer


def press_generate(ops, qtbot):
    qtbot.mouseClick(ops.panel.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(ops.panel.button.isEnabled, timeout=10_000)


def tip_of_character(text, index):
    """The tooltip shown when the mouse rests on character `index` of the continuation."""
    cursor = text.textCursor()
    cursor.setPosition(index)
    at = text.cursorRect(cursor).center() + QPoint(3, 0)
    viewport = text.viewport()
    QApplication.sendEvent(viewport, QHelpEvent(QEvent.Type.ToolTip, at,
                                                viewport.mapToGlobal(at)))
    return QToolTip.text()


@pytest.mark.qt_log_ignore("does not support raise", extend=True)  # offscreen: the tooltip
def test_generate_streams_tokens_with_cores_probabilities(gpt, qtbot):
    ops = gpt.findChild(GenerateOps)
    panel = ops.panel
    qtbot.keyClick(gpt, Qt.Key.Key_F9)
    assert ops.dock.isVisible()
    qtbot.keyClicks(panel.prompt, "12+30=")
    press_generate(ops, qtbot)
    assert panel.message.text() == TRAIN_FIRST
    trainer = train(gpt, qtbot)
    panel.tokens.setValue(6)
    panel.temperature.setValue(0.8)
    panel.seed.setValue(3)
    # a slow model (60 ms a token): each token must reach the panel while the torch
    # thread is still writing the next, not all of them once it is done
    slow = trainer.model.register_forward_pre_hook(lambda *_: time.sleep(0.06))
    done_in_torch = []
    ops.worker.finished.connect(lambda _: done_in_torch.append(True))  # in the torch thread
    seen = []
    panel.table.model().rowsInserted.connect(
        lambda *_: seen.append((bool(done_in_torch), panel.table.rowCount())))
    press_generate(ops, qtbot)
    slow.remove()
    # streamed: each token but the last was on screen before generation had ended
    assert [rows for done, rows in seen if not done][:5] == [1, 2, 3, 4, 5]
    vocab = trainer.data.vocab
    core = generate(trainer.model, encode("12+30=", vocab), 6, seed=3, temperature=0.8,
                    context=8)
    written = panel.written()
    assert [t for t, _ in written] == [vocab[t] for t in core.tokens]
    assert [p for _, p in written] == pytest.approx(core.probabilities, rel=1e-6)
    assert panel.text.toPlainText() == "12+30=" + "".join(vocab[t] for t in core.tokens)
    fourth = tip_of_character(panel.text, len("12+30=") + 3)  # hovering the fourth token
    assert fourth == f"{vocab[core.tokens[3]]!r}: probability {core.probabilities[3]:.3f}"
    qtbot.keyClick(panel.prompt, Qt.Key.Key_Return)  # the same seed writes the same text
    qtbot.waitUntil(panel.button.isEnabled, timeout=10_000)
    assert panel.written() == written
    panel.prompt.clear()
    qtbot.keyClicks(panel.prompt, "12x=")
    press_generate(ops, qtbot)
    assert panel.message.text() == ("The prompt's character 'x' is not in the model's "
                                    "vocabulary '0123456789+='; use only those characters.")
    assert panel.written() == [] and panel.text.toPlainText() == ""


def open_from_node_menu(window, qtbot, node):
    """Right-click the node and choose Open Block into Parts from its menu."""
    view = window.view
    item = window.scene.nodes[node]
    at = view.mapFromScene(item.sceneBoundingRect().center())
    chosen = []

    def choose():
        menu = QApplication.activePopupWidget()
        action = next(a for a in menu.actions() if a.objectName() == "actionOpenBlock")
        chosen.append(action.isEnabled())
        menu.setActiveAction(action)
        qtbot.keyClick(menu, Qt.Key.Key_Return)

    QTimer.singleShot(50, choose)
    view.contextMenuEvent(QContextMenuEvent(QContextMenuEvent.Reason.Mouse, at,
                                            view.viewport().mapToGlobal(at)))
    qtbot.waitUntil(lambda: bool(chosen))
    window.activateWindow()  # the menu has gone: keys go to the window again
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    return chosen[0]


def carried(window, qtbot):
    """Wait for the torch thread to say that the weights followed the graph."""
    bar = window.statusBar()
    qtbot.waitUntil(lambda: bar.currentMessage() == "The trained weights were carried over.",
                    timeout=10_000)
    bar.clearMessage()


def outputs(trainer, x):
    trainer.model.eval()
    with torch.no_grad():
        return trainer.model(x)


@pytest.mark.qt_log_ignore("does not support raise", "does not support grabbing the keyboard",
                           extend=True)  # the offscreen platform, when the node menu opens
def test_open_block_into_parts_keeps_the_trained_model_and_undoes_exactly(gpt, qtbot):
    trainer = train(gpt, qtbot)
    worker = gpt.training.controller.worker
    x = torch.randint(0, 12, (3, 8), generator=torch.Generator().manual_seed(1))
    closed = outputs(trainer, x)
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    saved = gpt.doc.project.to_json()
    gpt.scene.select_only(["norm"])
    assert not gpt.actions["actionOpenBlock"].isEnabled()  # a LayerNorm has no parts
    assert open_from_node_menu(gpt, qtbot, "block1")
    carried(gpt, qtbot)
    assert "block1" not in gpt.doc.graph
    assert layerlab.core.groups.members(gpt.doc.graph, "block1")[:3] == [
        "block1_ln1", "block1_attn", "block1_res1"]
    assert "block1_ln1" in worker.trainer.project.graph
    torch.testing.assert_close(outputs(worker.trainer, x), closed, rtol=1e-6, atol=1e-6)
    opened = gpt.doc.project.to_json()
    assert gpt.doc.undo_stack.count() == 1  # one step
    qtbot.keyClick(gpt, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    carried(gpt, qtbot)
    assert gpt.doc.project.to_json() == saved  # byte for byte
    assert "block1" in worker.trainer.project.graph
    back = worker.trainer.model.state_dict()
    assert all(torch.equal(back[k], v) for k, v in weights.items()) and back.keys() == \
        weights.keys()
    gpt.scene.select_only(["block1"])
    qtbot.keyClick(gpt, Qt.Key.Key_B, CTRL_SHIFT)  # the shortcut does the same
    assert gpt.doc.project.to_json() == opened
    for step in (gpt.doc.undo_stack.undo, gpt.doc.undo_stack.redo):
        carried(gpt, qtbot)
        step()
    carried(gpt, qtbot)
    assert gpt.doc.project.to_json() == opened
    assert "block1_ln1" in worker.trainer.project.graph
    torch.testing.assert_close(outputs(worker.trainer, x), closed, rtol=1e-6, atol=1e-6)
    refuses_a_block_inside_a_group(gpt, qtbot)


def test_the_status_bar_counts_trainable_parameters_once_lora_is_on(window, qtbot):
    window.open_example("digits-mlp")
    assert window.params_label.text() == "37,510 parameters"
    window.scene.select_only(["fc1"])
    spin = window.inspector.findChild(QSpinBox, "param_lora_rank")
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, "8")
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    model = layerlab.build_model(window.doc.graph)
    total = sum(p.numel() for p in model.parameters())
    free = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert free < total
    assert window.params_label.text() == f"trainable {free:,} of {total:,} parameters"


def refuses_a_block_inside_a_group(gpt, qtbot):
    """block2 alone in a group: opening it would move its parts out; refused in words."""
    gpt.scene.select_only(["block2"])
    qtbot.keyClick(gpt, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier)
    group = layerlab.core.groups.group_of(gpt.doc.graph, "block2")
    name = gpt.doc.project.groups[group]["name"]
    gpt.scene.groups.toggle(group)  # expanded: block2 can be chosen on its own
    steps = gpt.doc.undo_stack.count()
    gpt.scene.select_only(["block2"])
    qtbot.keyClick(gpt, Qt.Key.Key_B, CTRL_SHIFT)
    assert gpt.statusBar().currentMessage() == (
        f"block2 is inside group {name}, and a layer is in one group at most: ungroup it "
        "first (Edit ▸ Ungroup), then open it.")
    assert gpt.doc.undo_stack.count() == steps and "block2" in gpt.doc.graph


@pytest.mark.qt_log_ignore("does not support raise", extend=True)  # offscreen: the tooltip
def test_tokens_that_come_faster_than_they_show_are_laid_out_together(qtbot):
    """A small model writes hundreds of tokens a second: they are shown in a few batches
    (one layout of the text each: one by one, 2,000 tokens took the GUI thread 25 s), in
    their order, each with its colour and tooltip; finishing shows what is still pending."""
    from layerlab.app.generate_panel import GeneratePanel, probability_colour

    panel = GeneratePanel()
    qtbot.addWidget(panel)
    panel.show()
    batches = []
    panel.table.model().rowsInserted.connect(lambda _, first, last: batches.append(
        last - first + 1))
    tokens = [(str(i % 10) if i % 7 else " ", (i % 100) / 100) for i in range(600)]
    panel.begin("12+")
    for text, p in tokens[:300]:  # queued signals, handled one after the other
        panel.add_token(text, p)
    qtbot.waitUntil(lambda: panel.table.rowCount() == 300)
    assert batches == [1, 299]  # the first at once, the rest together after SHOW_EVERY_S
    for text, p in tokens[300:]:
        panel.add_token(text, p)
    panel.finish("Wrote 600 tokens.")  # shows what was pending, at once
    assert panel.table.rowCount() == 600 and len(batches) <= 4
    assert panel.written() == [(t.replace(" ", "␣"), p) for t, p in tokens]
    assert panel.text.toPlainText() == "12+" + "".join(t for t, _ in tokens)
    cursor = panel.text.textCursor()
    cursor.setPosition(len("12+") + 421)  # just after token 420 (0.20): its format
    look = cursor.charFormat()
    assert look.anchorHref() == "token:420"
    assert look.background().color() == probability_colour(0.2)
    assert tip_of_character(panel.text, len("12+") + 420) == "'␣': probability 0.200"


def test_a_show_slower_than_the_pause_still_leaves_the_pause_free(qtbot, monkeypatch):
    """A long continuation takes longer than SHOW_EVERY_S to lay out (4,000 characters:
    35 ms here): the tokens that come meanwhile still wait the whole pause and show
    together, rather than each at once, one layout per token, with the GUI thread never free."""
    from layerlab.app.generate_panel import SHOW_EVERY_S, GeneratePanel

    panel = GeneratePanel()
    qtbot.addWidget(panel)
    lay_out = panel.text.add

    def slow(tokens):
        lay_out(tokens)
        time.sleep(1.5 * SHOW_EVERY_S)  # as a long text's layout takes

    monkeypatch.setattr(panel.text, "add", slow)
    batches = []
    panel.table.model().rowsInserted.connect(lambda _, first, last: batches.append(
        last - first + 1))
    panel.begin("12+")
    for digit in "0123456789":  # queued signals, handled one after the other
        panel.add_token(digit, 0.5)
    qtbot.waitUntil(lambda: panel.table.rowCount() == 10)
    assert batches == [1, 9]


def test_train_while_text_is_written_stops_the_writing_and_trains_at_once(gpt, qtbot):
    """Train (F5) while a slow model writes 200 tokens: the writing stops after the token
    under way, says so, and the run trains at once rather than queueing behind it."""
    ops = gpt.findChild(GenerateOps)
    panel = ops.panel
    trainer = train(gpt, qtbot)
    qtbot.keyClick(gpt, Qt.Key.Key_F9)
    qtbot.keyClicks(panel.prompt, "12+30=")
    panel.tokens.setValue(200)
    slow = trainer.model.register_forward_pre_hook(lambda *_: time.sleep(0.05))
    qtbot.mouseClick(panel.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.table.rowCount() >= 2, timeout=10_000)
    controller = gpt.training.controller
    qtbot.keyClick(gpt, Qt.Key.Key_F5)  # Train
    assert controller.state == "running"
    qtbot.waitUntil(panel.button.isEnabled, timeout=5_000)  # well before 200 × 50 ms
    slow.remove()
    written = len(panel.written())
    assert written < 50
    assert panel.message.text().startswith(f"Stopped after {written} of 200 tokens")
    qtbot.waitUntil(lambda: controller.state == "idle", timeout=30_000)
    assert controller.worker.trainer is not trainer and controller.worker.trainer.step == 4
