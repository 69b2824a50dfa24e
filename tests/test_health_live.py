"""Gradient-health verdicts while a run trains: on the canvas, in the node's tooltip and the
status bar of the window, and as one warning line from `layerlab train` — the right node on
a broken network, nothing on a healthy bundled example with its own settings.

The broken network is a 10-layer Sigmoid MLP: each Sigmoid passes back at most a quarter of
its gradient, so its first layers get ~1e-8 of the last layer's. Health records come every
few steps here (HEALTH_EVERY patched) so that a verdict stands within a second."""

from __future__ import annotations

import re

import pytest

import layerlab.core.health_watch
from layerlab.cli import main
from layerlab.core.health_watch import VerdictRecord
from layerlab.core.project import Project
from layerlab.core.trainer import StepRecord

from conftest import EXAMPLES
from helpers import chain_graph

SIGMOIDS = 10
LAST = f"n{2 * SIGMOIDS}"  # the Linear layer nearest the loss


def deep_sigmoid(epochs: int) -> Project:
    layers = [layer for _ in range(SIGMOIDS)
              for layer in (("Linear", {"out_features": 16}), ("Sigmoid", {}))]
    g = chain_graph([2], *layers, ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    project = Project(graph=g)
    project.training.update({"dataset": {"name": "spiral", "options": {"n_samples": 128},
                                         "validation_split": 0.0},
                             "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 8,
                             "epochs": epochs, "device": "cpu", "seed": 0})
    return project


def warnings(err: str) -> list[str]:
    return re.findall(r"^warning: (.*)$", err.replace("\r", "\n"), flags=re.MULTILINE)


def vanishing_nodes(lines: list[str]) -> list[str]:
    return [line.split(":")[0] for line in lines if line.endswith("— vanishing")]


# -- layerlab train --------------------------------------------------------------------------
def test_train_warns_once_per_verdict_when_it_first_stands(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(layerlab.core.health_watch, "HEALTH_EVERY", 4)
    project = tmp_path / "deep.layerlab.json"
    project.write_text(deep_sigmoid(epochs=1).to_json())  # 16 steps: 4 health records
    assert main(["train", str(project), "--out", str(tmp_path / "run")]) == 0
    lines = warnings(capsys.readouterr().err)
    vanishing = vanishing_nodes(lines)
    # the first layers, in order, each once; never the layer nearest the loss
    assert vanishing[0] == "n0" and vanishing == [f"n{2 * i}" for i in range(len(vanishing))]
    assert LAST not in vanishing and len(lines) == len(set(lines))
    assert re.fullmatch(r"n0: gradient norm \S+, \S+× smaller than n20's — vanishing", lines[0])
    # two records in a row are not enough: a verdict must hold over three
    monkeypatch.setattr(layerlab.core.health_watch, "HEALTH_EVERY", 6)  # 2 records
    assert main(["train", str(project), "--out", str(tmp_path / "run")]) == 0
    assert warnings(capsys.readouterr().err) == []


def test_train_does_not_warn_on_the_spiral_example_over_200_health_records(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(layerlab.core.health_watch, "HEALTH_EVERY", 1)
    spiral = str(EXAMPLES / "spiral.layerlab.json")  # 25 steps an epoch
    assert main(["train", spiral, "--epochs", "8", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "200/200" in err and warnings(err) == []


# -- the window ------------------------------------------------------------------------------
@pytest.fixture
def window(window):
    """The window, with every record the torch thread sent kept in window.records."""
    records: list[object] = []
    window.training.controller.worker.records.connect(records.extend)
    window.records = records
    return window


def run_until(window, qtbot, done) -> None:
    window.actions["actionTrain"].trigger()
    qtbot.waitUntil(done, timeout=20_000)
    window.actions["actionStop"].trigger()
    qtbot.waitUntil(lambda: window.training.controller.state == "idle", timeout=20_000)


def test_a_verdict_shows_on_its_node_and_in_the_status_bar_until_the_graph_is_edited(
        window, qtbot, monkeypatch):
    monkeypatch.setattr(layerlab.core.health_watch, "HEALTH_EVERY", 4)
    window.set_project(deep_sigmoid(epochs=50))
    label, nodes = window.health.label, window.scene.nodes
    run_until(window, qtbot, lambda: label.isVisible())
    sent = [v for r in window.records if isinstance(r, VerdictRecord) for v in r.verdicts]
    assert sent[0].node == "n0" and sent[0].kind == "vanishing"
    newest = [v for v in sent if (v.node, v.kind) == ("n0", "vanishing")][-1]
    assert label.text().startswith(f"⚠ {newest.message}")
    # the badge step-through draws, on the node; the sentence in its tooltip
    assert "vanishing" in nodes["n0"].verdict.split(", ")
    assert f"training: {newest.message}" in nodes["n0"].toolTip().splitlines()
    # vanishing is judged against the layer nearest the loss, never on it (its large updates
    # under SGD 0.1 may be flagged as the run goes on: records arrive in 200 ms batches)
    assert "vanishing" not in nodes[LAST].verdict.split(", ")
    assert not any(line.startswith("training:") and "vanishing" in line
                   for line in nodes[LAST].toolTip().splitlines())
    # kept after the run and after a look at a step in step-through (which draws its own);
    # gone once the graph is edited (here: a layer deleted)
    window.actions["actionStepThrough"].trigger()
    qtbot.waitUntil(lambda: window.stepper.active, timeout=10_000)
    window.actions["actionStepThrough"].trigger()
    assert "vanishing" in nodes["n0"].verdict.split(", ") and label.isVisible()
    window.view.setFocus()
    nodes[LAST].setSelected(True)
    window.actions["actionDelete"].trigger()
    assert not label.isVisible() and nodes["n0"].verdict == ""
    assert "training:" not in nodes["n0"].toolTip()


def test_a_new_run_clears_the_verdicts_of_the_last(window, qtbot, monkeypatch):
    monkeypatch.setattr(layerlab.core.health_watch, "HEALTH_EVERY", 4)
    window.set_project(deep_sigmoid(epochs=50))
    run_until(window, qtbot, lambda: window.health.label.isVisible())
    window.actions["actionReset"].trigger()
    window.actions["actionTrain"].trigger()
    assert not window.health.label.isVisible() and window.scene.nodes["n0"].verdict == ""
    qtbot.waitUntil(lambda: window.health.label.isVisible(), timeout=20_000)  # and anew


def test_the_spiral_example_shows_no_verdict_over_200_health_records(window, qtbot,
                                                                     monkeypatch):
    monkeypatch.setattr(layerlab.core.health_watch, "HEALTH_EVERY", 1)
    assert window.doc.project.name == "Spiral (Tanh MLP)"  # with its own settings

    def steps() -> int:
        return sum(isinstance(r, StepRecord) for r in window.records)

    run_until(window, qtbot, lambda: steps() >= 210)
    assert window.training.controller.worker.trainer.health_every == 1
    assert not any(isinstance(r, VerdictRecord) for r in window.records)
    assert not window.health.label.isVisible()
    assert all(item.verdict == "" for item in window.scene.nodes.values())
