"""The compiled model is the network a person would write by hand: same state dict, same
outputs, readable code, each node's initialiser applied."""

import math

import pytest
import torch
from torch import nn

import layerlab

from conftest import EXAMPLES
from helpers import chain_graph


class MLP(nn.Module):
    def __init__(self, n_in, hidden, n_out, act=nn.ReLU, names=("fc1", "relu", "fc2")):
        super().__init__()
        self.names = names
        setattr(self, names[0], nn.Linear(n_in, hidden))
        setattr(self, names[1], act())
        setattr(self, names[2], nn.Linear(hidden, n_out))

    def forward(self, x):
        for name in self.names:
            x = getattr(self, name)(x)
        return x


class Spiral(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.tanh1 = nn.Linear(2, 16), nn.Tanh()
        self.fc2, self.tanh2 = nn.Linear(16, 16), nn.Tanh()
        self.fc3 = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc3(self.tanh2(self.fc2(self.tanh1(self.fc1(x)))))


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(1, 6, 5, padding=2), nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2, self.relu2 = nn.Conv2d(6, 16, 5), nn.ReLU()
        self.pool2, self.flatten = nn.MaxPool2d(2), nn.Flatten()
        self.fc1, self.relu3 = nn.Linear(400, 120), nn.ReLU()
        self.fc2, self.relu4 = nn.Linear(120, 84), nn.ReLU()
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.flatten(self.pool2(self.relu2(self.conv2(x))))
        return self.fc3(self.relu4(self.fc2(self.relu3(self.fc1(x)))))


class ResBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.conv3, self.bn3 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.relu3 = nn.ReLU()
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        a = self.relu1(self.bn1(self.conv1(x)))
        b = self.bn3(self.conv3(self.relu2(self.bn2(self.conv2(a)))))
        return self.fc(self.flatten(self.pool(self.relu3(a + b))))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(17, 32)
        self.encoder = nn.TransformerEncoderLayer(32, 4, 64, 0.1, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


class CausalAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv, self.out_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = (z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2)
                   for z in self.qkv(x).split(d, dim=-1))
        scores = q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5
        later = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        weights = torch.softmax(scores.masked_fill(later, float("-inf")), dim=-1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(n, t, d))


class GPTBlockTwin(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), CausalAttention(d, heads), \
            nn.LayerNorm(d)
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.proj(nn.functional.gelu(self.fc(self.ln2(x))))


class TokensAndPositions(nn.Module):
    def __init__(self, vocab, d, steps):
        super().__init__()
        self.position = nn.Parameter(torch.randn(steps, d))
        self.token = nn.Embedding(vocab, d)

    def forward(self, x):
        return self.token(x) + self.position[: x.shape[1]]


class TinyGPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = TokensAndPositions(12, 32, 9)
        self.block1, self.block2 = GPTBlockTwin(32, 4), GPTBlockTwin(32, 4)
        self.norm, self.head = nn.LayerNorm(32), nn.Linear(32, 12)

    def forward(self, x):
        h = self.norm(self.block2(self.block1(self.embed(x))))
        return self.head(h).transpose(1, 2)


HAND_WRITTEN = {
    "spiral": (Spiral, lambda: torch.randn(5, 2)),
    "mnist-mlp": (lambda: MLP(784, 500, 10), lambda: torch.rand(5, 784)),
    "digits-mlp": (lambda: MLP(64, 500, 10), lambda: torch.rand(5, 64)),
    "lenet5": (LeNet5, lambda: torch.rand(5, 1, 28, 28)),
    "resnet-block": (ResBlock, lambda: torch.rand(5, 1, 8, 8)),
    "tiny-transformer": (TinyTransformer, lambda: torch.randint(0, 17, (5, 64))),
    "tiny-gpt": (TinyGPT, lambda: torch.randint(0, 12, (5, 8))),
}


def test_every_example_has_a_hand_written_twin():
    assert {p.name.removesuffix(".layerlab.json") for p in EXAMPLES.glob("*.json")} == \
        set(HAND_WRITTEN)


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_example_matches_hand_written_module(name):
    make, sample = HAND_WRITTEN[name]
    torch.manual_seed(0)
    reference = make()
    model = layerlab.build_model(layerlab.load_project(EXAMPLES / f"{name}.layerlab.json").graph)
    model.load_state_dict(reference.state_dict(), strict=True)
    assert list(model.state_dict()) == list(reference.state_dict())
    x = sample()
    for mode in ("eval", "train"):
        getattr(model, mode)()
        getattr(reference, mode)()
        torch.manual_seed(1)
        expected = reference(x)
        torch.manual_seed(1)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_code_reads_like_hand_written_pytorch():
    g = layerlab.load_project(EXAMPLES / "resnet-block.layerlab.json").graph
    code = layerlab.build_model(g).code
    assert "conv1 = self.conv1(" in code
    assert "add = relu1 + bn3" in code
    assert "return fc" in code


def test_state_dict_keys_are_node_ids():
    g = layerlab.load_project(EXAMPLES / "tiny-transformer.layerlab.json").graph
    keys = layerlab.build_model(g).state_dict().keys()
    assert "embed.weight" in keys and "encoder.self_attn.in_proj_weight" in keys
    assert "head.bias" in keys


def fan_in_out(w):
    return nn.init._calculate_fan_in_and_fan_out(w)


@pytest.mark.parametrize("scheme", ["xavier_uniform", "xavier_normal", "kaiming_uniform",
                                    "kaiming_normal", "zeros"])
def test_initialisers_follow_their_formulas(scheme):
    torch.manual_seed(0)
    g = chain_graph([400], ("Linear", {"out_features": 300, "init": scheme}))
    layer = layerlab.build_model(g).n0
    w = layer.weight.detach()
    fan_in, fan_out = fan_in_out(w)
    assert torch.count_nonzero(layer.bias) == 0
    expected_std = {
        "xavier_uniform": math.sqrt(2 / (fan_in + fan_out)),
        "xavier_normal": math.sqrt(2 / (fan_in + fan_out)),
        "kaiming_uniform": math.sqrt(2 / fan_in),
        "kaiming_normal": math.sqrt(2 / fan_in),
        "zeros": 0.0,
    }[scheme]
    assert w.std().item() == pytest.approx(expected_std, rel=0.03, abs=1e-12)
    if scheme.endswith("uniform"):
        assert w.abs().max().item() <= math.sqrt(3) * expected_std + 1e-6


def test_default_init_is_torchs():
    g = chain_graph([4], ("Linear", {"out_features": 3}))
    torch.manual_seed(7)
    model = layerlab.build_model(g)
    torch.manual_seed(7)
    reference = nn.Linear(4, 3)
    torch.testing.assert_close(model.n0.weight, reference.weight)
    torch.testing.assert_close(model.n0.bias, reference.bias)


def test_init_reaches_recurrent_and_attention_weights():
    for typ, params in (("LSTM", {"hidden_size": 4}), ("MultiheadAttention", {"num_heads": 2}),
                        ("TransformerEncoderLayer", {"nhead": 2, "dim_feedforward": 8})):
        g = chain_graph([3, 4], (typ, {**params, "init": "zeros"}))
        for name, p in layerlab.build_model(g).n0.named_parameters():
            if p.dim() >= 2 or "bias" in name:
                assert torch.count_nonzero(p) == 0, name


def test_a_graph_with_errors_does_not_compile():
    g = chain_graph([4], ("Linear", {"out_features": -1}))
    with pytest.raises(layerlab.GraphError) as info:
        layerlab.build_model(g)
    assert info.value.errors[0][0] == "n0"


def test_a_layer_too_large_for_memory_is_refused_naming_it(monkeypatch):
    """A field typed with a few digits too many (a GPT's max_len of a billion, a Linear of
    2**44 units): building fails in torch's allocator; the person reads which node and how
    large, and the model's other errors still come through as they are."""
    from layerlab.core.compiler import build_model
    from layerlab.core.errors import GraphError
    from layerlab.core.project import Project
    from layerlab.core.settings import settings_from
    from layerlab.core.trainer import Trainer

    graph = chain_graph([2], ("Linear", {"out_features": 2**44}), ("ReLU", {}),
                        ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    with pytest.raises(GraphError) as caught:
        build_model(graph)
    count = 3 * 2**44  # the weight [2**44, 2] and the bias
    assert caught.value.errors == [("n0", f"its {count:,} parameters ({4 * count / 1e9:,.0f} "
                                          "GB) do not fit in memory; make it smaller")]
    project = Project(graph=graph)
    with pytest.raises(GraphError):  # the window's and `layerlab train`'s way in
        Trainer(project, settings_from(project.training))

    def broken(self, *args, **kwargs):  # when built for real (counting builds on meta)
        if torch.empty(0).device.type != "meta":
            raise RuntimeError("a bug of ours")
        init(self, *args, **kwargs)

    init = nn.ReLU.__init__
    monkeypatch.setattr(nn.ReLU, "__init__", broken)
    with pytest.raises(RuntimeError, match=r"^a bug of ours$"):
        build_model(chain_graph([2], ("ReLU", {}), ("Linear", {"out_features": 2}),
                                loss="CrossEntropyLoss"))
