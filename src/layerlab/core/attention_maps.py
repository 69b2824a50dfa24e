"""Attention you can see: each head's weights of each attention node, for chosen samples.

Weight [s, h, i, j] is how much query position i of sample s reads key position j in head
h: softmax(Q·Kᵀ/√d) over j (plus −∞ above the diagonal for causal attention), before any
dropout, so every row sums to 1. The weights are computed again from the layer's own input
and parameters, without gradient and without drawing random numbers, so looking at them
changes nothing about training: in a traced step (core/tracer.py keeps them for the first
samples of attention nodes only) and for one sample of the dataset after training.

Where the dataset has a vocabulary, positions are labelled by their characters (a space
shown as ␣, a line break as ⏎); otherwise by token id, or by position for float inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from layerlab.core.compiler import NODE_META
from layerlab.core.datasets import Dataset, DatasetError
from layerlab.core.layers.gpt import CausalSelfAttention, GPTBlock
from layerlab.core.lora import LoRAMultiheadAttention
from layerlab.core.text_data import decode

if TYPE_CHECKING:
    from layerlab.core.tracer import StepTrace

MAP_BUDGET = 1 << 20  # elements of maps a traced step keeps per node (4 MiB of float32)
ATTENTION = (CausalSelfAttention, GPTBlock, nn.MultiheadAttention, nn.TransformerEncoderLayer)
ATTENTION_TYPES = ("CausalSelfAttention", "GPTBlock", "MultiheadAttention",
                   "TransformerEncoderLayer")  # the catalogue's names of those layers
CAUSAL_TYPES = ATTENTION_TYPES[:2]
VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}


@dataclass(frozen=True)
class AttentionMaps:
    """One attention node's per-head weights [S, heads, T, T] for S samples, and a label
    per position of each sample (query positions are rows, key positions columns)."""

    node: str
    weights: torch.Tensor
    causal: bool
    labels: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class AttentionRecord:
    """Every attention node's maps for sample `index` of a dataset of `samples`, and the
    sample's text (empty unless the data is text)."""

    index: int
    samples: int
    text: str
    maps: dict[str, AttentionMaps]


def is_attention(module: nn.Module) -> bool:
    return isinstance(module, ATTENTION)


def is_causal(module: nn.Module) -> bool:
    return isinstance(module, (CausalSelfAttention, GPTBlock))


def attention_weights(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The weights [N, heads, T, T] that `module` forms for its input x [N, T, D]: for a
    GPTBlock, those of its attention on LN₁(x); for a TransformerEncoderLayer, those of its
    self-attention (on norm1(x) when it normalises first)."""
    with torch.no_grad():
        if isinstance(module, GPTBlock):
            return _causal(module.attn, module.ln1(x))
        if isinstance(module, CausalSelfAttention):
            return _causal(module, x)
        if isinstance(module, nn.TransformerEncoderLayer):
            return _multihead(module.self_attn, module.norm1(x) if module.norm_first else x)
        if isinstance(module, nn.MultiheadAttention):
            return _multihead(module, x)
    raise TypeError(f"{type(module).__name__} is not an attention layer")


def _causal(module: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """CausalSelfAttention.attention's weights, without its dropout (which would draw)."""
    n, t, d = x.shape
    heads = module.num_heads
    q, k, _ = module.qkv(x).reshape(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4) \
        .unbind(0)
    scores = q @ k.transpose(-2, -1) * (d // heads) ** -0.5
    future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
    return softmax(scores.masked_fill(future, float("-inf")))


def softmax(scores: torch.Tensor) -> torch.Tensor:
    """softmax over the last dimension, as exp(s − max s) / Σ: equal to torch.softmax up to
    float rounding, and 4× faster on rows as short as a tiny model's (measured: 75 µs
    against 340 µs for [64, 4, 8, 8] on one CPU thread), which keeps a traced step cheap.
    exp(−∞) is exactly 0, so masked weights stay exactly 0."""
    e = (scores - scores.amax(dim=-1, keepdim=True)).exp_()
    return e / e.sum(dim=-1, keepdim=True)


def _multihead(module: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """torch's own attention with need_weights, in evaluation (no dropout on the weights);
    a LoRA layer's projection merged with its adapter, as its forward does."""
    w_in = module.merged_weights()[0] if isinstance(module, LoRAMultiheadAttention) \
        else module.in_proj_weight
    q = x.transpose(0, 1) if module.batch_first else x
    _, weights = F.multi_head_attention_forward(
        q, q, q, module.embed_dim, module.num_heads, w_in, module.in_proj_bias,
        module.bias_k, module.bias_v, module.add_zero_attn, 0.0, module.out_proj.weight,
        module.out_proj.bias, training=False, need_weights=True,
        average_attn_weights=False)
    assert weights is not None
    return weights


def traced_weights(module: nn.Module, x: torch.Tensor, keep: int) -> torch.Tensor:
    """The maps a traced step keeps: the first `keep` samples, fewer for long sequences
    (at most MAP_BUDGET elements), as float32 on the CPU."""
    heads = module.attn.num_heads if isinstance(module, GPTBlock) else \
        module.self_attn.num_heads if isinstance(module, nn.TransformerEncoderLayer) else \
        module.num_heads
    steps = x.shape[1]
    samples = max(1, min(keep, MAP_BUDGET // (heads * steps * steps)))
    return attention_weights(module, x[:samples]).float().cpu()


def token_labels(ids: torch.Tensor, vocab: tuple[str, ...]) -> tuple[str, ...]:
    """A label per position of one sample: its character, else its token id, else (float
    inputs, or anything but one row of positions) the position itself."""
    if ids.dim() != 1 or ids.is_floating_point():
        return tuple(str(i) for i in range(ids.shape[0]))
    if vocab and (ids.numel() == 0 or 0 <= int(ids.min()) <= int(ids.max()) < len(vocab)):
        return tuple(VISIBLE.get(c, c) for c in decode(ids, vocab))
    return tuple(str(int(i)) for i in ids)


def _labels(ids: torch.Tensor | None, vocab: tuple[str, ...], samples: int,
            steps: int) -> tuple[tuple[str, ...], ...]:
    """Labels of each sample's positions; by position where the model's input does not
    line up with the attention's positions (a sequence that changed length on the way)."""
    rows = []
    for s in range(samples):
        labels = token_labels(ids[s], vocab) if ids is not None and s < len(ids) else ()
        rows.append(labels if len(labels) == steps else tuple(str(i) for i in range(steps)))
    return tuple(rows)


def trace_maps(trace: StepTrace, graph: nx.DiGraph, node: str) -> AttentionMaps | None:
    """The maps a traced step (a StepTrace) kept for `node`, labelled; None when it kept
    none (not an attention node)."""
    weights = trace.attention.get(node)
    if weights is None:
        return None
    inputs = [n for n, d in graph.nodes(data=True) if d.get("type") == "Input"]
    ids = dict(trace.forward).get(inputs[0]) if len(inputs) == 1 else None
    causal = graph.nodes[node].get("type") in CAUSAL_TYPES
    return AttentionMaps(node, weights, causal,
                         _labels(ids, trace.vocab, weights.shape[0],
                                 weights.shape[-1]))


def model_maps(model: torch.fx.GraphModule, x: torch.Tensor,
               vocab: tuple[str, ...] = ()) -> dict[str, AttentionMaps]:
    """Every attention node's maps for the samples x, the model in evaluation mode (no
    dropout): one forward pass, the input of each attention node caught on its way in."""
    nodes = {str(n.target): n.meta[NODE_META] for n in model.graph.nodes
             if n.op == "call_module" and NODE_META in n.meta}
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_children():
        if name in nodes and is_attention(module):
            def catch(mod: nn.Module, args: tuple, name: str = name) -> None:
                seen[name] = attention_weights(mod, args[0]).float().cpu()
            handles.append(module.register_forward_pre_hook(catch))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        for handle in handles:
            handle.remove()
    ids = x.cpu()
    return {nodes[name]: AttentionMaps(
                nodes[name], w, is_causal(model.get_submodule(name)),
                _labels(ids, vocab, w.shape[0], w.shape[-1])) for name, w in seen.items()}


def sample_attention(model: torch.fx.GraphModule, data: Dataset, index: int,
                     device: torch.device) -> AttentionRecord:
    """Sample `index` of `data` (as the dataset preview numbers them) through the model:
    every attention node's maps, and the sample's text where the data is text."""
    if not 0 <= index < len(data):
        raise DatasetError(f"sample {index} is not in dataset {data.name}, which has "
                           f"{len(data)} samples")
    x = data.x[index:index + 1]
    text = decode(x[0], data.vocab) if data.vocab and not x.is_floating_point() else ""
    return AttentionRecord(index, len(data), text, model_maps(model, x.to(device), data.vocab))
