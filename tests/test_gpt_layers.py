"""The GPT layers against torch written by hand: causal attention is masked attention (and
torch's own scaled_dot_product_attention with is_causal), the block is pre-norm GPT-2's,
the chain rule through them agrees with autograd, the bundled tiny GPT learns, and
generation is deterministic with a seed."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import layerlab
from explain_twins import check
from layerlab.cli import main
from layerlab.core.explain import explain_node
from layerlab.core.generate import GenerateError, generate
from layerlab.core.gpt_parts import open_block, rename_weights
from layerlab.core.groups import members
from layerlab.core.layers.gpt import CausalSelfAttention, GPTBlock, TokenPositionEmbedding
from layerlab.core.settings import settings_from
from layerlab.core.text_data import ADDITION_VOCAB, decode, encode
from layerlab.core.trainer import Trainer
from layerlab.core.weights import load_weights, save_weights

from conftest import EXAMPLES
from helpers import chain_graph


def masked_attention(x, w, heads, dropout=0.0):
    """Causal self-attention as one writes it in torch: the weights [N, H, T, T] too."""
    n, t, d = x.shape
    q, k, v = (z.reshape(n, t, heads, d // heads).transpose(1, 2)
               for z in F.linear(x, w["qkv.weight"], w.get("qkv.bias")).split(d, dim=-1))
    scores = q @ k.transpose(-2, -1) / math.sqrt(d // heads)
    allowed = torch.tril(torch.ones(t, t, dtype=torch.bool))
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    mixed = F.dropout(weights, dropout, training=dropout > 0) @ v
    out = F.linear(mixed.transpose(1, 2).reshape(n, t, d), w["out_proj.weight"],
                   w.get("out_proj.bias"))
    return out, weights


def gpt_block(x, w, heads, dropout=0.0):
    """GPT-2's block: pre-norm, two residuals, a GELU MLP."""
    d = x.shape[-1]

    def drop(t):
        return F.dropout(t, dropout, training=dropout > 0)

    attn = {k.removeprefix("attn."): t for k, t in w.items() if k.startswith("attn.")}
    h = x + drop(masked_attention(F.layer_norm(x, (d,), w["ln1.weight"], w["ln1.bias"]),
                                  attn, heads, dropout)[0])
    hidden = F.gelu(F.linear(F.layer_norm(h, (d,), w["ln2.weight"], w["ln2.bias"]),
                             w["fc.weight"], w["fc.bias"]))
    return h + drop(F.linear(hidden, w["proj.weight"], w["proj.bias"]))


def weights_of(module):
    return dict(module.named_parameters())


def test_causal_attention_is_masked_attention_and_torchs_causal_sdpa():
    torch.manual_seed(0)
    layer = CausalSelfAttention(8, 2).eval()
    x = torch.randn(3, 5, 8)
    out, weights = layer.attention(x)
    twin_out, twin_weights = masked_attention(x, weights_of(layer), 2)
    torch.testing.assert_close(out, twin_out)
    torch.testing.assert_close(weights, twin_weights)
    q, k, v = (z.reshape(3, 5, 2, 4).transpose(1, 2) for z in layer.qkv(x).split(8, dim=-1))
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, layer.out_proj(sdpa.transpose(1, 2).reshape(3, 5, 8)))
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 5))  # per query
    above = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    assert (weights[..., above] == 0).all() and (weights[..., ~above] > 0).all()


def test_no_position_reads_a_later_one():
    torch.manual_seed(1)
    block = GPTBlock(8, 2, 16).eval()
    x = torch.randn(2, 6, 8)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 2, 8)
    torch.testing.assert_close(block(changed)[:, :4], block(x)[:, :4])
    assert not torch.allclose(block(changed)[:, 4:], block(x)[:, 4:])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gpt_block_equals_a_hand_written_twin(dropout):
    torch.manual_seed(2)
    block = GPTBlock(8, 2, 16, dropout=dropout)
    x = torch.randn(3, 5, 8)
    torch.manual_seed(7)
    out = block(x)
    torch.manual_seed(7)  # the twin draws the same dropout masks
    torch.testing.assert_close(out, gpt_block(x, weights_of(block), 2, dropout))


def test_token_position_embedding_adds_the_position_vector_and_reads_shorter_sequences():
    torch.manual_seed(3)
    embed = TokenPositionEmbedding(10, 4, 6)
    ids = torch.randint(0, 10, (2, 6))
    expected = embed.token.weight[ids] + embed.position
    torch.testing.assert_close(embed(ids), expected)
    torch.testing.assert_close(embed(ids[:, :3]), expected[:, :3])


def test_shapes_equal_real_and_refusals_name_the_node():
    g = chain_graph([7], ("TokenPositionEmbedding", {"num_embeddings": 10,
                                                     "embedding_dim": 8, "max_len": 9}),
                    ("CausalSelfAttention", {"num_heads": 4}),
                    ("GPTBlock", {"num_heads": 2, "dim_feedforward": 12}), dtype="int64")
    shapes = layerlab.infer_shapes(g)
    model = layerlab.build_model(g)
    assert tuple(model(torch.randint(0, 10, (2, 7))).shape[1:]) == shapes["n2"] == (7, 8)
    assert model.n2.fc.out_features == 12
    short = chain_graph([7], ("TokenPositionEmbedding", {"num_embeddings": 10,
                                                         "embedding_dim": 6, "max_len": 5}),
                        ("GPTBlock", {"num_heads": 4}), dtype="int64")
    with pytest.raises(layerlab.GraphError) as caught:
        layerlab.infer_shapes(short)
    assert [n for n, _ in caught.value.errors] == ["n0"]
    assert "max_len=5" in caught.value.errors[0][1]
    short.nodes["n0"]["params"]["max_len"] = 7
    with pytest.raises(layerlab.GraphError, match="num_heads=4 must divide the feature "
                                                  "size 6"):
        layerlab.infer_shapes(short)


def sequence_graph(typ, params):
    return chain_graph([5, 8], (typ, params), ("Mean", {"dim": 1}),
                       ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")


@pytest.mark.parametrize("params", [{"num_heads": 2}, {"num_heads": 1, "bias": False},
                                    {"num_heads": 4, "dropout": 0.3}])
def test_chain_rule_through_causal_attention_agrees_with_autograd(params):
    g = sequence_graph("CausalSelfAttention", params)
    e = check(g, torch.randn(4, 5, 8), torch.randint(0, 3, (4,)), "n0",
              lambda x, w: masked_attention(x, w, params["num_heads"],
                                            params.get("dropout", 0.0))[0], seed=3)
    parts = {p.name: p for p in e.parts}
    above = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    assert (parts["masked softmax"].value[..., above] == 0).all()
    assert (parts["scores"].grad[..., above] == 0).all()  # no gradient crosses the mask
    assert (parts["scores"].grad[..., ~above] != 0).any()


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_chain_rule_through_the_gpt_block_agrees_with_autograd(dropout):
    g = sequence_graph("GPTBlock", {"num_heads": 2, "dim_feedforward": 12,
                                    "dropout": dropout})
    e = check(g, torch.randn(4, 5, 8), torch.randint(0, 3, (4,)), "n0",
              lambda x, w: gpt_block(x, w, 2, dropout), seed=5)
    names = [p.name for p in e.parts]
    assert names[0] == "LN₁" and "attention: masked softmax" in names
    assert names[-3:] == ["MLP hidden", "GELU", "MLP output"]


def test_chain_rule_of_the_token_and_position_embedding_agrees_with_autograd():
    g = chain_graph([6], ("TokenPositionEmbedding", {"num_embeddings": 9, "embedding_dim": 4,
                                                     "max_len": 8}),
                    ("Mean", {"dim": 1}), ("Linear", {"out_features": 3}),
                    dtype="int64", loss="CrossEntropyLoss")
    check(g, torch.randint(0, 9, (4, 6)), torch.randint(0, 3, (4,)), "n0",
          lambda x, w: w["token.weight"][x] + w["position"][: x.shape[1]])


def tiny_gpt(**overrides):
    project = layerlab.load_project(EXAMPLES / "tiny-gpt.layerlab.json")
    project.training["dataset"]["options"]["n_samples"] = 640
    return Trainer(project, settings_from(project.training, device="cpu", **overrides))


def test_the_tiny_gpt_example_trains_and_its_loss_falls():
    trainer = tiny_gpt()
    assert trainer.x_train.dtype == torch.int64
    first = trainer.evaluate(trainer.x_train, trainer.y_train)[0]
    for _ in range(12):
        trainer.train_one_batch()
    after = trainer.evaluate(trainer.x_train, trainer.y_train)[0]
    assert after < first - 0.4, (first, after)


def test_generation_is_deterministic_with_a_seed_and_greedy_follows_the_model():
    trainer = tiny_gpt()
    model, prompt = trainer.model, [0, 7, 10, 2, 5, 11]  # "07+25="
    a = generate(model, prompt, 3, seed=4, temperature=1.5, context=8)
    assert a == generate(model, prompt, 3, seed=4, temperature=1.5, context=8)
    assert any(generate(model, prompt, 3, seed=s, temperature=1.5, context=8) != a
               for s in range(5, 15))
    greedy = generate(model, prompt, 3, temperature=0, context=8)
    ids = torch.tensor(prompt)
    model.eval()
    for token, chance in zip(greedy.tokens, greedy.probabilities, strict=True):
        with torch.no_grad():
            p = torch.softmax(model(ids[None])[0, :, -1], dim=0)
        assert token == int(p.argmax()) and chance == pytest.approx(float(p[token]))
        ids = torch.cat([ids, torch.tensor([token])])
    with pytest.raises(GenerateError, match="the prompt is empty"):
        generate(model, [], 2)


def test_generate_on_the_command_line_writes_what_the_model_says(tmp_path, capsys):
    torch.manual_seed(6)
    model = layerlab.build_model(tiny_gpt().project.graph)
    weights = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(weights))
    example = str(EXAMPLES / "tiny-gpt.layerlab.json")
    assert main(["generate", example, "--weights", str(weights), "--prompt", "38+47=",
                 "-n", "3"]) == 0
    made = generate(model, encode("38+47=", ADDITION_VOCAB), 3, temperature=0, context=8)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "38+47=" + decode(list(made.tokens), ADDITION_VOCAB)
    shown = [float(line.split()[-1]) for line in lines[2:]]
    assert shown == pytest.approx(made.probabilities, abs=5e-4)
    assert main(["generate", example, "--weights", str(weights), "--prompt", "3a"]) == 1
    assert capsys.readouterr().err.strip() == \
        "--prompt: 'a' is not in the vocabulary '0123456789+='"


def test_every_node_of_the_tiny_gpt_agrees_with_autograd():
    g = layerlab.load_project(EXAMPLES / "tiny-gpt.layerlab.json").graph
    torch.manual_seed(8)
    model = layerlab.build_model(g)
    x = torch.randint(0, 12, (4, 8))
    trace = layerlab.trace_step(g, model, x, torch.randint(0, 12, (4, 8)), keep=4)
    for node in g:
        e = explain_node(trace, g, node, sample=2)
        assert e.matches or g.nodes[node]["type"] in ("Input", "TokenPositionEmbedding"), \
            (node, e.max_diff)
    embed = explain_node(trace, g, "embed", sample=2)
    for key in ("embed.token.weight", "embed.position"):
        torch.testing.assert_close(embed.param_grads[key], trace.param_grads[key])


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_a_gpt_block_opened_into_a_group_of_its_parts_computes_the_same(dropout):
    g = layerlab.load_project(EXAMPLES / "tiny-gpt.layerlab.json").graph
    g.nodes["block1"]["params"]["dropout"] = dropout
    opened, mapping = open_block(g, "block1")
    assert "block1" not in opened and members(opened, "block1")[:2] == ["block1_ln1",
                                                                        "block1_attn"]
    assert ("block1_drop1" in opened) == bool(dropout)
    assert "block1" in g and list(opened)[2] == "block1_ln1"  # in place; g is unchanged
    with pytest.raises(ValueError, match="norm is a LayerNorm, not a GPTBlock"):
        open_block(g, "norm")
    shapes = layerlab.infer_shapes(opened)
    assert shapes["block1_res2"] == (8, 32) and shapes["block1_fc"] == (8, 128)
    torch.manual_seed(9)
    block, parts = layerlab.build_model(g), layerlab.build_model(opened)
    parts.load_state_dict(rename_weights(block.state_dict(), mapping), strict=True)
    x = torch.randint(0, 12, (3, 8))
    for mode in ("eval", "train"):
        getattr(block, mode)()
        getattr(parts, mode)()
        torch.manual_seed(2)
        expected = block(x)
        torch.manual_seed(2)  # the same dropout masks, drawn in the same order
        torch.testing.assert_close(parts(x), expected)


def test_the_pretrained_body_loads_into_a_sum_checker(tmp_path):
    """Pre-training then fine-tuning: the tiny GPT's weights (max_len 9) fit a classifier
    that reads the whole sum ([9] tokens) and says whether it is correct; only the new
    head is left out, and a step of fine-tuning reaches the body."""
    pretrained = tiny_gpt()
    weights = tmp_path / "gpt.safetensors"
    save_weights(pretrained.model, weights)
    project = layerlab.load_project(EXAMPLES / "tiny-gpt.layerlab.json")
    g = project.graph
    g.nodes["input"]["params"]["shape"] = [9]
    g.remove_node("scores")
    g.add_node("last", type="Select", params={"dim": 1, "index": -1})
    g.nodes["head"]["params"]["out_features"] = 2
    g.add_edges_from([("norm", "last"), ("last", "head"), ("head", "loss")])
    g.remove_edge("norm", "head")
    project.training["dataset"] = {"name": "addition", "validation_split": 0.2,
                                   "options": {"task": "classify", "n_samples": 320}}
    checker = Trainer(project, settings_from(project.training, device="cpu"))
    report = load_weights(checker.model, weights)
    assert {key for key, _ in report.skipped} == {"head.weight", "head.bias"}
    torch.testing.assert_close(checker.model.block1.attn.qkv.weight,
                               pretrained.model.block1.attn.qkv.weight)
    body = checker.model.block1.attn.qkv.weight.detach().clone()
    checker.train_one_batch()  # fine-tuning moves the pre-trained body too
    assert not torch.equal(checker.model.block1.attn.qkv.weight, body)
