"""LoRA on Linear: the adapter math against a hand-written twin, training that moves only the
adapters (base weights bit-identical), exact merging on export (onnxruntime against the
unmerged torch model), pre-trained weights loading by name, trainable counts, and the chain
rule through the adapter against autograd."""

import json
import runpy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import layerlab
from layerlab.cli import main
from layerlab.core.compiler import param_counts
from layerlab.core.explain import explain_node
from layerlab.core.export import ExportError, export
from layerlab.core.lora import LoRALinear, merge_adapters
from layerlab.core.project import Project
from layerlab.core.shapes import analyze
from layerlab.core.summary import summarise
from layerlab.core.trainer import Trainer

from helpers import assert_merged_onnx_equals, chain_graph

RANK, ALPHA = 4, 12.0  # α/r = 3, so a merge that forgets the scale is caught
LORA = {"out_features": 32, "lora_rank": RANK, "lora_alpha": ALPHA, "init": "kaiming_uniform"}


def lora_graph():
    """x[64] → fc (Linear 64→32, LoRA r=4) → ReLU → n2 (Linear 32→10) → loss."""
    g = chain_graph([64], ("Linear", LORA), ("ReLU", {}), ("Linear", {"out_features": 10}),
                    loss="CrossEntropyLoss")
    return g


def with_random_b(model, seed=1):
    """A trained adapter: B away from its zero start, so the adapter path carries numbers."""
    with torch.no_grad():
        model.n0.lora_B.copy_(torch.randn(model.n0.lora_B.shape,
                                          generator=torch.Generator().manual_seed(seed)))
    return model


def twin(x, w, b, a, bb):
    """LoRA written out by hand: x·Wᵀ + b + (α/r)·(x·Aᵀ)·Bᵀ."""
    return x @ w.T + b + (ALPHA / RANK) * (x @ a.T) @ bb.T


def test_a_lora_linear_is_its_formula_and_starts_as_its_base():
    torch.manual_seed(0)
    model = layerlab.build_model(lora_graph())
    fc = model.n0
    assert isinstance(fc, LoRALinear)
    state = model.state_dict()
    assert [k for k in state if k.startswith("n0.")] == ["n0.weight", "n0.bias", "n0.lora_A",
                                                          "n0.lora_B"]
    assert (state["n0.lora_A"].shape, state["n0.lora_B"].shape) == ((4, 64), (32, 4))
    assert {k: p.requires_grad for k, p in model.named_parameters()} == {
        "n0.weight": False, "n0.bias": False, "n0.lora_A": True, "n0.lora_B": True,
        "n2.weight": True, "n2.bias": True}
    x = torch.randn(5, 64)
    # B = 0 at the start (the node's `init` does not touch the adapters): exactly the base
    assert not fc.lora_B.any() and fc.lora_A.abs().max() <= 1 / 8  # Kaiming-U, a=√5: 1/√64
    assert torch.equal(fc(x), F.linear(x, fc.weight, fc.bias))
    with_random_b(model)
    want = twin(x, fc.weight, fc.bias, fc.lora_A, fc.lora_B)
    torch.testing.assert_close(fc(x), want, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(fc(x), F.linear(x, fc.weight, fc.bias), atol=1e-2)


def test_merging_is_exact_and_leaves_the_model_alone():
    torch.manual_seed(0)
    g = lora_graph()
    model = with_random_b(layerlab.build_model(g).double())
    project = Project(graph=g)
    plain_project, plain = merge_adapters(project, model)
    assert type(plain.n0) is torch.nn.Linear and isinstance(model.n0, LoRALinear)
    assert "lora_rank" not in plain_project.graph.nodes["n0"]["params"]
    assert "lora_rank" in g.nodes["n0"]["params"]
    fc = model.n0
    assert torch.equal(plain.n0.weight, fc.weight + (fc.lora_B @ fc.lora_A) * (ALPHA / RANK))
    assert torch.equal(plain.n0.bias, fc.bias)
    x = torch.randn(7, 64, dtype=torch.float64)
    torch.testing.assert_close(plain(x), model(x), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`layerlab train --init-weights` of the LoRA project on weights pre-trained for a
    plain Linear (no adapter keys), with L2 on: what went in and what came out."""
    folder = tmp_path_factory.mktemp("lora")
    g = lora_graph()
    torch.manual_seed(3)
    plain = {k: v for k, v in layerlab.build_model(g).state_dict().items() if "lora" not in k}
    save_file(plain, folder / "pretrained.safetensors")
    project = Project(graph=g, name="lora")
    project.training.update({
        "dataset": {"name": "digits", "options": {}, "validation_split": 0.5},
        "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 300, "epochs": 1, "l2": 1e-3})
    path = folder / "lora.layerlab.json"
    project.save(path)
    data = json.loads(path.read_text())
    assert any(n.get("params", {}).get("lora_rank") == RANK for n in data["graph"]["nodes"])
    assert main(["train", str(path), "--init-weights", str(folder / "pretrained.safetensors"),
                 "--out", str(folder / "out")]) == 0
    return folder, plain, load_file(folder / "out" / "weights.safetensors")


def test_training_moves_only_the_adapters(run, capsys):
    _, before, after = run
    assert torch.equal(after["n0.weight"], before["n0.weight"])  # bit-identical
    assert torch.equal(after["n0.bias"], before["n0.bias"])
    assert after["n0.lora_B"].abs().max() > 1e-3  # started at zero, trained
    assert not torch.equal(after["n2.weight"], before["n2.weight"])  # a plain layer trains


def test_pretrained_weights_load_into_a_lora_node_by_name():
    torch.manual_seed(3)
    g = lora_graph()
    plain_graph = chain_graph([64], ("Linear", {"out_features": 32}), ("ReLU", {}),
                              ("Linear", {"out_features": 10}), loss="CrossEntropyLoss")
    pretrained = layerlab.build_model(plain_graph).state_dict()
    model = layerlab.build_model(g)
    report = model.load_state_dict(pretrained, strict=False)
    assert sorted(report.missing_keys) == ["n0.lora_A", "n0.lora_B"]
    assert not report.unexpected_keys
    assert torch.equal(model.n0.weight, pretrained["n0.weight"])
    x = torch.randn(4, 64)
    plain = layerlab.build_model(plain_graph)
    plain.load_state_dict(pretrained)
    assert torch.equal(model(x), plain(x))  # B = 0: the pre-trained model, unchanged


def test_every_export_carries_one_plain_linear(run):
    pytest.importorskip("onnxruntime")
    folder, _, trained = run
    project = layerlab.load_project(folder / "out" / "project.layerlab.json")
    model = layerlab.build_model(project.graph)
    model.load_state_dict(trained)
    model.eval()
    x = torch.randn(9, 64)
    with torch.no_grad():
        want = model(x).numpy()
    assert_merged_onnx_equals(project, model, x, folder / "m.onnx")
    export(project, model, "safetensors", folder / "m.safetensors")
    assert sorted(load_file(folder / "m.safetensors")) == ["n0.bias", "n0.weight",
                                                            "n2.bias", "n2.weight"]
    export(project, model, "python", folder / "m.py")
    source = (folder / "m.py").read_text()
    assert "self.n0 = nn.Linear(64, 32)" in source and "LoRA" not in source
    standalone = runpy.run_path(str(folder / "m.py"))
    loaded = standalone["load_model"](str(folder / "m.safetensors"))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), want, rtol=1e-5, atol=1e-5)
    export(project, model, "pt2", folder / "m.pt2")
    program = torch.export.load(folder / "m.pt2")
    assert not [k for k in program.state_dict if "lora" in k]
    with torch.no_grad():
        np.testing.assert_allclose(program.module()(x).numpy(), want, rtol=1e-5, atol=1e-5)
    assert isinstance(model.n0, LoRALinear)  # the model itself keeps its adapters


def test_a_merge_that_forgets_the_scale_is_refused(run, monkeypatch, tmp_path):
    """The deliberate break: W + B·A without α/r. Export compares the merged model with the
    unmerged one before writing, so it refuses rather than writing a wrong model."""
    folder, _, trained = run
    project = layerlab.load_project(folder / "out" / "project.layerlab.json")
    model = layerlab.build_model(project.graph)
    model.load_state_dict(trained)
    monkeypatch.setattr(LoRALinear, "merged_weight",
                        lambda self: self.weight + self.lora_B @ self.lora_A)
    with pytest.raises(ExportError, match="merging the LoRA adapters changed"):
        export(project, model, "safetensors", tmp_path / "wrong.safetensors")
    assert not (tmp_path / "wrong.safetensors").exists()


def test_trainable_counts_before_and_after_lora(capsys, tmp_path):
    g = lora_graph()
    analysis = analyze(g)
    base, adapters, head = 64 * 32 + 32, RANK * (64 + 32), 32 * 10 + 10
    assert param_counts(g, analysis)["n0"] == base + adapters
    assert param_counts(g, analysis, trainable=True)["n0"] == adapters
    summary = summarise(g, analysis)
    assert (summary.parameters, summary.trainable) == (base + adapters + head, adapters + head)
    g.nodes["n2"]["frozen"] = True
    assert summarise(g, analyze(g)).trainable == adapters
    plain = chain_graph([64], ("Linear", {"out_features": 32}), ("ReLU", {}),
                        ("Linear", {"out_features": 10}), loss="CrossEntropyLoss")
    assert summarise(plain, analyze(plain)).trainable == base + head
    path = tmp_path / "p.layerlab.json"
    project = Project(graph=lora_graph())
    project.training["dataset"] = {"name": "digits", "options": {}}
    project.save(path)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{base + adapters:,} (trainable {adapters:,})" in out
    assert f"total parameters: {base + adapters + head:,} (trainable {adapters + head:,})" in out


def test_the_trainer_optimizes_exactly_the_counted_parameters():
    project = Project(graph=lora_graph())
    project.training["dataset"] = {"name": "digits", "options": {}}
    trainer = Trainer(project)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    named = {k for k, p in trainer.model.named_parameters() if id(p) in optimized}
    assert named == {"n0.lora_A", "n0.lora_B", "n2.weight", "n2.bias"}
    assert sum(p.numel() for p in trainer.trainable) == summarise(
        project.graph, analyze(project.graph)).trainable
    assert {id(p) for p in trainer.penalised} == {id(trainer.model.n0.lora_A),
                                                 id(trainer.model.n0.lora_B),
                                                 id(trainer.model.n2.weight)}


def test_the_chain_rule_through_the_adapter_matches_autograd():
    torch.manual_seed(0)
    g = lora_graph()
    x, t = torch.randn(6, 64), torch.randint(0, 10, (6,))
    model = with_random_b(layerlab.build_model(g))
    trace = layerlab.trace_step(g, model, x, t, keep=6)
    leaves = {k: p.detach().clone().requires_grad_() for k, p in model.n0.named_parameters()}
    xin = x.clone().requires_grad_()
    out = twin(xin, leaves["weight"], leaves["bias"], leaves["lora_A"], leaves["lora_B"])
    (out * trace.grad("n0")).sum().backward()
    for s in (0, 5):
        e = explain_node(trace, g, "n0", sample=s)
        torch.testing.assert_close(e.grad_inputs[0], xin.grad[s], rtol=1e-4, atol=2e-6)
        assert e.matches, (e.max_diff, e.scale)  # against what autograd recorded in the step
    assert set(e.param_grads) == {"n0.lora_A", "n0.lora_B"}  # W and b are frozen
    for name in ("lora_A", "lora_B"):
        torch.testing.assert_close(e.param_grads[f"n0.{name}"], leaves[name].grad,
                                   rtol=1e-4, atol=2e-6)
    assert "α/r = 3" in e.formula and "frozen" in e.formula
    torch.testing.assert_close(e.terms["h"], x[5] @ model.n0.lora_A.detach().T)


def test_a_wrong_scale_in_the_rule_is_caught():
    """The deliberate break: the rule evaluated with α = 8 while the step ran with α = 12
    disagrees with autograd, and the explanation says so."""
    torch.manual_seed(0)
    g = lora_graph()
    model = with_random_b(layerlab.build_model(g))
    trace = layerlab.trace_step(g, model, torch.randn(4, 64), torch.randint(0, 10, (4,)), keep=4)
    assert explain_node(trace, g, "n0").matches
    g.nodes["n0"]["params"]["lora_alpha"] = 8.0
    wrong = explain_node(trace, g, "n0")
    assert not wrong.matches and wrong.max_diff > 1e-3


# -- attention: LoRA on both projections -------------------------------------------------
ATTN = {"num_heads": 2, "lora_rank": 2, "lora_alpha": 6.0}  # α/r = 3


def attention_graph():
    """x[5, 8] → n0 (MultiheadAttention, 2 heads, LoRA r=2) → Flatten → Linear → loss."""
    return chain_graph([5, 8], ("MultiheadAttention", ATTN), ("Flatten", {}),
                       ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")


def with_random_adapters(model):
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.n0.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def attention_twin(x, w):
    """Self-attention written out, with W′ = W + (α/r)·B·A for both projections."""
    w_in = w["in_proj_weight"] + 3.0 * w["in_proj_lora_B"] @ w["in_proj_lora_A"]
    w_out = w["out_proj.weight"] + 3.0 * w["out_proj_lora_B"] @ w["out_proj_lora_A"]
    q, k, v = (t.reshape(len(x), 5, 2, 4).transpose(1, 2)
               for t in (x @ w_in.T + w["in_proj_bias"]).chunk(3, dim=-1))
    mixed = (torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v).transpose(1, 2)
    return mixed.reshape(len(x), 5, 8) @ w_out.T + w["out_proj.bias"]


def test_lora_attention_is_its_formula_trains_only_adapters_and_merges(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    torch.manual_seed(0)
    g = attention_graph()
    model = layerlab.build_model(g).eval()
    x = torch.randn(4, 5, 8)
    base = torch.nn.MultiheadAttention(8, 2, batch_first=True).train()  # no fused fast path
    base.load_state_dict({k: v for k, v in model.n0.state_dict().items() if "lora" not in k})
    with torch.no_grad():
        assert torch.equal(model.n0(x, x, x)[0], base(x, x, x)[0])  # B = 0: the base layer
    assert {k for k, p in model.n0.named_parameters() if p.requires_grad} == {
        "in_proj_lora_A", "in_proj_lora_B", "out_proj_lora_A", "out_proj_lora_B"}
    adapters = 2 * (8 + 24) + 2 * (8 + 8)
    assert param_counts(g, trainable=True)["n0"] == adapters
    assert param_counts(g)["n0"] == 4 * 8 * 8 + 4 * 8 + adapters
    with_random_adapters(model)
    with torch.no_grad():
        torch.testing.assert_close(model.n0(x, x, x)[0],
                                   attention_twin(x, dict(model.n0.named_parameters())))
        want = model(x).numpy()
    report = export(Project(graph=g), model, "onnx", tmp_path / "a.onnx")
    assert "LoRA adapters merged" in report.detail
    session = onnxruntime.InferenceSession(str(tmp_path / "a.onnx"),
                                           providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_chain_rule_through_attention_adapters_matches_autograd():
    torch.manual_seed(0)
    g = attention_graph()
    x, t = torch.randn(3, 5, 8), torch.randint(0, 3, (3,))
    model = with_random_adapters(layerlab.build_model(g))
    trace = layerlab.trace_step(g, model, x, t, keep=3)
    leaves = {k: p.detach().clone().requires_grad_() for k, p in model.n0.named_parameters()}
    xin = x.clone().requires_grad_()
    (attention_twin(xin, leaves) * trace.grad("n0")).sum().backward()
    e = explain_node(trace, g, "n0", sample=1)
    torch.testing.assert_close(e.grad_inputs[0], xin.grad[1], rtol=1e-4, atol=2e-6)
    assert e.matches, (e.max_diff, e.scale)
    assert set(e.param_grads) == {f"n0.{k}" for k in leaves if "lora" in k}
    for key in e.param_grads:
        torch.testing.assert_close(e.param_grads[key], leaves[key[3:]].grad,
                                   rtol=1e-4, atol=2e-6)


def test_the_window_turns_lora_on_and_shows_trainable_counts(window, qtbot):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QLabel, QSpinBox

    window.open_example("digits-mlp")  # fc1: Linear 64 → 500, fc2: 500 → 10
    window.scene.select_only(["fc1"])
    spin = window.inspector.findChild(QSpinBox, "param_lora_rank")
    assert "r·(in + out)" in spin.toolTip()
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, "8")
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    base, adapters, head = 64 * 500 + 500, 8 * (64 + 500), 500 * 10 + 10
    count = window.inspector.findChild(QLabel, "nodeParameters")
    assert count.text() == f"{base + adapters:,} (trainable {adapters:,})"
    assert "LoRA r=8, α=8" in window.scene.nodes["fc1"].lines
    description = window.inspector.findChild(QLabel, "layerDescription")
    assert "W′ = W + (α/r)·B·A" in description.text()
    summary = window.doc.summary()
    assert (summary.parameters, summary.trainable) == (base + adapters + head, adapters + head)
    window.doc.undo_stack.undo()
    assert window.doc.summary().trainable == base + head
    assert "B·A" not in description.text() and count.text() == f"{base:,}"
