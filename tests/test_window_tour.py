"""Slips a new user makes with the large-model tools, driven through the real widgets: a
generation too long to wait for is stopped (Esc) and keeps what it wrote, and stops and goes
when another project is opened; an empty prompt is refused in one sentence; the Attention
dock follows the project when another is opened, and says when an edit leaves its maps out
of date, and that the weights it shows were carried over; a tie to a node without a table does
not shrink the parameter count; a GPTBlock opened into its parts keeps its pinned pipeline
stage start; too many pipeline stages are refused in a sentence, and the stages come back
with the toolbar when the window restores its layout."""


from PySide6.QtCore import Qt

from layerlab.app.attention_ops import CHANGED, NO_ATTENTION, AttentionOps
from layerlab.app.document import Document
from layerlab.app.file_ops import example_project
from layerlab.app.generate_ops import GenerateOps
from layerlab.app.parts_ops import OpenBlock
from layerlab.core.compiler import param_counts
from layerlab.core.generate import generate
from layerlab.core.stages import START_KEY, describe, pinned_starts, pipeline_plan
from layerlab.core.text_data import encode


def test_stop_keeps_the_tokens_written_and_an_empty_prompt_is_refused(gpt, qtbot):
    ops = gpt.findChild(GenerateOps)
    panel = ops.panel
    qtbot.keyClick(gpt, Qt.Key.Key_F5)
    controller = gpt.training.controller
    qtbot.waitUntil(lambda: controller.state == "idle" and controller.worker.trainer is not None
                    and controller.worker.trainer.step > 0, timeout=30_000)
    qtbot.keyClick(gpt, Qt.Key.Key_F9)
    qtbot.keyClick(panel.prompt, Qt.Key.Key_Return)  # nothing typed yet
    qtbot.waitUntil(panel.button.isEnabled, timeout=10_000)
    assert panel.message.text() == ("The prompt is empty: type at least one character for "
                                    "the model to continue (from '0123456789+=').")
    qtbot.keyClicks(panel.prompt, "12+30=")
    panel.tokens.setValue(2000)
    assert not panel.stop.isEnabled()
    qtbot.keyClick(panel.prompt, Qt.Key.Key_Return)
    assert panel.stop.isEnabled()
    qtbot.waitUntil(lambda: panel.table.rowCount() >= 3, timeout=10_000)
    qtbot.keyClick(panel.prompt, Qt.Key.Key_Escape)
    qtbot.waitUntil(panel.button.isEnabled, timeout=10_000)
    written = panel.written()
    assert 3 <= len(written) < 2000 and not panel.stop.isEnabled()
    mean = sum(p for _, p in written) / len(written)
    assert panel.message.text() == (f"Stopped after {len(written)} of 2000 tokens (mean "
                                    f"probability {mean:.3f}) at temperature 0, seed 0.")
    trainer = controller.worker.trainer
    core = generate(trainer.model, encode("12+30=", trainer.data.vocab), len(written),
                    temperature=0, context=8)
    assert [t for t, _ in written] == [trainer.data.vocab[t] for t in core.tokens]
    qtbot.keyClick(panel.prompt, Qt.Key.Key_Return)  # again, then another project mid-way
    qtbot.waitUntil(lambda: panel.table.rowCount() >= 3, timeout=10_000)
    gpt.open_example("spiral")
    qtbot.waitUntil(panel.button.isEnabled, timeout=10_000)  # it stopped
    qtbot.wait(50)  # anything still queued from the torch thread has arrived
    assert panel.table.rowCount() == 0 and panel.text.toPlainText() == ""
    assert panel.message.text() == ""
    ops.dock.close()  # the next test's window starts without it (the layout is kept)


def test_attention_dock_follows_the_project_opened(gpt, qtbot):
    panel = gpt.findChild(AttentionOps).panel
    ctrl_shift = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    controller = gpt.training.controller
    qtbot.keyClick(gpt, Qt.Key.Key_F5)
    qtbot.waitUntil(lambda: controller.state == "idle" and controller.worker.trainer is not None
                    and controller.worker.trainer.step > 0, timeout=30_000)
    qtbot.keyClick(gpt, Qt.Key.Key_A, ctrl_shift)
    qtbot.waitUntil(lambda: panel.record is not None, timeout=10_000)
    assert set(panel.record.maps) == {"block1", "block2"} and "+" in panel.text.text()
    gpt.scene.select_only(["block1"])
    qtbot.keyClick(gpt, Qt.Key.Key_B, ctrl_shift)  # an edit while the dock is open
    qtbot.waitUntil(lambda: gpt.statusBar().currentMessage() == "The trained weights were "
                    "carried over.", timeout=10_000)  # not replaced by a fresh trainer's
    assert panel.record is None and panel.status.text() == CHANGED
    qtbot.keyClick(gpt, Qt.Key.Key_A, ctrl_shift)
    qtbot.waitUntil(lambda: panel.record is not None, timeout=10_000)
    assert set(panel.record.maps) == {"block1_attn", "block2"}
    assert panel.status.text() == ("Sample 0 of 256, weights loaded from a file or carried "
                                   "over from the graph as it was.")
    gpt.open_example("tiny-transformer")  # the dock stays open
    qtbot.waitUntil(lambda: panel.record is not None and "encoder" in panel.record.maps,
                    timeout=10_000)
    assert panel.record.samples == 1797 and "+" not in panel.text.text()
    assert panel.status.text() == ("Sample 0 of 1797, weights as initialised (not trained "
                                   "yet).")
    gpt.open_example("spiral")
    assert panel.record is None and panel.status.text() == NO_ATTENTION
    gpt.findChild(AttentionOps).dock.close()  # the next test's window starts without it


def test_a_tie_to_a_node_without_a_table_counts_the_weight_as_its_own():
    graph = example_project("tiny-gpt").graph
    untied = sum(param_counts(graph).values())
    graph.nodes["head"]["params"]["tie_weight"] = "block1"  # a slip: not an embedding
    assert sum(param_counts(graph).values()) == untied
    graph.nodes["head"]["params"]["tie_weight"] = "embed"
    assert sum(param_counts(graph).values()) == untied - 12 * 32  # head's [12, 32] weight


def test_opening_a_block_keeps_its_pinned_stage_start(qapp):
    doc = Document(example_project("tiny-gpt"))
    doc.graph.nodes["block2"][START_KEY] = True
    plan = describe(pipeline_plan(doc.graph, 2))
    doc.undo_stack.push(OpenBlock(doc, "block2", lambda *_: None))
    assert pinned_starts(doc.graph) == ["block2_ln1"]
    assert describe(pipeline_plan(doc.graph, 2)) == plan.replace("block2 …", "block2_ln1 …")
    doc.undo_stack.undo()
    assert pinned_starts(doc.graph) == ["block2"]


def test_too_many_stages_are_refused_in_a_sentence_and_come_back_with_the_layout(gpt, qtbot):
    bar = gpt.stages.bar
    ctrl_shift = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(gpt, Qt.Key.Key_P, ctrl_shift)
    balanced = bar.note.text()
    bar.count.lineEdit().selectAll()
    qtbot.keyClicks(bar.count, "8")
    qtbot.keyClick(bar.count, Qt.Key.Key_Return)
    assert bar.note.text() == (
        "The graph cannot be split into 8 pipeline stages: only 5 node boundaries carry a "
        "single tensor (after: embed, block1, block2, norm, head); run 6 processes or fewer.")
    qtbot.keyClick(gpt, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert bar.count.value() == 2 and bar.note.text() == balanced
    layout = gpt.saveState()  # as the window keeps it when it closes
    qtbot.keyClick(gpt, Qt.Key.Key_P, ctrl_shift)  # off
    assert gpt.scene.nodes["block1"].fill is None
    gpt.restoreState(layout)  # the next start: the toolbar and the stages come back
    assert gpt.stages.toggle.isChecked() and bar.isVisible()
    assert gpt.scene.nodes["block1"].stage_label == "stage 1"
    assert gpt.scene.nodes["head"].stage_label == "stage 2"
    qtbot.keyClick(gpt, Qt.Key.Key_P, ctrl_shift)  # off: the next test's window starts bare


def test_deleting_a_selection_of_two_nodes_raises_nothing(window, qtbot):
    """Monkey seed 2026: Open Block into Parts' state was asked about a selected node that
    was already gone from the graph (KeyError in a slot, while Delete removed the two)."""
    window.scene.select_only(["fc3", "loss"])
    qtbot.keyClick(window.view.viewport(), Qt.Key.Key_Delete)
    assert "fc3" not in window.doc.graph and "loss" not in window.doc.graph
    assert not window.actions["actionOpenBlock"].isEnabled()
