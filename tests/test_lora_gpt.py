"""LoRA on the GPT layers: CausalSelfAttention's `qkv` and `out_proj`, and a GPTBlock's
attention projections (and, with `lora_mlp`, its MLP's `fc` and `proj`). Pre-trained plain
weights load by name and the model starts exactly as it was; training moves only the
adapters (every base weight bit-identical); the merged ONNX export equals the unmerged
model in onnxruntime; trainable counts before and after; the chain rule through the
adapters against autograd."""

import pytest
import torch

import layerlab
from layerlab.core.compiler import param_counts
from layerlab.core.explain import explain_node
from layerlab.core.export import export
from layerlab.core.lora import LoRALinear, merge_adapters
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.trainer import Trainer

from helpers import assert_merged_onnx_equals, chain_graph

D, FF, R, ALPHA = 16, 32, 2, 6.0  # α/r = 3: a merge or rule that forgets the scale is caught
LORA = {"lora_rank": R, "lora_alpha": ALPHA}


def gpt_graph(lora: bool, mlp: bool = True, attention: bool = True):
    """'07+25=032' ([9] token ids) → embedding → GPTBlock → CausalSelfAttention → Flatten →
    Linear(2): is this sum right? With `lora`, both GPT layers carry adapters."""
    extra = LORA if lora else {}
    layers = [("TokenPositionEmbedding", {"num_embeddings": 12, "embedding_dim": D,
                                          "max_len": 9}),
              ("GPTBlock", {"num_heads": 2, "dim_feedforward": FF, **extra,
                            **({"lora_mlp": True} if lora and mlp else {})}),
              ("CausalSelfAttention", {"num_heads": 2, **extra}), ("Flatten", {}),
              ("Linear", {"out_features": 2})]
    if not attention:  # the smallest graph to export (torch's ONNX exporter takes seconds)
        del layers[2]
    return chain_graph([9], *layers, dtype="int64", loss="CrossEntropyLoss")


def project_of(graph):
    project = Project(graph=graph)
    project.training.update({
        "dataset": {"name": "addition", "options": {"task": "classify", "n_samples": 64},
                    "validation_split": 0.25},
        "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 16, "epochs": 1})
    return project


def random_adapters(model, seed=1):
    """Adapters as training leaves them: B away from its zero start."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.fixture(scope="module")
def pretrained():
    torch.manual_seed(0)
    return layerlab.build_model(gpt_graph(lora=False)).state_dict()


def adapted(pretrained, mlp=True):
    torch.manual_seed(5)
    model = layerlab.build_model(gpt_graph(lora=True, mlp=mlp))
    report = model.load_state_dict(pretrained, strict=False)
    assert not report.unexpected_keys and all("lora_" in k for k in report.missing_keys)
    return model


def test_pretrained_weights_load_by_name_and_the_model_starts_as_it_was(pretrained):
    model = adapted(pretrained)
    adapters = {"n1.attn.qkv", "n1.attn.out_proj", "n1.fc", "n1.proj", "n2.qkv",
                "n2.out_proj"}
    assert {n for n, m in model.named_modules() if isinstance(m, LoRALinear)} == adapters
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{a}.lora_{x}" for a in adapters for x in "AB"} | {
        "n0.token.weight", "n0.position", "n4.weight", "n4.bias"}  # not GPT: as usual
    plain = layerlab.build_model(gpt_graph(lora=False))
    plain.load_state_dict(pretrained)
    x = torch.randint(0, 12, (5, 9))
    assert torch.equal(model(x), plain(x))  # B = 0: exactly the pre-trained model
    without_mlp = adapted(pretrained, mlp=False)
    assert type(without_mlp.n1.fc) is torch.nn.Linear
    assert not without_mlp.n1.fc.weight.requires_grad  # frozen all the same


def test_trainable_counts_before_and_after():
    plain, lora = param_counts(gpt_graph(False)), param_counts(gpt_graph(True))
    free = param_counts(gpt_graph(True), trainable=True)
    attention = R * (D + 3 * D) + R * (D + D)  # A: r × in, B: out × r, for qkv and out_proj
    mlp = R * (D + FF) + R * (FF + D)
    assert plain["n1"] == 4 * D + (3 * D * D + 3 * D) + (D * D + D) + 2 * (D * FF) + FF + D
    assert (lora["n1"], free["n1"]) == (plain["n1"] + attention + mlp, attention + mlp)
    assert (lora["n2"], free["n2"]) == (plain["n2"] + attention, attention)
    assert param_counts(gpt_graph(True, mlp=False), trainable=True)["n1"] == attention
    assert free["n0"] == plain["n0"] and free["n4"] == plain["n4"]


def test_training_moves_only_the_adapters(pretrained):
    project = project_of(gpt_graph(lora=True))
    trainer = Trainer(project, settings_from(project.training, device="cpu"))
    trainer.model.load_state_dict(pretrained, strict=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert {k for k, p in trainer.model.named_parameters() if id(p) in optimized} == {
        k for k, p in trainer.model.named_parameters() if p.requires_grad}
    for _ in range(3):
        trainer.train_one_batch()
    after = trainer.model.state_dict()
    for key in before:
        if "lora_" in key or key.startswith(("n0.", "n4.")):
            assert not torch.equal(after[key], before[key]), key  # adapters and the rest train
        else:
            assert torch.equal(after[key], before[key]), key  # base weights bit-identical


def test_merging_folds_every_adapter_exactly(pretrained):
    model = random_adapters(adapted(pretrained)).double()
    g = gpt_graph(lora=True)
    plain_project, plain = merge_adapters(Project(graph=g), model)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert not any("lora" in key for key in plain.state_dict())
    assert all("lora_rank" not in d["params"] for _, d in plain_project.graph.nodes(data=True))
    qkv = model.n2.qkv
    assert torch.equal(plain.n2.qkv.weight, qkv.weight + (qkv.lora_B @ qkv.lora_A) * 3.0)
    x = torch.randint(0, 12, (7, 9))
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), rtol=0, atol=1e-12)
        unadapted = layerlab.build_model(gpt_graph(lora=False)).double()
        unadapted.load_state_dict(pretrained)
        assert (unadapted(x) - model(x)).abs().max() > 1e-2  # the adapters carry numbers


def test_the_merged_onnx_export_equals_the_unmerged_model(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    g = gpt_graph(lora=True, attention=False)
    model = random_adapters(layerlab.build_model(g)).eval()
    assert_merged_onnx_equals(Project(graph=g), model, torch.randint(0, 12, (6, 9)),
                              tmp_path / "g.onnx")
    assert isinstance(model.n1.fc, LoRALinear)  # the model itself keeps its adapters


def test_the_python_export_carries_plain_gpt_layers(pretrained, tmp_path):
    model = random_adapters(adapted(pretrained))
    export(Project(graph=gpt_graph(lora=True)), model, "python", tmp_path / "g.py")
    source = (tmp_path / "g.py").read_text()
    assert "LoRA" not in source and "lora" not in source
    assert "self.n2 = CausalSelfAttention(16, 2)" in source


@pytest.mark.parametrize("node", ["n1", "n2"])
def test_the_chain_rule_through_the_gpt_adapters_matches_autograd(pretrained, node):
    g = gpt_graph(lora=True)
    model = random_adapters(adapted(pretrained))
    x, t = torch.randint(0, 12, (4, 9)), torch.randint(0, 2, (4,))
    trace = layerlab.trace_step(g, model, x, t, keep=4)
    e = explain_node(trace, g, node, sample=2)
    assert e.matches, (e.max_diff, e.scale)
    adapters = {k for k in trace.param_grads if k.startswith(f"{node}.") and "lora_" in k}
    assert set(e.param_grads) == adapters and len(adapters) == (8 if node == "n1" else 4)
    for key in adapters:
        torch.testing.assert_close(e.param_grads[key], trace.param_grads[key],
                                   rtol=1e-4, atol=1e-6)
    assert "α/r = 3" in e.formula
