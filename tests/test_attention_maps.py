"""Attention maps (core/attention_maps.py): what a traced step keeps and what Show Attention
computes, checked against softmax(QKᵀ/√d) by hand and against torch's own weights."""

from __future__ import annotations

import math

import pytest
import torch

import layerlab
from layerlab.core.attention_maps import (
    MAP_BUDGET,
    sample_attention,
    token_labels,
    trace_maps,
    traced_weights,
)
from layerlab.core.datasets import DatasetError, load_dataset
from layerlab.core.insight import trace_sample
from layerlab.core.layers.gpt import LoRACausalSelfAttention
from layerlab.core.lora import LoRAMultiheadAttention
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.text_data import ADDITION_VOCAB
from layerlab.core.trainer import Trainer

from helpers import chain_graph

ALL_FOUR = (("TokenPositionEmbedding", {"num_embeddings": 12, "embedding_dim": 8,
                                        "max_len": 9}),
            ("CausalSelfAttention", {"num_heads": 2, "dropout": 0.2}),
            ("GPTBlock", {"num_heads": 4, "dropout": 0.2}),
            ("MultiheadAttention", {"num_heads": 2, "dropout": 0.2}),
            ("TransformerEncoderLayer", {"nhead": 2, "dim_feedforward": 16,
                                         "norm_first": True}),
            ("Linear", {"out_features": 12}), ("Transpose", {"dim0": 1, "dim1": 2}))


def four_attentions():
    """n1 causal attention, n2 GPT block, n3 torch's attention, n4 torch's encoder layer."""
    torch.manual_seed(0)
    g = chain_graph([7], *ALL_FOUR, dtype="int64", loss="CrossEntropyLoss")
    return g, layerlab.build_model(g)


def caught_inputs(model):
    """node → its input, caught on the way in at each forward (handles to remove)."""
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: seen.__setitem__(n, a[0]))
             for n, m in model.named_children()]
    return seen, hooks


def inputs_of(model, x):
    """Each node's input, from an evaluation forward pass."""
    seen, hooks = caught_inputs(model)
    model.eval()
    with torch.no_grad():
        model(x)
    model.train()
    for h in hooks:
        h.remove()
    return seen


def by_hand(x, w, b, heads):
    """softmax(Q·Kᵀ/√d + M) per head, M = −∞ above the diagonal, from the packed
    [W_Q; W_K; W_V] and its bias."""
    n, t, d = x.shape
    q, k, _ = (x @ w.T + b).chunk(3, dim=-1)
    q = q.reshape(n, t, heads, d // heads).transpose(1, 2)
    k = k.reshape(n, t, heads, d // heads).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    future = torch.ones(t, t, dtype=torch.bool).triu(1)
    return torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)


def test_a_traced_step_keeps_each_attention_nodes_maps_equal_to_the_layers_own():
    g, model = four_attentions()
    x = torch.randint(0, 12, (5, 7))
    seen, _ = caught_inputs(model)  # the inputs of the step itself (dropout's masks)
    trace = layerlab.trace_step(g, model, x, torch.randint(0, 12, (5, 7)), keep=3)
    assert set(trace.attention) == {"n1", "n2", "n3", "n4"}
    ins = {n: t[:3].detach() for n, t in seen.items()}
    m1, m2, m3, m4 = (model.get_submodule(n) for n in ("n1", "n2", "n3", "n4"))
    expected = {
        "n1": by_hand(ins["n1"], m1.qkv.weight, m1.qkv.bias, 2),
        "n2": by_hand(m2.ln1(ins["n2"]), m2.attn.qkv.weight, m2.attn.qkv.bias, 4),
        "n3": m3.eval()(ins["n3"], ins["n3"], ins["n3"], need_weights=True,
                        average_attn_weights=False)[1],
        "n4": m4.self_attn.eval()(*[m4.norm1(ins["n4"])] * 3, need_weights=True,
                                  average_attn_weights=False)[1],
    }
    for node, weights in expected.items():
        kept = trace.attention[node]
        assert kept.shape == (3, weights.shape[1], 7, 7)
        torch.testing.assert_close(kept, weights.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(kept.sum(-1), torch.ones(kept.shape[:-1]))
    # the layer's own forward returns the same weights in evaluation
    m1.eval()
    torch.testing.assert_close(trace.attention["n1"], m1.attention(ins["n1"])[1].detach(),
                               rtol=0, atol=1e-6)


def test_causal_maps_are_exactly_zero_above_the_diagonal_and_labelled_by_token():
    g, model = four_attentions()
    x = torch.randint(0, 12, (2, 7))
    trace = layerlab.trace_step(g, model, x, torch.randint(0, 12, (2, 7)))
    trace.vocab = ADDITION_VOCAB
    for node in ("n1", "n2"):
        maps = trace_maps(trace, g, node)
        assert maps.causal
        above = torch.ones(7, 7, dtype=torch.bool).triu(1)
        assert (maps.weights[..., above] == 0).all()
        assert (maps.weights[..., ~above] > 0).all()
        assert maps.labels[1] == tuple(ADDITION_VOCAB[i] for i in x[1])
    assert not trace_maps(trace, g, "n3").causal
    assert (trace_maps(trace, g, "n3").weights[..., above] > 0).all()  # sees ahead
    assert trace_maps(trace, g, "n5") is None


def test_recording_maps_changes_nothing_about_the_step():
    """The maps are formed without drawing a random number: the dropout masks, the loss and
    the gradients of a traced step are those of a plain one."""
    g, model = four_attentions()
    plain = layerlab.build_model(g)
    plain.load_state_dict(model.state_dict())
    x, y = torch.randint(0, 12, (4, 7)), torch.randint(0, 12, (4, 7))
    torch.manual_seed(5)
    trace = layerlab.trace_step(g, model, x, y)
    torch.manual_seed(5)
    loss = torch.nn.functional.cross_entropy(plain(x), y)
    loss.backward()
    assert float(trace.loss) == float(loss.detach())
    for key, param in plain.named_parameters():
        torch.testing.assert_close(trace.param_grads[key], param.grad, rtol=0, atol=0)


def test_long_sequences_keep_maps_for_fewer_samples():
    attention = torch.nn.MultiheadAttention(8, 4, batch_first=True)
    steps = 300
    x = torch.randn(8, steps, 8)
    kept = traced_weights(attention, x, keep=8)
    assert kept.shape == (MAP_BUDGET // (4 * steps * steps), 4, steps, steps)


def test_a_sample_of_a_text_dataset_is_labelled_by_its_characters():
    g = chain_graph([8], *ALL_FOUR[:3], ("Linear", {"out_features": 12}),
                    ("Transpose", {"dim0": 1, "dim1": 2}), dtype="int64",
                    loss="CrossEntropyLoss")
    g.nodes["n0"]["params"]["embedding_dim"] = 8
    model = layerlab.build_model(g)
    data = load_dataset("addition", {"n_samples": 20, "seed": 3})
    record = sample_attention(model, data, 7, torch.device("cpu"))
    text = "".join(ADDITION_VOCAB[i] for i in data.x[7])
    assert record.index == 7 and record.text == text and len(text) == 8
    assert set(record.maps) == {"n1", "n2"}
    ins = inputs_of(model, data.x[7:8])
    block = model.get_submodule("n2")
    torch.testing.assert_close(record.maps["n2"].weights, by_hand(
        block.ln1(ins["n2"]), block.attn.qkv.weight, block.attn.qkv.bias, 4).detach(),
        rtol=0, atol=1e-6)
    assert record.maps["n1"].labels == (tuple(text),)
    with pytest.raises(DatasetError, match="sample 20 is not in dataset addition"):
        sample_attention(model, data, 20, torch.device("cpu"))


def test_token_labels_show_spaces_and_fall_back_to_ids_or_positions():
    assert token_labels(torch.tensor([0, 1, 2]), ("a", " ", "\n")) == ("a", "␣", "⏎")
    assert token_labels(torch.tensor([4, 1]), ("a", "b")) == ("4", "1")
    assert token_labels(torch.randn(3), ()) == ("0", "1", "2")


def test_lora_layers_show_the_attention_their_adapters_make():
    """A trained adapter (B ≠ 0) changes the maps: they follow the merged projections."""
    torch.manual_seed(1)
    causal = LoRACausalSelfAttention(8, 2, rank=2)
    mha = LoRAMultiheadAttention(8, 2, batch_first=True, rank=2)
    with torch.no_grad():
        for p in (causal.qkv.lora_B, mha.in_proj_lora_B):
            p.normal_()
    x = torch.randn(3, 5, 8)
    qkv = causal.qkv
    torch.testing.assert_close(traced_weights(causal, x, 3), by_hand(
        x, qkv.merged_weight(), qkv.bias, 2).detach(), rtol=0, atol=1e-6)
    with torch.no_grad():
        plain = by_hand(x, qkv.weight, qkv.bias, 2)
    assert (traced_weights(causal, x, 3) - plain).abs().max() > 0.01
    torch.testing.assert_close(traced_weights(mha, x, 3), mha.eval()(
        x, x, x, need_weights=True, average_attn_weights=False)[1].detach(), rtol=0, atol=1e-6)


def test_the_trainers_traces_label_positions_by_the_datasets_characters():
    """A step traced in training and a sample traced from the preview both carry the
    vocabulary, so the step-through labels its maps by character."""
    g = chain_graph([8], *ALL_FOUR[:3], ("Linear", {"out_features": 12}),
                    ("Transpose", {"dim0": 1, "dim1": 2}), dtype="int64",
                    loss="CrossEntropyLoss")
    project = Project(g)
    project.training.update(dataset={"name": "addition", "options": {"n_samples": 32}},
                            batch_size=8)
    trainer = Trainer(project, settings_from(project.training, device="cpu"))
    step = trainer.trace_next_batch(keep=2)
    sample = trace_sample(g, trainer.model, trainer.objective, trainer.data, 5,
                          torch.device("cpu"))
    for trace, ids in ((step, step.output("x")[1]), (sample, trainer.data.x[5])):
        assert trace.vocab == ADDITION_VOCAB
        assert trace_maps(trace, g, "n2").labels[-1] == tuple(ADDITION_VOCAB[i] for i in ids)
