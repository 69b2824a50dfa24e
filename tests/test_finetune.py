"""Fine-tuning (load by name and shape, freeze the body) and data-parallel training."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import layerlab
from layerlab.cli import main
from layerlab.core.weights import load_weights

from conftest import EXAMPLES


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    assert main(["train", str(EXAMPLES / "digits-mlp.layerlab.json"), "--epochs", "3",
                 "--out", str(out)]) == 0
    return out / "weights.safetensors"


def five_class_project(tmp_path):
    """The digits MLP with a new head for 0–4 only, body frozen, on a CSV of those digits."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    rows = [",".join([f"p{i}" for i in range(64)] + ["label"])]
    for x, y in zip(digits.data, digits.target, strict=True):
        if y < 5:
            rows.append(",".join([f"{v / 16:g}" for v in x] + [str(y)]))
    (tmp_path / "five.csv").write_text("\n".join(rows) + "\n")
    data = json.loads((EXAMPLES / "digits-mlp.layerlab.json").read_text())
    for node in data["graph"]["nodes"]:
        if node["id"] == "fc2":
            node["params"]["out_features"] = 5
        if node["id"] == "fc1":
            node["frozen"] = True
    data["training"]["dataset"] = {"name": "csv", "options": {"path": str(tmp_path /
                                                                          "five.csv")},
                                   "validation_split": 0.2}
    data["training"]["epochs"] = 3
    path = tmp_path / "five.layerlab.json"
    path.write_text(json.dumps(data))
    return path


def test_a_new_head_is_reported_as_skipped(trained_digits, tmp_path):
    project = layerlab.load_project(five_class_project(tmp_path))
    model = layerlab.build_model(project.graph)
    report = load_weights(model, trained_digits)
    assert set(report.loaded) == {"fc1.weight", "fc1.bias"}
    assert dict(report.skipped) == {"fc2.weight": "shape [10, 500] in the file, [5, 500] in "
                                                  "the model",
                                    "fc2.bias": "shape [10] in the file, [5] in the model"}
    assert set(report.missing) == {"fc2.weight", "fc2.bias"}
    torch.testing.assert_close(model.fc1.weight, load_file(trained_digits)["fc1.weight"])


def test_fine_tuning_with_a_frozen_body_changes_only_the_head(trained_digits, tmp_path,
                                                              capsys):
    path = five_class_project(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(path), "--init-weights", str(trained_digits), "--out",
                 str(out)]) == 0
    captured = capsys.readouterr()
    assert "init weights: skipped fc2.weight: shape [10, 500] in the file" in captured.err
    before, after = load_file(trained_digits), load_file(out / "weights.safetensors")
    assert torch.equal(before["fc1.weight"], after["fc1.weight"])
    assert torch.equal(before["fc1.bias"], after["fc1.bias"])
    assert after["fc2.weight"].shape == (5, 500)
    assert "val accuracy" in captured.out


class Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_init_weights_refuses_a_pickle_that_runs_code(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"fc1.weight": Evil()}, evil)
    out = tmp_path / "run"
    code = main(["train", str(EXAMPLES / "digits-mlp.layerlab.json"), "--init-weights",
                 str(evil), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "was refused" in err
    assert not (tmp_path / "PWNED").exists() and not out.exists()


def test_a_pytorch_state_dict_is_read_with_weights_only(trained_digits, tmp_path):
    state = load_file(trained_digits)
    torch.save(state, tmp_path / "w.pt")
    save_file(state, tmp_path / "copy.safetensors")
    model = layerlab.build_model(layerlab.load_project(
        EXAMPLES / "digits-mlp.layerlab.json").graph)
    assert len(load_weights(model, tmp_path / "w.pt").loaded) == 4


TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed")
def test_ddp_on_two_processes_equals_one_process_with_the_global_batch(tmp_path):
    torchrun = str(TORCHRUN)
    project = str(EXAMPLES / "digits-mlp.layerlab.json")
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m",
                             "layerlab", "train", project, "--epochs", "2", "--batch-size",
                             "16", "--device", "cpu", "--out", str(ddp)],
                            capture_output=True, text=True, check=False, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("finished after") == 1  # only rank 0 reports
    assert main(["train", project, "--epochs", "2", "--batch-size", "32", "--device", "cpu",
                 "--out", str(single)]) == 0
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
    a, b = load_file(ddp / "weights.safetensors"), load_file(single / "weights.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    rows_ddp = (ddp / "metrics.csv").read_text().splitlines()
    rows_one = (single / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows_ddp] == [r.split(",")[:2] for r in rows_one]
