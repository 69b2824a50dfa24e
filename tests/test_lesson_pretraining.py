"""The pre-training lesson: a tiny GPT pre-trained on sums by next-token prediction, then
fine-tuned four ways on 200 labelled sums ('is this sum correct?'), run headless by
`layerlab lessons pretraining` at a cheaper parametrisation (4 pre-training epochs of the
lesson's 25, 15 fine-tuning epochs of its 30): the runs start from the pre-trained weights
as planned, pre-trained fine-tuning beats training from scratch, and the printed table
counts the trainable parameters: full = scratch > LoRA > body frozen."""

import contextlib
import io
import json

import pytest
from safetensors.torch import load_file

from layerlab.cli import main
from layerlab.core.lessons import PRETRAIN_LABEL, Variant, lesson_plans, load_lesson
from layerlab.core.runs import list_runs
from layerlab.core.sweep import SweepError

D, T, V, FF, R = 32, 9, 12, 128, 4  # the lesson's tiny GPT: width, tokens, vocabulary, MLP
BLOCK = 2 * 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * FF + FF) + (FF * D + D)
HEAD = D * 2 + 2  # the new two-class head
FULL = V * D + T * D + 2 * BLOCK + 2 * D + HEAD
LORA = 2 * (R * (D + 3 * D) + R * (D + D)) + HEAD  # adapters on both blocks' projections
VARIANTS = ["from scratch", "full fine-tuning", "body frozen", "LoRA"]


@pytest.fixture(scope="module")
def lesson_run(tmp_path_factory):
    """The lesson, headless: its exit code, printed output, and runs by label."""
    folder = tmp_path_factory.mktemp("lesson")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["lessons", "pretraining", "--dir", str(folder), "--pretrain-epochs",
                     "4", "--epochs", "15", "--workers", "1"])
    runs = {r.label: r for r in list_runs(folder / "pretraining.layerlab.json")}
    return code, out.getvalue(), runs


def test_the_lesson_runs_headless_pretraining_first(lesson_run):
    code, _, runs = lesson_run
    assert code == 0
    assert list(runs) == [PRETRAIN_LABEL, *VARIANTS]
    assert all(r.status == "finished" for r in runs.values())
    assert [len(r.metrics) for r in runs.values()] == [4, 15, 15, 15, 15]
    assert runs[PRETRAIN_LABEL].training["dataset"]["options"].get("task") is None  # next token
    assert runs["LoRA"].training["dataset"]["options"]["task"] == "classify"


def test_the_runs_start_from_the_pretrained_weights_as_planned(lesson_run):
    _, _, runs = lesson_run
    weights = {label: load_file(r.folder / "weights.safetensors") for label, r in runs.items()}
    pre = weights[PRETRAIN_LABEL]
    body = [k for k in pre if not k.startswith("head.")]
    assert body and all(pre["head.weight"].shape != w["head.weight"].shape
                        for label, w in weights.items() if label != PRETRAIN_LABEL)
    for key in body:  # frozen from the pre-trained start: bit-identical
        assert (weights["body frozen"][key] == pre[key]).all(), key
        if key.startswith("block"):  # LoRA: the blocks' own weights frozen too
            assert (weights["LoRA"][key] == pre[key]).all(), key
    assert max(float(w.abs().max()) for k, w in weights["LoRA"].items()
               if k.endswith("lora_B")) > 0  # its adapters trained (they start at 0)
    qkv = "block1.attn.qkv.weight"
    assert not (weights["full fine-tuning"][qkv] == pre[qkv]).all()
    assert float((weights["full fine-tuning"][qkv] - pre[qkv]).abs().max()) < 0.2  # nearby
    assert float((weights["from scratch"][qkv] - pre[qkv]).abs().max()) > 0.2  # elsewhere


def test_pretrained_fine_tuning_beats_training_from_scratch(lesson_run):
    _, _, runs = lesson_run
    scratch = runs["from scratch"]
    assert scratch.final_val_accuracy < 0.55  # near chance on 200 labelled sums
    for label in ("full fine-tuning", "LoRA"):
        assert runs[label].final_val_accuracy > scratch.final_val_accuracy + 0.05, label
        assert runs[label].final_val_loss < scratch.final_val_loss - 0.03, label


def test_the_printed_table_compares_them(lesson_run):
    _, out, runs = lesson_run
    lines = out[out.index("\nstart ") + 1:].splitlines()
    assert lines[0].split() == ["start", "trainable", "val", "accuracy", "val", "loss",
                                "seconds", "status"]
    rows = {label: lines[1 + i][len(label):].split() for i, label in enumerate(VARIANTS)}
    assert {label: row[0] for label, row in rows.items()} == {
        "from scratch": f"{FULL:,}", "full fine-tuning": f"{FULL:,}",
        "body frozen": f"{HEAD:,}", "LoRA": f"{LORA:,}"}
    assert FULL > LORA > HEAD
    for label, row in rows.items():
        run = runs[label]
        assert row[1:] == [f"{run.final_val_accuracy:.3f}", f"{run.final_val_loss:.3f}",
                           f"{run.seconds:.1f}", "finished"]


def test_a_variant_that_does_not_fit_the_project_is_refused_by_name():
    lesson = load_lesson("pretraining")
    wrong = lesson.__class__(**{**lesson.__dict__, "variants": (
        Variant("typo", pretrained=True, frozen=("blok*",)),)})
    with pytest.raises(SweepError, match="blok"):
        lesson_plans(wrong, lesson.project())


def test_a_lesson_with_both_sets_and_variants_is_refused(tmp_path, monkeypatch):
    from layerlab.core import lessons as module

    (tmp_path / "both.lesson.json").write_text(json.dumps({
        "title": "t", "look_for": "l", "project": "p.layerlab.json",
        "sets": ["lr=0.1,0.2"], "variants": [{"label": "a"}]}))
    monkeypatch.setattr(module, "_folder", lambda: tmp_path)
    with pytest.raises(ValueError, match="lesson both must have either sets or variants"):
        module.lessons()
