"""`layerlab train`: the files it writes, what it refuses, and Ctrl+C."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import layerlab
from layerlab.cli import main

from conftest import EXAMPLES


def test_train_writes_weights_metrics_snapshot_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(EXAMPLES / "digits-mlp.layerlab.json"), "--epochs", "2",
                 "--lr", "0.002", "--seed", "1", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "finished after 2 epoch(s)" in stdout and "val accuracy" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt", "metrics.csv", "project.layerlab.json", "run.json",
        "weights.safetensors"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "step", "train_loss", "val_loss", "val_accuracy",
                             "val_r2", "seconds", "samples_per_s"]
    assert float(rows[1]["val_accuracy"]) > 0.8
    trained = 1797 - round(0.2 * 1797)  # digits, less the validation split
    for row in rows:  # the speed of the epoch's training, evaluation excluded
        assert 0 < float(row["seconds"]) < 30
        assert float(row["samples_per_s"]) == pytest.approx(trained / float(row["seconds"]),
                                                            rel=1e-3)
    weights = load_file(out / "weights.safetensors")
    assert set(weights) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    snapshot = layerlab.load_project(out / "project.layerlab.json")
    assert snapshot.training["epochs"] == 2 and snapshot.training["seed"] == 1
    assert snapshot.training["optimizer"]["lr"] == 0.002
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["position"]["epoch"] == 2
    model = layerlab.build_model(snapshot.graph)
    model.load_state_dict(weights)


def test_resume_continues_to_the_requested_epochs(tmp_path, capsys):
    out = tmp_path / "run"
    project = str(EXAMPLES / "digits-mlp.layerlab.json")
    assert main(["train", project, "--epochs", "1", "--out", str(out)]) == 0
    assert main(["train", project, "--epochs", "3", "--out", str(out), "--resume",
                 str(out / "checkpoint.pt")]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


@pytest.mark.parametrize(("args", "words"), [
    (["--dataset", "spiral"], "dataset spiral gives samples of shape [2], but Input node "
                              "input expects [64]"),
    (["--dataset", "imagenet"], "training.dataset.name: dataset (--dataset) must be one "
                                "of spiral"),
    (["--optimizer", "adamax"], "training.optimizer.name: optimizer (--optimizer) must be "
     "one of sgd, momentum, adagrad, rmsprop, adam, adamw, not 'adamax'"),
    (["--batch-size", "0"], "training.batch_size: batch size (--batch-size) must be a whole "
     "number at least 1"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--lr", "-1"], ""),
])
def test_refused_runs_say_why_and_write_nothing(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    code = main(["train", str(EXAMPLES / "digits-mlp.layerlab.json"), "--out", str(out),
                 *args])
    err = capsys.readouterr().err
    assert code == 1
    assert words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_ctrl_c_stops_at_a_batch_boundary_and_leaves_complete_files(tmp_path):
    out = tmp_path / "run"
    project = tmp_path / "long.layerlab.json"
    data = json.loads((EXAMPLES / "digits-mlp.layerlab.json").read_text())
    data["training"]["epochs"] = 10_000
    project.write_text(json.dumps(data))
    proc = subprocess.Popen([sys.executable, "-m", "layerlab", "train", str(project), "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while not (out / "metrics.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "stopping after this batch" in stderr and "Traceback" not in stderr
    assert stdout.startswith("stopped after")
    weights = load_file(out / "weights.safetensors")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    for key, value in weights.items():
        assert torch.equal(value, state["model"][key])  # both from the same, final step
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temp files left
