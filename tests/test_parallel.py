"""`layerlab train --parallel fsdp|pipeline`: stages cut and balanced from the graph, and runs
under torchrun on CPU (gloo) that equal one process training on the whole batch."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import layerlab
from layerlab.cli import main
from layerlab.core.parallel import ParallelTrainer, micro_batches, refusal
from layerlab.core.settings import settings_from
from layerlab.core.stages import cut_points, plan_stages, stage_modules
from layerlab.core.trainer import TrainingError

from conftest import EXAMPLES

TORCHRUN = Path(sys.executable).parent / "torchrun"


def residual_spiral(tmp_path: Path, name: str = "res", **training) -> Path:
    """The spiral MLP with a skip connection (tanh1 → Add after tanh2), its head fc3 frozen,
    L2 and gradient clipping (a stage of each pipeline holds gradients to clip), a pipeline
    stage pinned to start at fc2."""
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    graph = data["graph"]
    graph["nodes"].insert(4, {"id": "skip", "type": "Add", "params": {}, "pos": [0, 0]})
    graph["edges"] = [e for e in graph["edges"] if (e["source"], e["target"]) != ("tanh2",
                                                                                  "fc3")]
    graph["edges"] += [{"source": "tanh2", "target": "skip", "port": 0},
                       {"source": "tanh1", "target": "skip", "port": 1},
                       {"source": "skip", "target": "fc3"}]
    for node in graph["nodes"]:
        if node["id"] == "fc3":
            node["frozen"] = True
        if node["id"] == "fc2":
            node["stage_start"] = True  # pinned: the balance by parameters would cut after fc1
    data["training"].update({"dataset": {"name": "spiral", "options": {"n_samples": 300},
                                         "validation_split": 0.2},
                             "epochs": 2, "l2": 0.001, "clip_grad_norm": 0.1, **training})
    path = tmp_path / f"{name}.layerlab.json"
    path.write_text(json.dumps(data))
    return path


def test_stages_are_cut_where_one_tensor_crosses_balanced_by_parameters(tmp_path):
    model = layerlab.build_model(layerlab.load_project(residual_spiral(tmp_path)).graph)
    names = [n.name for n in model.graph.nodes][1:-1]
    assert names == ["fc1", "tanh1", "fc2", "tanh2", "skip", "fc3"]
    # inside the skip (after fc2, after tanh2) two tensors cross: no cut there
    assert [names[k - 1] for k in cut_points(model)] == ["fc1", "tanh1", "skip"]
    # parameters: fc1 48, fc2 272, fc3 34 → the largest stage as small as it can be
    assert plan_stages(model, 2) == [["fc1"], ["tanh1", "fc2", "tanh2", "skip", "fc3"]]
    assert plan_stages(model, 3) == [["fc1"], ["tanh1", "fc2", "tanh2", "skip"], ["fc3"]]
    with pytest.raises(TrainingError, match=r"^the graph cannot be split into 5 pipeline "
                       r"stages: only 3 node boundaries carry a single tensor \(after: fc1, "
                       r"tanh1, skip\); run 4 processes or fewer$"):
        plan_stages(model, 5)
    stages = stage_modules(model, plan_stages(model, 3))
    x = torch.randn(7, 2)
    y = x
    for stage in stages:
        y = stage(y)
    assert torch.equal(y, model(x))
    keys = [k for stage in stages for k in stage.state_dict()]
    assert keys == list(model.state_dict())


def test_the_pipeline_trainer_plans_the_saved_stages(tmp_path):
    """The stage count saved with the canvas must be the number of processes; the pinned
    start (fc2) is kept and the other cut balanced."""
    project = layerlab.load_project(residual_spiral(tmp_path, pipeline_stages=3))
    trainer = SimpleNamespace(project=project, world=2)  # what _plan reads of the trainer
    with pytest.raises(TrainingError, match=r"^the project plans 3 pipeline stages "
                       r"\(training.pipeline_stages\) but torchrun started 2 processes; start "
                       r"it with --nproc_per_node=3$"):
        ParallelTrainer._plan(trainer)
    trainer.world = 3
    assert ParallelTrainer._plan(trainer) == [["fc1", "tanh1"], ["fc2", "tanh2", "skip"],
                                              ["fc3"]]


def test_a_batch_splits_into_equal_micro_batches():
    assert [micro_batches(b, 4) for b in (32, 22, 20, 29, 3)] == [4, 2, 4, 1, 3]


def test_what_the_strategies_refuse_is_said_in_one_sentence(tmp_path):
    project = layerlab.load_project(residual_spiral(tmp_path))
    model = layerlab.build_model(project.graph)
    settings = settings_from(project.training)
    assert refusal("pipeline", model, project.graph, settings, None, ["cpu", "cpu"]) is None
    assert refusal("fsdp", model, project.graph, settings, None, ["cpu", "cuda"]) == (
        "--parallel fsdp needs every process on the same kind of device, but these run on "
        "cpu, cuda")
    bf16 = settings_from({**project.training, "precision": "bfloat16"})
    assert refusal("pipeline", model, project.graph, bf16, None, ["cpu"] * 2) == (
        "--parallel pipeline does not support bfloat16 precision yet; train in float32 or use "
        "--parallel fsdp")
    assert refusal("fsdp", model, project.graph, bf16, None, ["cpu"] * 2) is None
    model.fc3.weight = model.fc1.weight  # tied as an embedding and its output head are
    plan = [["fc1"], ["tanh1", "fc2", "tanh2", "skip", "fc3"]]
    assert refusal("pipeline", model, project.graph, settings, None, ["cpu"] * 2, plan) == (
        "node fc3 shares its weights with node fc1, but they fall in pipeline stages 1 and "
        "2, which --parallel pipeline cannot keep in step; clear fc3's tie_weight or use "
        "--parallel fsdp")
    model.fc3.weight = model.fc2.weight  # both in stage 2: one stage holds the tensor
    assert refusal("pipeline", model, project.graph, settings, None, ["cpu"] * 2,
                   plan) is None


def test_parallel_runs_need_torchrun(tmp_path, capsys):
    path = str(residual_spiral(tmp_path))
    assert main(["train", path, "--parallel", "pipeline", "--out", str(tmp_path / "o")]) == 2
    assert main(["train", path, "--microbatches", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["--parallel pipeline needs several processes: start it with torchrun "
                   "--nproc_per_node=N -m layerlab train …",
                   "--microbatches splits batches between pipeline stages: use it with "
                   "--parallel pipeline"]
    assert not (tmp_path / "o").exists()


DRIVER = """
import json, os, sys
import torch.distributed as dist
from layerlab.cli import main

dist.init_process_group("gloo")  # one group for all runs: torchrun starts once
runs = json.loads(sys.argv[1])
codes = [main(args) for args in runs]
dist.destroy_process_group()
sys.stdout.flush()  # one write per process: print's pieces interleave between the two
os.write(1, f"codes {json.dumps(codes)}\\n".encode())
"""


def batch_norm_project(tmp_path: Path) -> Path:
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    for node in data["graph"]["nodes"]:
        if node["id"] == "tanh1":
            node.update(id="bn", type="BatchNorm1d")
    for edge in data["graph"]["edges"]:
        for end in ("source", "target"):
            if edge[end] == "tanh1":
                edge[end] = "bn"
    path = tmp_path / "bn.layerlab.json"
    path.write_text(json.dumps(data))
    return path


def one_layer_project(tmp_path: Path) -> Path:
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    data["graph"]["nodes"] = [n for n in data["graph"]["nodes"]
                              if n["id"] in ("input", "fc3", "loss")]
    data["graph"]["edges"] = [{"source": "input", "target": "fc3"},
                              {"source": "fc3", "target": "loss"}]
    path = tmp_path / "one.layerlab.json"
    path.write_text(json.dumps(data))
    return path


def tied_gpt(tmp_path: Path) -> Path:
    """The tiny GPT with its head tied to the token embedding, on 240 sums, one epoch of
    SGD."""
    data = json.loads((EXAMPLES / "tiny-gpt.layerlab.json").read_text())
    for node in data["graph"]["nodes"]:
        if node["id"] == "head":
            node["params"]["tie_weight"] = "embed"
    data["training"]["dataset"]["options"]["n_samples"] = 240
    data["training"].update(epochs=1, optimizer={"name": "sgd", "lr": 0.1})  # Adam would
    # magnify float rounding in the summed gradients of near-zero entries
    path = tmp_path / "tied.layerlab.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed")
def test_fsdp_and_pipeline_on_two_processes_equal_one_process(tmp_path):
    """fsdp: 11 samples per process; pipeline: 22 a batch, 2 stages, 4 micro-batches asked
    (22 splits into 2, the last batch of 20 into 4); one process: batches of 22. Adam, L2, a
    frozen node, gradient clipping and a skip connection; 240 training samples, so the
    last batch is short."""
    project = str(residual_spiral(tmp_path))
    fsdp, pipe, one = tmp_path / "fsdp", tmp_path / "pipe", tmp_path / "one"
    common = ["--device", "cpu", "--epochs", "2"]
    runs = [["train", project, "--parallel", "fsdp", "--batch-size", "11", "--out", str(fsdp),
             *common],
            ["train", project, "--parallel", "pipeline", "--batch-size", "22",
             "--microbatches", "4", "--out", str(pipe), *common],
            ["train", str(batch_norm_project(tmp_path)), "--parallel", "pipeline",
             "--out", str(tmp_path / "bn"), *common],
            ["train", str(one_layer_project(tmp_path)), "--parallel", "pipeline",
             "--out", str(tmp_path / "one_layer"), *common],
            ["train", str(tied_gpt(tmp_path)), "--parallel", "fsdp", "--batch-size", "16",
             "--device", "cpu", "--out", str(tmp_path / "tied_fsdp")],
            ["train", str(tied_gpt(tmp_path)), "--parallel", "pipeline", "--device", "cpu",
             "--out", str(tmp_path / "tied_pipe")]]
    driver = tmp_path / "drive.py"
    driver.write_text(DRIVER)
    result = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(driver),
                             json.dumps(runs)], capture_output=True, text=True, check=False,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('codes [0, 0, 1, 1, 0, 1]') == 2, result.stderr[-3000:]
    assert result.stdout.count("finished after") == 3  # rank 0 alone reports
    # the pinned start, not the balance by parameters (fc1 | tanh1 …)
    assert result.stderr.count("pipeline stages: 1: fc1, tanh1 · 2: fc2 … fc3") == 1
    assert ("bn.layerlab.json: node bn (BatchNorm1d) would normalise each micro-batch on its "
            "own under --parallel pipeline, so the run would not equal the whole batch's; use "
            "--microbatches 1 or LayerNorm") in result.stderr
    assert ("one.layerlab.json: the graph cannot be split into 2 pipeline stages: no "
            "boundary between its nodes carries a single tensor; train it without --parallel "
            "pipeline") in result.stderr
    assert ("tied.layerlab.json: node head shares its weights with node embed, but they fall "
            "in pipeline stages 1 and 2, which --parallel pipeline cannot keep in step; clear "
            "head's tie_weight or use --parallel fsdp") in result.stderr
    assert not (tmp_path / "bn").exists() and not (tmp_path / "one_layer").exists()
    assert not (tmp_path / "tied_pipe").exists()
    assert main(["train", project, "--batch-size", "22", "--out", str(one), *common]) == 0
    # weight tying under fsdp: the table sharded once, the same run as one process's
    assert main(["train", str(tied_gpt(tmp_path)), "--batch-size", "32", "--device", "cpu",
                 "--out", str(tmp_path / "tied_one")]) == 0
    tied, alone = (load_file(tmp_path / f"tied_{run}" / "weights.safetensors")
                   for run in ("fsdp", "one"))
    assert "head.weight" not in tied and list(tied) == list(alone)
    for key, value in alone.items():
        torch.testing.assert_close(tied[key], value, atol=1e-5, rtol=1e-4)

    reference = load_file(one / "weights.safetensors")
    ref_state = torch.load(one / "checkpoint.pt", weights_only=True)
    ref_rows = (one / "metrics.csv").read_text().splitlines()
    for run in (fsdp, pipe):
        assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in one.iterdir())
        rows = (run / "metrics.csv").read_text().splitlines()
        assert len(rows) == len(ref_rows) == 3 and rows[0] == ref_rows[0]
        for row, ref in zip(rows[1:], ref_rows[1:], strict=True):
            got, want = row.split(","), ref.split(",")
            assert got[:2] == want[:2]  # epoch, step: the same batches
            assert [float(v) for v in got[2:5]] == pytest.approx(
                [float(v) for v in want[2:5]], rel=1e-5)
        weights = load_file(run / "weights.safetensors")
        assert list(weights) == list(reference)
        for key, value in reference.items():
            torch.testing.assert_close(weights[key], value, atol=1e-6, rtol=1e-5)
        state = torch.load(run / "checkpoint.pt", weights_only=True)  # resumable alone
        assert state["optimizer"]["param_groups"] == ref_state["optimizer"]["param_groups"]
        for index, moments in ref_state["optimizer"]["state"].items():
            for name, value in moments.items():
                torch.testing.assert_close(state["optimizer"]["state"][index][name], value,
                                           atol=1e-7, rtol=1e-4)
