"""`layerlab trace`: one step, per node, with verdicts; and weights it can or must not read."""

import pytest
import torch
from safetensors.torch import save_file

import layerlab
from layerlab.cli import main
from layerlab.core.settings import settings_from
from layerlab.core.trainer import Trainer

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


def printed_terms(out: str) -> dict[str, float]:
    """The `terms:` block of `layerlab trace --update` as {name: value}."""
    block = out.split("terms:\n")[1].split("\n\n")[0]
    return {name: float(value) for name, value in
            (line.strip().rsplit(None, 1) for line in block.splitlines())}


def test_trace_update_prints_one_weights_update_with_torchs_numbers(capsys):
    """spiral: Adam, lr 0.01, seed 0. A plain first step of the same run in torch gives the
    weight before, m and v after, and the weight after, that the command prints."""
    path = EXAMPLES / "spiral.layerlab.json"
    assert main(["trace", str(path), "--update", "fc2.weight:3,2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "fc2.weight[3, 2]: Adam, step 1"
    assert lines[1] == ("rule: m ← β₁·m + (1 − β₁)·g;  v ← β₂·v + (1 − β₂)·g²;  "
                        "m̂ = m / (1 − β₁ᵗ);  v̂ = v / (1 − β₂ᵗ);  w ← w − η·m̂ / (√v̂ + ε)")
    terms = printed_terms(out)
    project = layerlab.load_project(path)
    trainer = Trainer(project, settings_from(project.training, device="cpu"))
    weight = trainer.model.fc2.weight
    before = float(weight.detach()[3, 2])
    trainer.train_one_batch()
    state = trainer.optimizer.state[weight]
    m, v = float(state["exp_avg"][3, 2]), float(state["exp_avg_sq"][3, 2])
    assert terms["w"] == pytest.approx(before, rel=1e-8)
    assert (terms["η"], terms["t"], terms["m (before)"], terms["v (before)"]) == (0.01, 1, 0, 0)
    assert terms["m"] == pytest.approx(m, rel=1e-6)
    assert terms["v"] == pytest.approx(v, rel=1e-6)
    assert terms["g"] == pytest.approx(m / 0.1, rel=1e-6)
    after = float(weight.detach()[3, 2])
    assert f"torch's step    {after:.9g}  (difference " in out
    rule = float(out.split("the rule gives  ")[1].split()[0])
    assert rule - before == pytest.approx(after - before, rel=1e-5)
    assert len([line for line in lines if line.startswith("  ") and " = " in line]) == 5


@pytest.mark.parametrize(("place", "code", "message"), [
    ("fc2.weight", 2, "argument --update: 'fc2.weight' is not a weight: write the "
                      "parameter's state-dict key and its index, e.g. fc1.weight:3,2"),
    ("fc2.weight:a,b", 2, "'fc2.weight:a,b' is not a weight"),
    ("fc9.weight:0,0", 1, "spiral.layerlab.json: fc9.weight: no such parameter in the "
                          "traced model"),
    ("fc2.weight:16,0", 1, "spiral.layerlab.json: fc2.weight: index 16,0 is outside its "
                           "shape 16×16 (indices count from 0)"),
])
def test_trace_update_refuses_a_weight_it_cannot_find_in_one_sentence(place, code, message,
                                                                      capsys):
    try:
        result = main(["trace", str(EXAMPLES / "spiral.layerlab.json"), "--update", place])
    except SystemExit as exc:  # argparse: the command line cannot be used as typed
        result = exc.code
    assert result == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def printed_vector(out: str, name: str, section: str) -> torch.Tensor:
    """The values printed after `name` in the section that starts with `section`."""
    block = out.split(section)[1].split("\n\n")[0]
    line = next(line for line in block.splitlines() if line.split()[:1] == [name])
    return torch.tensor([float(v) for v in line.split("]", 1)[1].split()])


def test_trace_node_prints_the_chain_rule_with_autograds_numbers(capsys):
    """spiral, fc2 (Linear 16→16), sample 1: the gradient it sends back to tanh1 and its
    bias gradient over the batch, against autograd on a twin with the same weights and
    batch."""
    path = EXAMPLES / "spiral.layerlab.json"
    assert main(["trace", str(path), "--node", "fc2", "--sample", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:3] == ["fc2 (Linear), sample 1",
                         "rule: dL/dtanh1 = dL/dfc2·W;  dL/dW = Σₙ (dL/dfc2ₙ)ᵀ·tanh1ₙ;  "
                         "dL/db = Σₙ dL/dfc2ₙ", "inputs: tanh1"]
    project = layerlab.load_project(path)
    trace = Trainer(project, settings_from(project.training, device="cpu")).trace_next_batch(
        keep=32)
    twin = Trainer(project, settings_from(project.training, device="cpu")).model
    x, t = trace.output("input"), trace.targets
    hidden = twin.tanh1(twin.fc1(x))
    hidden.retain_grad()
    loss = torch.nn.functional.cross_entropy(twin.fc3(twin.tanh2(twin.fc2(hidden))), t)
    loss.backward()
    shown = printed_vector(out, "dL/dtanh1", "gradient to each input:")
    assert torch.allclose(shown, hidden.grad[1], rtol=1e-5, atol=1e-9)
    bias = printed_vector(out, "fc2.bias", "parameter gradients (the whole batch):")
    assert torch.allclose(bias, twin.fc2.bias.grad, rtol=1e-5, atol=1e-9)
    assert lines[-1].startswith("autograd agrees: max difference ")
    assert float(lines[-1].rsplit(None, 1)[1]) < 1e-7


@pytest.mark.parametrize(("args", "message"), [
    (["--node", "fc9"], "spiral.layerlab.json: fc9 is not a node of this graph"),
    (["--node", "fc2", "--sample", "32"], "spiral.layerlab.json: sample 32 was not kept: "
                                          "this trace holds samples 0 to 31"),
])
def test_trace_node_refuses_a_node_or_sample_it_does_not_have_in_one_sentence(args, message,
                                                                              capsys):
    assert main(["trace", str(EXAMPLES / "spiral.layerlab.json"), *args]) == 1
    assert capsys.readouterr().err.strip() == f"{EXAMPLES}/{message}"


def test_trace_sample_without_node_and_node_with_update_are_refused(capsys):
    path = str(EXAMPLES / "spiral.layerlab.json")
    assert main(["trace", path, "--sample", "2"]) == 2
    assert capsys.readouterr().err.strip() == ("--sample picks the sample that --node "
                                               "explains: give --node too")
    with pytest.raises(SystemExit) as exc:
        main(["trace", path, "--node", "fc1", "--update", "fc1.weight:0,0"])
    assert exc.value.code == 2
    assert "argument --update: not allowed with argument --node" in capsys.readouterr().err
