"""The lessons: each is shipped, plans its sweep, runs headless and shows what it claims.

Where the lesson's own runs would take too long for the suite, a cheaper parametrisation of
the same claim is tested (fewer epochs, a larger learning rate, a subset of the runs); each
test says which."""

import fnmatch
import json
import math
import re

import pytest

from layerlab.cli import main
from layerlab.core.compiler import checked
from layerlab.core.diagnostics import trace_grad_norms
from layerlab.core.lessons import lesson_plans, lessons, load_lesson, write_lesson_project
from layerlab.core.runs import list_runs
from layerlab.core.settings import settings_from
from layerlab.core.sweep import apply_values, train_plan
from layerlab.core.trainer import Trainer

from conftest import ROOT

NAMES = ["optimizers", "overfitting", "sigmoid-relu", "init", "batch-lr", "pretraining"]


def test_every_lesson_is_shipped_and_plans_its_sweep():
    assert [lesson.name for lesson in lessons()] == NAMES
    line = re.search(r'^"layerlab.assets" = \[(.*)\]$', (ROOT / "pyproject.toml").read_text(),
                     re.MULTILINE)
    assert line is not None
    shipped = json.loads(f"[{line.group(1)}]")
    for path in (ROOT / "assets" / "lessons").iterdir():
        assert any(fnmatch.fnmatch(f"lessons/{path.name}", p) for p in shipped), path.name
    for lesson in lessons():
        assert len(re.findall(r"[.!?](\s|$)", lesson.look_for)) == 2, lesson.name
        project = lesson.project()
        checked(project.graph)
        plans = lesson_plans(lesson, project)  # a pre-training run comes before these
        runs = lesson.runs - (lesson.pretrain is not None)
        assert len(plans) == runs and len({p.label for p in plans}) == runs
        assert all(p.project.training["epochs"] == lesson.epochs for p in plans)
    with pytest.raises(KeyError, match="choose one of optimizers"):
        load_lesson("nope")


def final_val_loss(plan, tmp_path, **values):
    """Train `plan` (with `values` applied) as the lesson would; its last val loss."""
    project = apply_values(plan.project, values) if values else plan.project
    run = train_plan(project, plan.label, plan.varied, tmp_path)
    assert run.status == "finished", run.message
    return run.final_val_loss, run


def plans_of(name, epochs):
    lesson = load_lesson(name)
    return {p.label: p for p in lesson_plans(lesson, lesson.project(), epochs)}


def test_optimizers_adaptive_steps_leave_the_plateau_sgd_does_not(tmp_path):
    """Cheaper: SGD and Adam only, 20 epochs of the lesson's 60."""
    plans = plans_of("optimizers", 20)
    sgd, _ = final_val_loss(plans["sgd"], tmp_path)
    adam, _ = final_val_loss(plans["adam"], tmp_path)
    assert sgd > 0.64  # still on the plateau near 0.66
    assert adam < sgd - 0.1


def test_overfitting_l2_ends_with_a_lower_validation_loss(tmp_path):
    """Cheaper: no Dropout, 40 epochs at a learning rate of 0.05 (the lesson: 100 at 0.02),
    which over-fits sooner; the plain run's validation loss has turned up by the end."""
    plans = plans_of("overfitting", 40)
    plain, run = final_val_loss(plans["l2=0 drop*.p=0"], tmp_path, lr=0.05)
    with_l2, _ = final_val_loss(plans["l2=0.001 drop*.p=0"], tmp_path, lr=0.05)
    assert with_l2 < plain - 0.03
    assert plain > run.best_val_loss + 0.02  # the curve turned up: over-fitting


def test_sigmoid_starves_the_first_layer_of_gradient(tmp_path):
    """One traced step of each: the gradient reaching fc1 through ten Sigmoids is far
    smaller than through ten ReLUs (the lesson's Health view shows the same numbers)."""
    norms = {}
    for label, plan in plans_of("sigmoid-relu", 1).items():
        trainer = Trainer(plan.project, settings_from(plan.project.training))
        norms[label] = trace_grad_norms(trainer.trace_next_batch())
    sigmoid, relu = norms["act*.type=Sigmoid"], norms["act*.type=ReLU"]
    assert sigmoid["fc1"] < 1e-3 * relu["fc1"]
    assert sigmoid["out"] > 0.1 * relu["out"]  # at the top they are alike: it is the depth


def test_init_kaiming_learns_plain_normal_stays_at_chance(tmp_path):
    """Cheaper: 8 epochs of the lesson's 30."""
    plans = plans_of("init", 8)
    losses = {label.split("=")[1]: final_val_loss(plan, tmp_path)[0]
              for label, plan in plans.items()}
    assert losses["normal"] == pytest.approx(math.log(2), abs=0.005)  # a coin toss
    assert losses["kaiming_normal"] < losses["xavier_normal"] - 0.05
    assert losses["kaiming_normal"] < 0.6


def test_batch_size_needs_a_learning_rate_to_match(tmp_path):
    """Cheaper: 10 epochs of the lesson's 20, three of its four runs."""
    plans = plans_of("batch-lr", 10)
    small, _ = final_val_loss(plans["batch=16 lr=0.01"], tmp_path)
    big_same_lr, _ = final_val_loss(plans["batch=256 lr=0.01"], tmp_path)
    big_scaled, _ = final_val_loss(plans["batch=256 lr=0.16"], tmp_path)
    assert big_same_lr > 2.0 and small < 1.5  # same rate: the big batch hardly moved
    assert big_scaled == pytest.approx(small, rel=0.25)  # scaled: it follows batch 16


def test_layerlab_lessons_lists_and_runs_one_beside_its_project(tmp_path, capsys):
    assert main(["lessons"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed[1:]] == NAMES
    assert main(["lessons", "sigmoid-relu", "--dir", str(tmp_path), "--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    assert main(["lessons", "sigmoid-relu", "--dir", str(tmp_path), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert load_lesson("sigmoid-relu").look_for in out
    project = tmp_path / "sigmoid-relu.layerlab.json"
    assert project.read_text() == load_lesson("sigmoid-relu").project_text()
    assert [r.label for r in list_runs(project)] == ["act*.type=Sigmoid", "act*.type=ReLU"]
    assert (tmp_path / "sigmoid-relu.runs" / "summary.csv").exists()
    other = tmp_path / "init.layerlab.json"
    other.write_text(json.dumps({"mine": True}))
    assert main(["lessons", "init", "--dir", str(tmp_path)]) == 1
    assert "is not the lesson's project; use --force" in capsys.readouterr().err
    assert json.loads(other.read_text()) == {"mine": True}
    assert write_lesson_project(load_lesson("init"), tmp_path) == other
