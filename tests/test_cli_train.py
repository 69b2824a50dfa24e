"""`layerlab train --out DIR` does not replace another project's run (or files it did not
write) without --force; names of choices are accepted in any case."""

import hashlib
import json

import pytest
import torch

import layerlab
from layerlab.cli import main

from conftest import EXAMPLES

SPIRAL = str(EXAMPLES / "spiral.layerlab.json")
DIGITS = str(EXAMPLES / "digits-mlp.layerlab.json")


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def train(capsys, *args):
    code = main(["train", *map(str, args), "--epochs", "1"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spiral_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(capsys, SPIRAL, "--out", run)[0] == 0
    return run


def test_another_projects_run_is_kept_unless_forced(tmp_path, capsys, spiral_run):
    before = digests(spiral_run)
    code, _, err = train(capsys, DIGITS, "--out", spiral_run)
    assert code == 1
    assert err.strip() == (f"{spiral_run} holds a run of another project ('Spiral (Tanh MLP)',"
                           " not 'Digits MLP'); use --force to replace it, or choose another "
                           "--out")
    assert digests(spiral_run) == before
    code, _, _ = train(capsys, DIGITS, "--out", spiral_run, "--force")
    assert code == 0
    assert layerlab.load_project(spiral_run / "project.layerlab.json").name == "Digits MLP"


def test_the_same_project_edited_replaces_its_own_run(tmp_path, capsys, spiral_run):
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    data["training"]["optimizer"]["lr"] = 0.05
    next(n for n in data["graph"]["nodes"] if n["id"] == "fc1")["params"]["out_features"] = 8
    edited = tmp_path / "edited.layerlab.json"
    edited.write_text(json.dumps(data))
    code, _, err = train(capsys, edited, "--out", spiral_run)
    assert code == 0, err
    snapshot = layerlab.load_project(spiral_run / "project.layerlab.json")
    assert snapshot.training["optimizer"]["lr"] == 0.05


def test_files_layerlab_did_not_write_need_force(tmp_path, capsys, spiral_run):
    (spiral_run / "notes.txt").write_text("mine")
    (spiral_run / ".metrics.csv.abc123.tmp.csv").write_text("")  # an interrupted write
    code, _, err = train(capsys, SPIRAL, "--out", spiral_run)
    assert code == 1 and err.strip() == (
        f"{spiral_run} holds files LayerLab did not write (notes.txt); use --force to write "
        "the run there anyway, or choose another --out")
    code, _, _ = train(capsys, SPIRAL, "--out", spiral_run, "--force")
    assert code == 0 and (spiral_run / "notes.txt").read_text() == "mine"
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "project.layerlab.json").write_text('{"hello": 1}')
    code, _, err = train(capsys, SPIRAL, "--out", folder)
    assert code == 1 and err.strip().startswith(
        f"{folder / 'project.layerlab.json'} is not a run's project snapshot")


def test_a_refused_run_into_a_new_folder_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    code, _, _ = train(capsys, DIGITS, "--out", out, "--dataset", "spiral")
    assert code == 1 and not (tmp_path / "new").exists()


@pytest.mark.parametrize(("optimizer", "device", "dataset"), [
    ("Adam", "CPU", "Digits"), ("ADAM", "Cpu", "DIGITS"), ("adamw", "cpu", "digits")])
def test_choice_names_in_any_case(tmp_path, capsys, optimizer, device, dataset):
    out = tmp_path / "run"
    code, _, err = train(capsys, DIGITS, "--optimizer", optimizer, "--device", device,
                         "--dataset", dataset, "--out", out)
    assert code == 0, err
    snapshot = layerlab.load_project(out / "project.layerlab.json")
    assert snapshot.training["optimizer"]["name"] == optimizer.lower()
    assert snapshot.training["device"] == "cpu"
    assert snapshot.training["dataset"]["name"] == "digits"
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert "betas" in state["optimizer"]["param_groups"][0]  # Adam or AdamW, not SGD
    code = main(["export", DIGITS, "--weights", str(out / "weights.safetensors"), "--to",
                 "SafeTensors", "-o", str(tmp_path / "w.safetensors")])
    assert code == 0 and (tmp_path / "w.safetensors").exists()


def test_export_format_in_any_case_and_still_checked(tmp_path, capsys, spiral_run):
    code = main(["export", SPIRAL, "--weights", str(spiral_run / "weights.safetensors"),
                 "--to", "ONNX", "-o", str(tmp_path / "m.onnx")])
    out = capsys.readouterr().out
    assert code == 0 and "onnxruntime matches torch within" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["export", SPIRAL, "--weights", str(spiral_run / "weights.safetensors"),
              "--to", "tflite", "-o", str(tmp_path / "m.tflite")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


@pytest.mark.parametrize(("every_s", "saves"), [(0.0, 4), (3600.0, 1)])
def test_the_run_folder_is_saved_at_epoch_ends_at_most_every_few_seconds(
        tmp_path, capsys, monkeypatch, every_s, saves):
    from layerlab.core import runs

    written = []
    real = runs.RunWriter.save
    monkeypatch.setattr(runs, "SAVE_EVERY_S", every_s)
    monkeypatch.setattr(runs.RunWriter, "save", lambda self, trainer: (
        written.append(trainer.epoch), real(self, trainer)))
    code = main(["train", SPIRAL, "--out", str(tmp_path / "run"), "--epochs", "3"])
    capsys.readouterr()
    # at each of the 3 epochs' ends, then once more when the run ends; or only at its end
    assert code == 0 and written == ([1, 2, 3, 3] if saves == 4 else [3])
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3"]
