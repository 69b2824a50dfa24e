"""Weight tying (core/tying.py): a Linear whose weight is a TokenPositionEmbedding's table is
one Parameter, equal to a hand-written torch twin with tied weights, its gradient the sum of
both uses; it is counted and stepped once, frozen with either node, saved once and re-tied
on load, and carried by every export."""

import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

import layerlab
from layerlab.core.compiler import param_counts
from layerlab.core.datasets import Dataset
from layerlab.core.errors import GraphError
from layerlab.core.export import export
from layerlab.core.parallel import refusal
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.stages import pipeline_plan
from layerlab.core.trainer import Trainer
from layerlab.core.weights import load_weights, save_weights

VOCAB, DIM, STEPS = 7, 4, 5


def tied_graph(**head) -> nx.DiGraph:
    """tokens [5] → emb (7 × 4 table, 5 positions) → mean over positions → head 4 → 7, whose
    weight is emb's table."""
    g = nx.DiGraph()
    for node, kind, params in (
            ("x", "Input", {"shape": [STEPS], "dtype": "int64"}),
            ("emb", "TokenPositionEmbedding", {"num_embeddings": VOCAB, "embedding_dim": DIM,
                                               "max_len": STEPS}),
            ("avg", "Mean", {"dim": 1}),
            ("head", "Linear", {"out_features": VOCAB, "tie_weight": "emb", **head}),
            ("loss", "CrossEntropyLoss", {})):
        g.add_node(node, type=kind, params=params, pos=[0, 0])
    nx.add_path(g, ["x", "emb", "avg", "head", "loss"])
    return g


class Twin(nn.Module):
    """The same network written by hand in torch, tied as GPT-2 ties its head."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, DIM)
        self.pos = nn.Parameter(torch.zeros(STEPS, DIM))
        self.head = nn.Linear(DIM, VOCAB)
        self.head.weight = self.tok.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.tok(x) + self.pos).mean(1))


def twin_of(model: nn.Module) -> Twin:
    twin = Twin()
    with torch.no_grad():
        twin.tok.weight.copy_(model.emb.token.weight)
        twin.pos.copy_(model.emb.position)
        twin.head.bias.copy_(model.head.bias)
    return twin


def data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (n, STEPS), generator=g), torch.randint(0, VOCAB, (n,),
                                                                           generator=g)


def test_one_parameter_equal_to_a_hand_written_twin_through_one_sgd_step():
    torch.manual_seed(0)
    project = Project(graph=tied_graph())
    x, y = data()
    project.training.update(optimizer={"name": "sgd", "lr": 0.5}, batch_size=len(x), epochs=1,
                            device="cpu", dataset={"name": "spiral", "options": {},
                                                   "validation_split": 0.0})
    trainer = Trainer(project, data=Dataset("tokens", x, y, "classification",
                                            tuple(map(str, range(VOCAB)))))
    model = trainer.model
    assert model.head.weight is model.emb.token.weight
    twin = twin_of(model)
    torch.testing.assert_close(model(x), twin(x), rtol=0, atol=0)
    # counted once, one optimizer entry: table, positions, head bias
    assert sum(param_counts(project.graph).values()) == VOCAB * DIM + STEPS * DIM + VOCAB
    assert param_counts(project.graph)["head"] == VOCAB
    assert sum(p.numel() for p in trainer.optimizer.param_groups[0]["params"]) == (
        sum(p.numel() for p in twin.parameters()))
    assert trainer.run() == "finished"  # one step of SGD on the whole batch
    loss = nn.functional.cross_entropy(twin(x), y)
    loss.backward()
    torch.optim.SGD(twin.parameters(), lr=0.5).step()
    torch.testing.assert_close(model.emb.token.weight, twin.tok.weight)
    torch.testing.assert_close(model.head.bias, twin.head.bias)
    assert model.head.weight is model.emb.token.weight


def test_the_shared_gradient_is_the_sum_of_both_uses():
    torch.manual_seed(0)
    model = layerlab.build_model(tied_graph())
    x, y = data()
    nn.functional.cross_entropy(model(x), y).backward()
    tied = model.emb.token.weight.grad.clone()
    # the same numbers untied: two tensors, each with its own gradient
    untied = layerlab.build_model(tied_graph(tie_weight=""))
    untied.load_state_dict(model.state_dict())
    assert untied.head.weight is not untied.emb.token.weight
    nn.functional.cross_entropy(untied(x), y).backward()
    torch.testing.assert_close(tied, untied.emb.token.weight.grad + untied.head.weight.grad)
    assert untied.emb.token.weight.grad.abs().sum() > 0 and untied.head.weight.grad.abs().sum() > 0


def test_saved_once_and_retied_on_load(tmp_path):
    torch.manual_seed(0)
    model = layerlab.build_model(tied_graph())
    save_weights(model, tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["emb.position", "emb.token.weight", "head.bias"]
    torch.manual_seed(1)
    fresh = layerlab.build_model(tied_graph())
    report = load_weights(fresh, tmp_path / "w.safetensors")
    assert report.lines() == ["loaded 3 tensor(s)"]  # head.weight is not missing: it is emb's
    assert fresh.head.weight is fresh.emb.token.weight
    torch.testing.assert_close(fresh.head.weight, model.emb.token.weight, rtol=0, atol=0)
    # a model without the head (a classifier on the body) finds the table by its key
    body = layerlab.build_model(tied_graph(tie_weight="", out_features=3))
    assert "missing emb.token.weight: kept its initial value" not in load_weights(
        body, tmp_path / "w.safetensors").lines()


def test_every_export_carries_the_tie(tmp_path):
    torch.manual_seed(0)
    project = Project(graph=tied_graph(), name="tied")
    model = layerlab.build_model(project.graph).eval()
    x, _ = data(6)
    want = model(x).detach()
    assert export(project, model, "safetensors", tmp_path / "w.safetensors").detail == (
        "3 tensors (1 tied weight stored once)")
    export(project, model, "python", tmp_path / "model.py")
    source = (tmp_path / "model.py").read_text()
    assert "self.head.weight = self.emb.token.weight" in source
    np.save(tmp_path / "x.npy", x.numpy())
    subprocess.run([sys.executable, str(tmp_path / "model.py"), str(tmp_path / "w.safetensors"),
                    str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], check=True,
                   capture_output=True, timeout=60)
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "y.npy")), want)
    # ONNX goes through torch.export, as pt2 does (one shared initializer for the table)
    onnx_report = export(project, model, "onnx", tmp_path / "m.onnx")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                           providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-5)
    assert onnx_report.detail.startswith("ONNX opset")


def test_freezing_either_node_keeps_the_table():
    x, y = data()
    dataset = Dataset("tokens", x, y, "classification", tuple(map(str, range(VOCAB))))
    for frozen in ("head", "emb"):
        graph = tied_graph()
        graph.nodes[frozen]["frozen"] = True
        trainer = Trainer(Project(graph=graph), data=dataset)
        assert not trainer.model.emb.token.weight.requires_grad
        counts = param_counts(graph, trainable=True)
        assert counts["emb"] == (0 if frozen == "emb" else STEPS * DIM)  # positions train
        assert counts["head"] == (0 if frozen == "head" else VOCAB)


def test_a_tie_that_cannot_be_made_is_named_in_one_sentence():
    def errors(graph: nx.DiGraph) -> list[tuple[str, str]]:
        with pytest.raises(GraphError) as caught:
            layerlab.infer_shapes(graph)
        return caught.value.errors

    assert errors(tied_graph(out_features=6)) == [(
        "head", "head cannot use the table of emb as its weight: the table is [7, 4] "
                "(num_embeddings × embedding_dim) but head's weight is [6, 4] (out_features × "
                "input features)")]
    assert errors(tied_graph(tie_weight="avg")) == [(
        "head", "head can tie its weight only to an Embedding or TokenPositionEmbedding node, "
                "but avg is a Mean")]
    assert errors(tied_graph(tie_weight="nowhere")) == [(
        "head", "head can tie its weight only to an Embedding or TokenPositionEmbedding node, "
                "but there is no node nowhere")]
    assert errors(tied_graph(lora_rank=2)) == [(
        "head", "head ties its weight to emb, so it cannot take LoRA adapters (they would "
                "freeze the shared table); set lora_rank to 0 or clear tie_weight")]


def test_pipeline_refuses_a_tie_across_its_stages():
    graph = tied_graph()
    model = layerlab.build_model(graph)
    plan = pipeline_plan(graph, 2)
    assert plan == [["emb"], ["avg", "head"]]
    settings = settings_from(Project(graph=graph).training)
    assert refusal("pipeline", model, graph, settings, None, ["cpu"] * 2, plan) == (
        "node head shares its weights with node emb, but they fall in pipeline stages 1 and "
        "2, which --parallel pipeline cannot keep in step; clear head's tie_weight or use "
        "--parallel fsdp")


def test_the_step_through_explains_both_uses_and_they_add_up_to_autograd():
    torch.manual_seed(0)
    graph = tied_graph()
    model = layerlab.build_model(graph)
    x, y = data(4)
    trace = layerlab.trace_step(graph, model, x, y)
    head = layerlab.explain_node(trace, graph, "head")
    emb = layerlab.explain_node(trace, graph, "emb")
    assert head.matches and emb.matches  # each against what autograd recorded of its own
    # the table's gradient: what the head's rule and the embedding's rule each give, summed
    total = head.param_grads["head.weight"] + emb.param_grads["emb.token.weight"]
    torch.testing.assert_close(total, trace.param_grads["emb.token.weight"])


def test_renaming_the_embedding_keeps_the_tie(qtbot):
    from layerlab.app.commands import Rename
    from layerlab.app.document import Document

    doc = Document(Project(graph=tied_graph()))
    before = doc.project.to_json()
    doc.undo_stack.push(Rename(doc, "emb", "wte"))
    assert doc.graph.nodes["head"]["params"]["tie_weight"] == "wte" and doc.analysis.ok
    doc.undo_stack.undo()
    assert doc.project.to_json() == before


def test_an_untied_file_loads_its_table_not_its_old_head(tmp_path):
    """Fine-tuning a tied model from an untied one: the embedding's table is the weight."""
    torch.manual_seed(0)
    untied = layerlab.build_model(tied_graph(tie_weight=""))
    save_weights(untied, tmp_path / "untied.safetensors")
    model = layerlab.build_model(tied_graph())
    report = load_weights(model, tmp_path / "untied.safetensors")
    assert report.lines() == ["loaded 3 tensor(s)", "skipped head.weight: tied to "
                              "emb.token.weight in the model, whose value was loaded"]
    assert torch.equal(model.head.weight, untied.emb.token.weight)
