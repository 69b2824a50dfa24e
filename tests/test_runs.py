"""core/runs.py: run folders beside the project, run.json, labels, reading runs back."""

import json
import os
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from layerlab.cli import main
from layerlab.core.runs import (
    RunError,
    RunInfo,
    delete_run,
    list_runs,
    new_run_folder,
    read_run,
    rename_run,
    run_label,
    runs_folder,
    slug,
)


def test_runs_folder_sits_beside_the_project(tmp_path):
    assert runs_folder(tmp_path / "spiral.layerlab.json") == tmp_path / "spiral.runs"
    assert runs_folder(tmp_path / "net.json") == tmp_path / "net.runs"


def test_a_new_run_folder_is_claimed_with_a_suffix_when_taken(tmp_path):
    when = datetime(2026, 1, 2, 3, 4, 5)
    first = new_run_folder(tmp_path, "adam lr=0.01", when)
    second = new_run_folder(tmp_path, "adam lr=0.01", when)
    assert first.name == "20260102-030405-adam-lr=0.01"
    assert second.name == "20260102-030405-adam-lr=0.01-2"
    assert slug("../../etc passwd") == "etc-passwd" and slug("***") == "run"


def test_run_label_says_what_differs():
    base = {"optimizer": {"name": "adam", "lr": 0.001}, "batch_size": 32, "epochs": 10,
            "l2": 0.0, "seed": 0, "dataset": {"name": "spiral"}}
    assert run_label(base, base) == "adam lr=0.001"
    sgd = {**base, "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 64}
    assert run_label(sgd, base) == "sgd lr=0.1 batch=64"
    assert run_label({**base, "optimizer": {"name": "sgd", "lr": 0.001}}, base) == \
        "sgd lr=0.001"  # another optimizer brings its learning rate along
    assert run_label({**base, "l2": 0.01, "seed": 3}, base) == "l2=0.01 seed=3"


@pytest.fixture
def project(small_spiral):
    return small_spiral


def test_train_without_out_writes_a_new_run_folder_that_reads_back(project, capsys):
    assert main(["train", str(project), "--epochs", "2"]) == 0
    assert main(["train", str(project), "--epochs", "1", "--lr", "0.05"]) == 0
    capsys.readouterr()
    runs = list_runs(project)
    assert [r.label for r in runs] == ["epochs=2", "lr=0.05 epochs=1"]
    first, second = runs
    assert first.folder.parent == project.parent / "spiral.runs"
    assert sorted(p.name for p in first.folder.iterdir()) == [
        "checkpoint.pt", "metrics.csv", "project.layerlab.json", "run.json",
        "weights.safetensors"]
    assert first.status == "finished" and first.message == ""
    assert first.varied == {"epochs": "2"} and second.varied == {"lr": "0.05", "epochs": "1"}
    assert second.training["optimizer"]["lr"] == 0.05
    assert [row["epoch"] for row in first.metrics] == ["1", "2"]
    losses = [float(row["val_loss"]) for row in first.metrics]
    assert first.final_val_loss == losses[-1] and first.best_val_loss == min(losses)
    accuracy = [float(row["val_accuracy"]) for row in first.metrics]
    assert first.best_val_accuracy == max(accuracy)
    assert first.seconds == pytest.approx(sum(float(r["seconds"]) for r in first.metrics),
                                          abs=0.01)
    assert first.started <= second.started


def test_rename_and_delete_act_on_runs_only(project, tmp_path, capsys):
    assert main(["train", str(project), "--epochs", "1"]) == 0
    capsys.readouterr()
    (run,) = list_runs(project)
    rename_run(run.folder, "my baseline")
    assert read_run(run.folder).label == "my baseline"
    stranger = runs_folder(project) / "notes"
    stranger.mkdir()
    assert [r.folder for r in list_runs(project)] == [run.folder]  # not a run: skipped
    with pytest.raises(RunError, match="is not a run"):
        delete_run(stranger)
    assert stranger.exists()
    delete_run(run.folder)
    assert not run.folder.exists() and list_runs(project) == []


def test_a_run_whose_writer_is_gone_reads_as_stopped(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    folder = tmp_path / "run"
    folder.mkdir()
    state = {"label": "x", "status": "running", "started": "2026-01-01T00:00:00+00:00",
             "seconds": 1.5, "varied": {}, "message": ""}
    for pid, expected in ((int(gone.stdout), "stopped"), (os.getpid(), "running")):
        (folder / "run.json").write_text(json.dumps({**state, "pid": pid,
                                                     "host": socket.gethostname()}))
        assert read_run(folder).status == expected
    assert read_run(folder).metrics == [] and read_run(folder).best_val_loss is None


def test_a_rename_while_running_stays_and_a_new_run_in_the_folder_has_its_own_label(
        project, tmp_path, capsys):
    from layerlab.core.project import Project
    from layerlab.core.runs import RunWriter

    writer = RunWriter(tmp_path / "live", Project(), label="adam lr=0.01")
    writer.set_status("running")
    rename_run(writer.folder, "baseline")
    writer.set_status("paused")  # the writer writes run.json again
    assert read_run(writer.folder).label == "baseline"
    out = tmp_path / "out"
    for lr in ("0.1", "0.2"):  # the same --out twice: each run is labelled by its own lr
        assert main(["train", str(project), "--epochs", "1", "--lr", lr, "--out",
                     str(out)]) == 0
        assert read_run(out).label == f"lr={lr} epochs=1"
    capsys.readouterr()


def test_best_and_final_figures_skip_what_is_not_a_number():
    """The table's figures from metrics.csv rows: best is the lowest loss and the highest
    accuracy, final the last finite one (a row without a validation set is skipped)."""
    rows = [{"val_loss": "0.9", "val_accuracy": "0.6"}, {"val_loss": "0.4", "val_accuracy": "0.8"},
            {"val_loss": "0.5", "val_accuracy": "0.7"}, {"val_loss": "", "val_accuracy": "nan"}]
    run = RunInfo(Path("/runs/1"), "run 1", "finished", "", 1.0, metrics=rows)
    assert (run.best_val_loss, run.final_val_loss) == (0.4, 0.5)
    assert (run.best_val_accuracy, run.final_val_accuracy) == (0.8, 0.7)


def _run_folder(parent: Path, name: str, status: str = "finished", pid: int | None = None,
                val_loss: str = "0.5") -> Path:
    folder = parent / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({
        "label": name, "status": status, "started": f"2026-01-01T00:00:0{name[-1]}+00:00",
        "seconds": 1.0, "varied": {}, "message": "", "pid": pid or os.getpid(),
        "host": socket.gethostname()}))
    (folder / "metrics.csv").write_text(f"epoch,step,train_loss,val_loss\n1,10,0.7,{val_loss}\n")
    return folder


def _settle(folder: Path, seconds_ago: float = 60.0) -> None:
    """Files last changed a while ago (as a finished run's are when the next one begins)."""
    then = datetime.now().timestamp() - seconds_ago
    for file in folder.iterdir():
        os.utime(file, (then, then))


def test_listing_again_reads_only_the_runs_whose_files_changed(tmp_path):
    """The window lists the runs at each run's start and end: settled, unchanged runs are
    not read again, and every change made as a run's files are written shows."""
    project = tmp_path / "net.layerlab.json"
    parent = runs_folder(project)
    for name in ("run1", "run2", "run3"):
        _settle(_run_folder(parent, name))
    first = list_runs(project)
    again = list_runs(project)
    assert [a is b for a, b in zip(first, again, strict=True)] == [True, True, True]
    rename_run(parent / "run1", "baseline")  # run.json replaced: read anew at once
    _run_folder(parent, "run2", val_loss="0.25")  # metrics grew (a continued run)
    (parent / "run3" / "metrics.csv").unlink()
    _run_folder(parent, "run4")  # a new run, its files written just now
    runs = {run.folder.name: run for run in list_runs(project)}
    assert runs["run1"].label == "baseline"
    assert runs["run2"].best_val_loss == 0.25
    assert runs["run3"].metrics == [] and runs["run4"].label == "run4"
    delete_run(parent / "run4")
    assert [run.folder.name for run in list_runs(project)] == ["run1", "run2", "run3"]


def test_a_run_changed_within_one_tick_of_the_file_clock_is_read_again(tmp_path):
    """Two writes of a file within one tick of the file clock can leave the same time and
    size: a run whose files changed only just now is read at every listing until they
    settle."""
    project = tmp_path / "net.layerlab.json"
    folder = _run_folder(runs_folder(project), "run1", val_loss="0.5")
    metrics = folder / "metrics.csv"
    stamp = metrics.stat().st_mtime_ns + 30 * 10**9  # "just now" however slowly this runs
    os.utime(metrics, ns=(stamp, stamp))
    assert list_runs(project)[0].best_val_loss == 0.5
    metrics.write_text(metrics.read_text().replace("0.5", "0.4"))  # same size, same place
    os.utime(metrics, ns=(stamp, stamp))  # ...and the same tick
    assert list_runs(project)[0].best_val_loss == 0.4


def test_a_listed_running_run_whose_process_ends_lists_as_stopped(tmp_path):
    """A running run's files say nothing when its process is killed: each listing asks
    whether the writer still runs, however settled its files."""
    project = tmp_path / "net.layerlab.json"
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _settle(_run_folder(runs_folder(project), "run1", "running", pid=writer.pid))
        assert list_runs(project)[0].status == "running"
    finally:
        writer.kill()
        writer.wait()
    assert list_runs(project)[0].status == "stopped"
