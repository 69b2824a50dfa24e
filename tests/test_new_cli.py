"""`layerlab new` on scikit-learn's own tables, then `layerlab train`: the starter project's
default run against scikit-learn's MLP on standardised features, on the same split.

The full comparison (three seeds, four tables) is benchmarks/bench_own_data.py; here one
seed on the table with the largest validation split (breast cancer, 114 rows, where 2
points are 2.3 rows) and the regression, plus shorter command-line runs of the others."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch

from layerlab.cli import main
from layerlab.core.project import load_project
from layerlab.core.trainer import Trainer


def write_table(tmp_path, name: str):
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    path = tmp_path / f"{name}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*bunch.feature_names, "target"])
        for row, t in zip(bunch.data, bunch.target, strict=True):
            writer.writerow([*(repr(float(v)) for v in row),
                             bunch.target_names[t] if name == "iris" else t])
    return path


def new(tmp_path, name: str, *extra: str):
    table = write_table(tmp_path, name)
    out = tmp_path / f"{name}.layerlab.json"
    assert main(["new", "--data", str(table), "-o", str(out), *extra]) == 0
    return out


def sklearn_score(trainer: Trainer, regress: bool) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_val = trainer.x_train.numpy(), trainer.x_val.numpy()
    y_train, y_val = trainer.y_train.numpy(), trainer.y_val.numpy()
    model = MLPRegressor(max_iter=2000, random_state=0) if regress else \
        MLPClassifier(max_iter=2000, random_state=0)
    pipe = make_pipeline(StandardScaler(), model)  # fitted on the training rows only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(x_train, y_train.ravel() if regress else y_train)
    return float(pipe.score(x_val, y_val.ravel() if regress else y_val))


@pytest.mark.parametrize(("name", "margin"), [("breast_cancer", 0.02), ("diabetes", 0.05)])
def test_the_default_run_meets_scikit_learn(tmp_path, capsys, name, margin):
    project = load_project(new(tmp_path, name))
    torch.manual_seed(0)
    trainer = Trainer(project)
    trainer.run()
    last = trainer.history[-1]
    regress = name == "diabetes"
    ours = last.val_r2 if regress else last.val_accuracy
    theirs = sklearn_score(trainer, regress)
    assert ours is not None and ours >= theirs - margin, (ours, theirs)
    assert (last.val_accuracy is None) == regress and (last.val_r2 is None) != regress


def test_wine_starter_project_and_a_short_command_line_run(tmp_path, capsys):
    path = new(tmp_path, "wine")
    data = json.loads(path.read_text())
    nodes = {n["id"]: n for n in data["graph"]["nodes"]}
    assert nodes["input"]["params"]["shape"] == [13]
    assert nodes["scale"]["type"] == "Standardize"
    assert nodes["out"]["params"]["out_features"] == 3
    assert nodes["loss"]["type"] == "CrossEntropyLoss"
    assert data["training"]["dataset"]["options"]["categories"] == {"target": ["0", "1", "2"]}
    capsys.readouterr()
    assert main(["check", str(path)]) == 0
    assert main(["train", str(path), "--epochs", "12", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "val accuracy" in out
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 12 and rows[-1]["val_r2"] == ""
    assert float(rows[-1]["val_accuracy"]) >= 0.9


def test_iris_text_labels_become_the_class_names(tmp_path, capsys):
    path = new(tmp_path, "iris")
    project = load_project(path)
    project.training["epochs"] = 60
    trainer = Trainer(project)
    trainer.run()
    assert trainer.data.classes == ("setosa", "versicolor", "virginica")
    assert trainer.history[-1].val_accuracy >= 0.9


def test_regression_reports_r2_and_mse(tmp_path, capsys):
    path = new(tmp_path, "diabetes")
    data = json.loads(path.read_text())
    assert data["graph"]["nodes"][-1]["type"] == "MSELoss"
    capsys.readouterr()
    assert main(["train", str(path), "--epochs", "3", "--out", str(tmp_path / "run")]) == 0
    summary = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert rows[-1]["val_accuracy"] == "" and rows[-1]["val_r2"] != ""
    r2 = float(rows[-1]["val_r2"])
    assert f"val R² {r2:.4f}" in summary and "val MSE " in summary


def test_the_task_can_be_forced_and_train_can_point_at_other_data(tmp_path, capsys):
    rows = "".join(f"{i},{i % 3}\n" for i in range(30))
    (tmp_path / "t.csv").write_text("a,level\n" + rows)
    out = tmp_path / "t.layerlab.json"
    assert main(["new", "--data", str(tmp_path / "t.csv"), "--task", "regress", "-o",
                 str(out)]) == 0
    assert json.loads(out.read_text())["graph"]["nodes"][-1]["type"] == "MSELoss"
    assert main(["new", "--data", str(tmp_path / "t.csv"), "-o", str(out)]) == 1
    assert "exists; use --force" in capsys.readouterr().err
    other = np.column_stack([np.arange(30), np.arange(30) * 0.5])
    (tmp_path / "u.csv").write_text("a,b\n" + "".join(f"{a},{b}\n" for a, b in other))
    assert main(["train", str(out), "--data", str(tmp_path / "u.csv"), "--target", "b",
                 "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    snapshot = json.loads((tmp_path / "run" / "project.layerlab.json").read_text())
    assert snapshot["training"]["dataset"]["options"]["path"] == str(tmp_path / "u.csv")
    assert snapshot["training"]["dataset"]["options"]["target"] == "b"
    capsys.readouterr()
    assert main(["train", str(out), "--task", "classify", "--epochs", "1", "--out",
                 str(tmp_path / "run2")]) == 1
    assert capsys.readouterr().err == (
        f"{out}: MSELoss on the 3 classes of dataset csv needs an output of [3] (one-hot) or "
        "[1] (two classes), but out gives [1]\n")


def test_check_lists_every_way_the_graph_and_the_data_disagree(tmp_path, capsys):
    path = new(tmp_path, "iris")
    data = json.loads(path.read_text())
    out = next(n for n in data["graph"]["nodes"] if n["id"] == "out")
    out["params"]["out_features"] = 10  # trains, silently wasting seven outputs
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "note: the data has 3 classes, but out gives 10 outputs",
        "note: Fit graph to data (the window's training panel) makes these changes in one "
        "undoable step"]
    data["graph"]["nodes"][0]["params"]["shape"] = [5]
    path.write_text(json.dumps(data))
    assert main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    assert "note: the data gives samples of shape [4], but Input node input expects [5]" \
        in captured.out
    assert captured.err == (f"{path}: input: dataset csv gives samples of shape [4], but "
                            "Input node input expects [5]\n")
