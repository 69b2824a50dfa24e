"""`layerlab trace`: one step, per node, with verdicts; and weights it can or must not read."""

import torch
from safetensors.torch import save_file

import layerlab
from layerlab.cli import main

from conftest import EXAMPLES
from helpers import chain_graph


def test_trace_prints_every_node_loss_parameters_and_verdicts(capsys):
    code = main(["trace", str(EXAMPLES / "digits-mlp.layerlab.json")])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["node", "type", "output"]
    for node in ("input", "fc1", "relu", "fc2"):
        assert any(line.split()[0] == node for line in lines[1:5])
    assert "loss (CrossEntropyLoss): " in out
    assert any(line.startswith("fc1.weight") for line in lines)
    assert "verdicts" in out and "values of the first 8 of 32 samples" in out


def test_trace_flags_a_vanishing_network_saved_as_weights(tmp_path, capsys):
    project = layerlab.load_project(EXAMPLES / "digits-mlp.layerlab.json")
    model = layerlab.build_model(project.graph)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc2.weight"] = state["fc2.weight"] * 1e-6  # starves fc1 of gradient
    save_file(state, tmp_path / "w.safetensors")
    code = main(["trace", str(EXAMPLES / "digits-mlp.layerlab.json"), "--weights",
                 str(tmp_path / "w.safetensors")])
    out = capsys.readouterr().out
    assert code == 0 and "weights: loaded 4 tensor(s)" in out
    assert "fc1: gradient norm" in out and "vanishing" in out


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"fc1.weight": Evil()}, path)
    code = main(["trace", str(EXAMPLES / "digits-mlp.layerlab.json"), "--weights", str(path)])
    captured = capsys.readouterr()
    assert code == 1 and "pwned" not in captured.out
    assert captured.err.startswith(f"{path} was refused: it holds Python objects beyond "
                                   "tensors (print), and loading them could run code; ")


def test_trace_of_a_graph_without_loss_says_so(tmp_path, capsys):
    g = chain_graph([64], ("Linear", {"out_features": 10}))
    project = layerlab.Project(graph=g)
    project.training["dataset"] = {"name": "digits", "options": {}, "validation_split": 0.1}
    project.save(tmp_path / "p.layerlab.json")
    code = main(["trace", str(tmp_path / "p.layerlab.json")])
    assert code == 1 and "no loss node" in capsys.readouterr().err
