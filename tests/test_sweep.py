"""layerlab sweep and core/sweep.py: every combination as its own run folder, each run giving
exactly what `layerlab train` gives with the same settings and seed, summary.csv beside them;
bad --set values refused before anything runs; a stop ends the sweep cleanly."""

import csv
import json

import pytest

from layerlab.cli import main
from layerlab.core import sweep as core_sweep
from layerlab.core.project import load_project
from layerlab.core.runs import list_runs, read_run, runs_folder
from layerlab.core.sweep import SweepError, parse_sets, plan_sweep, run_sweep

from conftest import EXAMPLES

SEED_OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
TIMING = ("seconds", "samples_per_s")


def rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def without_timing(metrics):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in metrics]


def test_a_sweep_of_the_five_seed_optimizers_equals_five_plain_trainings(
        small_spiral, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", str(small_spiral), "--set", "optimizer=" + ",".join(SEED_OPTIMIZERS),
                 "--epochs", "2", "--out", str(out), "--workers", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    assert [line.split("]")[0] for line in printed.splitlines() if line.startswith("[")] == \
        [f"[{i}/5" for i in range(1, 6)]  # a progress line per run
    summary = rows(out / "summary.csv")
    assert list(summary[0]) == ["optimizer", "final_val_loss", "best_val_loss",
                                "final_val_accuracy", "best_val_accuracy", "seconds",
                                "status", "run"]
    assert [r["optimizer"] for r in summary] == list(SEED_OPTIMIZERS)
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(folders) == 5 and sorted(r["run"] for r in summary) == [f.name for f in folders]
    labels = set()
    for row in summary:
        run = read_run(out / row["run"])
        labels.add(run.label)
        assert run.status == row["status"] == "finished" and run.varied == {
            "optimizer": row["optimizer"]}
        assert float(row["final_val_loss"]) == run.final_val_loss == float(
            run.metrics[-1]["val_loss"])
        assert float(row["best_val_loss"]) == min(float(m["val_loss"]) for m in run.metrics)
        snapshot = json.loads((run.folder / "project.layerlab.json").read_text())
        assert snapshot["training"]["optimizer"]["name"] == row["optimizer"]
        plain = tmp_path / f"plain-{row['optimizer']}"
        assert main(["train", str(small_spiral), "--optimizer", row["optimizer"], "--epochs",
                     "2", "--out", str(plain)]) == 0
        # the same run bit for bit: every loss and accuracy as repr writes it
        assert without_timing(rows(plain / "metrics.csv")) == without_timing(run.metrics)
        assert json.loads((plain / "project.layerlab.json").read_text())["training"] == \
            snapshot["training"]
    assert len(labels) == 5  # a distinct label per run
    capsys.readouterr()


def test_a_dropout_sweep_changes_only_that_nodes_p(tmp_path, capsys):
    data = json.loads((EXAMPLES / "digits-mlp.layerlab.json").read_text())
    graph = data["graph"]
    graph["nodes"].insert(3, {"id": "drop", "type": "Dropout", "params": {"p": 0.1}})
    graph["edges"] = [e for e in graph["edges"] if e["source"] != "relu"] + [
        {"source": "relu", "target": "drop"}, {"source": "drop", "target": "fc2"}]
    data["training"]["dataset"]["validation_split"] = 0.9  # 180 samples: a quick epoch
    project = tmp_path / "digits.layerlab.json"
    project.write_text(json.dumps(data))
    assert main(["sweep", str(project), "--set", "drop.p=0,0.5", "--epochs", "1",
                 "--workers", "1"]) == 0
    capsys.readouterr()
    runs = list_runs(project)  # the default place: the project's runs folder
    assert [r.varied for r in runs] == [{"drop.p": "0"}, {"drop.p": "0.5"}]
    base = load_project(project).to_dict()
    for run, p in zip(runs, (0, 0.5), strict=True):
        snapshot = json.loads((run.folder / "project.layerlab.json").read_text())
        nodes = {n["id"]: n for n in snapshot["graph"]["nodes"]}
        assert nodes["drop"]["params"] == {"p": p}
        nodes["drop"]["params"]["p"] = 0.1
        assert snapshot["graph"] == base["graph"]  # nothing else of the graph changed
        assert snapshot["training"] == {**base["training"], "epochs": 1}
    assert (runs_folder(project) / "summary.csv").exists()


@pytest.mark.parametrize(("bad", "message"), [
    ("lr=0.1,-1", "--set lr: learning rate must be a number above 0"),
    ("optimizer=adam,lbfgs", "--set optimizer: optimizer must be one of sgd, momentum"),
    ("fc9.out_features=4", "--set fc9.out_features: no such setting or node"),
    ("fc1.p=0.5", "--set fc1.p: node fc1 (Linear) has no parameter 'p'"),
    ("tanh1.type=Sigmoid,Linear", "--set tanh1.type: 'Linear' is not an activation"),
    ("fc1.type=ReLU", "--set fc1.type: node fc1 is a Linear, not an activation"),
    ("fc1.out_features=0", "--set fc1.out_features: out_features of node fc1 must be at "
                           "least 1"),
    ("lr", "--set 'lr' must read KEY=V1,V2,…"),
])
def test_a_bad_set_is_refused_naming_the_key_before_any_run(small_spiral, capsys, bad,
                                                            message):
    code = main(["sweep", str(small_spiral), "--set", "epochs=1", "--set", bad])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"{small_spiral}: {message}")
    assert not runs_folder(small_spiral).exists()  # nothing was written


def test_every_combination_is_planned_first_axis_slowest(small_spiral):
    project = load_project(small_spiral)
    plans = plan_sweep(project, parse_sets(["optimizer=sgd,Adam", "batch_size=16,64"],
                                           project))
    assert [p.label for p in plans] == ["sgd batch=16", "sgd batch=64", "adam batch=16",
                                        "adam batch=64"]
    assert [p.varied for p in plans][1] == {"optimizer": "sgd", "batch_size": "64"}
    # another optimizer drops the old one's arguments, as `layerlab train --optimizer` does
    assert plans[0].project.training["optimizer"] == {"name": "sgd", "lr": 0.01}
    with pytest.raises(SweepError, match="--set lr is given twice"):
        parse_sets(["lr=0.1", "lr=0.2"], project)


def test_node_patterns_set_every_matching_node(small_spiral):
    project = load_project(small_spiral)
    (plan,) = plan_sweep(project, parse_sets(["tanh*.type=ReLU", "fc*.init=normal"], project))
    types = {n: d["type"] for n, d in plan.project.graph.nodes(data=True)}
    assert types["tanh1"] == types["tanh2"] == "ReLU"
    assert all(plan.project.graph.nodes[f"fc{i}"]["params"]["init"] == "normal"
               for i in (1, 2, 3))
    assert plan.label == "tanh*.type=ReLU fc*.init=normal"
    assert project.graph.nodes["tanh1"]["type"] == "Tanh"  # the original is untouched


class StopAfter:
    """A stop flag that turns on after `n` looks (a Ctrl+C in the middle of a run)."""

    def __init__(self, n):
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n < 0


def test_a_stop_ends_the_running_run_at_a_batch_and_starts_no_other(
        small_spiral, tmp_path, monkeypatch):
    monkeypatch.setattr(core_sweep, "STOP_CHECK_S", 0.0)
    project = load_project(small_spiral)
    plans = plan_sweep(project, parse_sets(["lr=0.1,0.01"], project), {"epochs": 3})
    done = []
    runs = run_sweep(plans, tmp_path / "out", 1, lambda *a: done.append(a), StopAfter(8))
    assert len(runs) == len(done) == 1 and runs[0].status == "stopped"
    assert 0 < len(runs[0].metrics) < 3  # stopped within its 3 epochs
    assert (runs[0].folder / "weights.safetensors").exists()
    assert [r["lr"] for r in rows(tmp_path / "out" / "summary.csv")] == ["0.1"]


def test_worker_processes_give_the_same_runs_as_one_process(small_spiral, tmp_path):
    project = load_project(small_spiral)
    plans = plan_sweep(project, parse_sets(["optimizer=sgd,adam"], project), {"epochs": 1})
    alone = run_sweep(plans, tmp_path / "one", 1)
    done = []
    parallel = run_sweep(plans, tmp_path / "two", 2, lambda *a: done.append(a[:2]))
    assert sorted(done) == [(1, 2), (2, 2)]
    assert [r.label for r in parallel] == ["sgd", "adam"]
    for a, b in zip(alone, parallel, strict=True):
        assert b.status == "finished" and b.folder.parent == tmp_path / "two"
        assert without_timing(a.metrics) == without_timing(b.metrics)
    assert [r["optimizer"] for r in rows(tmp_path / "two" / "summary.csv")] == ["sgd", "adam"]


def test_a_run_that_cannot_start_is_kept_as_failed_with_its_sentence(tmp_path, capsys):
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    data["training"]["dataset"] = {"name": "csv", "options": {"path": "gone.csv",
                                                              "target": "y"}}
    project = tmp_path / "table.layerlab.json"
    project.write_text(json.dumps(data))
    assert main(["sweep", str(project), "--set", "lr=0.1"]) == 1
    out = capsys.readouterr().out
    (run,) = list_runs(project)
    assert run.status == "failed" and run.message.startswith("cannot read ")
    assert run.message.endswith("gone.csv: No such file or directory")
    assert f"[1/1] lr=0.1: failed in 0.0 s; {run.message}" in out
    (row,) = rows(runs_folder(project) / "summary.csv")
    assert row["status"] == "failed" and row["final_val_loss"] == ""


def test_out_with_files_layerlab_did_not_write_is_refused_without_force(small_spiral, tmp_path,
                                                                         capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hi")
    argv = ["sweep", str(small_spiral), "--set", "lr=0.1", "--epochs", "1", "--out",
            str(foreign)]
    assert main(argv) == 1
    assert "holds files LayerLab did not write (notes.txt); use --force" in \
        capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert main([*argv, "--force"]) == 0
    assert main([*argv[:-2], "--out", str(foreign / "sweeps")]) == 0  # a new folder: ours
    assert main([*argv[:-2], "--out", str(foreign / "sweeps")]) == 0  # runs and a summary
