"""A GPTBlock node opened into its parts, as a group of ordinary nodes that compute exactly
what the block computes: LayerNorm, CausalSelfAttention, the residual Add, LayerNorm, the
MLP (Linear, GELU, Linear) and the second Add, with Dropout nodes on the two residual
branches when the block has dropout. The block's trained weights carry over by key.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import networkx as nx

from layerlab.core.groups import KEY
from layerlab.core.shapes import analyze

# the block's submodule → the part's id suffix (state-dict keys <node>.<sub>.… → <node>_<sub>.…)
SUBMODULES = ("ln1", "attn", "ln2", "fc", "proj")


def _parts(p: dict[str, Any], dim: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(suffix, type, params) in the order the block runs them; the block's `init` goes to
    its weighted parts, its LoRA adapters to the attention (and with lora_mlp to the MLP's
    Linears)."""
    width = p.get("dim_feedforward") or 4 * dim
    bias, eps, drop = p.get("bias", True), p.get("layer_norm_eps", 1e-5), p.get("dropout", 0.0)
    init = {"init": p["init"]} if "init" in p else {}
    lora = {k: p[k] for k in ("lora_rank", "lora_alpha") if k in p} if p.get("lora_rank") \
        else {}
    mlp = {**init, **(lora if p.get("lora_mlp") else {})}

    def dropout(suffix: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [(suffix, "Dropout", {"p": drop})] if drop else []

    return [("ln1", "LayerNorm", {"eps": eps}),
            ("attn", "CausalSelfAttention", {"num_heads": p["num_heads"], "dropout": drop,
                                             "bias": bias, **init, **lora}),
            *dropout("drop1"), ("res1", "Add", {}), ("ln2", "LayerNorm", {"eps": eps}),
            ("fc", "Linear", {"out_features": width, "bias": bias, **mlp}), ("act", "GELU", {}),
            ("proj", "Linear", {"out_features": dim, "bias": bias, **mlp}),
            *dropout("drop2"), ("res2", "Add", {})]


def _frozen(block: dict[str, Any], suffix: str) -> dict[str, bool]:
    """A part kept out of training where the block kept its weights: all of a frozen
    block; under LoRA, the LayerNorms, and the MLP unless it has adapters of its own."""
    p = block.get("params", {})
    kept = ("ln1", "ln2") if p.get("lora_mlp") else ("ln1", "ln2", "fc", "proj")
    return {"frozen": True} if block.get("frozen") or (p.get("lora_rank") and suffix in kept) \
        else {}


def open_block(graph: nx.DiGraph, node: str) -> tuple[nx.DiGraph, dict[str, str]]:
    """A copy of `graph` with GPTBlock `node` replaced by its parts, each in group `node`
    (ids `<node>_ln1`, `<node>_attn`, …), and how the block's state-dict keys map to the
    parts' keys. The caller adds the group's own data (groups.new_group)."""
    data = graph.nodes[node]
    if data.get("type") != "GPTBlock":
        raise ValueError(f"{node} is a {data.get('type')}, not a GPTBlock")
    shape = analyze(graph).shapes.get(node)
    if shape is None:
        raise ValueError(f"{node}'s input shape is not known, so its parts cannot be sized")
    (source, edge), = [(s, d) for s, _, d in graph.in_edges(node, data=True)]
    out = nx.DiGraph(**copy.deepcopy(graph.graph))
    made: dict[str, str] = {}
    for n, attrs in graph.nodes(data=True):  # the parts where the block was: check,
        if n != node:  #                         summaries and exports list them in order
            out.add_node(n, **copy.deepcopy(attrs))
            continue
        x, y = attrs.get("pos", [0, 0])
        for k, (suffix, kind, params) in enumerate(_parts(data.get("params", {}), shape[-1])):
            made[suffix] = f"{node}_{suffix}"
            out.add_node(made[suffix], type=kind, params=params, pos=[x, y + 90 * k],
                         **{KEY: node}, **_frozen(data, suffix))
    out.add_edges_from((a, b, copy.deepcopy(d)) for a, b, d in graph.edges(data=True)
                       if node not in (a, b))
    side = {k: v for k, v in edge.items() if k == "out_port"}  # the source's output
    chain = [made[s] for s in ("ln1", "attn", "drop1") if s in made]
    out.add_edge(source, chain[0], **side)
    out.add_edges_from(itertools.pairwise(chain))
    out.add_edge(source, made["res1"], port=0, **side)
    out.add_edge(chain[-1], made["res1"], port=1)
    mlp = [made[s] for s in ("res1", "ln2", "fc", "act", "proj", "drop2") if s in made]
    out.add_edges_from(itertools.pairwise(mlp))
    out.add_edge(made["res1"], made["res2"], port=0)
    out.add_edge(mlp[-1], made["res2"], port=1)
    for _, target, attrs in graph.out_edges(node, data=True):
        out.add_edge(made["res2"], target, **copy.deepcopy(attrs))
    return out, {f"{node}.{sub}.": f"{node}_{sub}." for sub in SUBMODULES}


def rename_weights(state: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """A state dict of the block's graph with its keys as the opened graph names them."""
    renamed = {}
    for key, value in state.items():
        prefix = next((p for p in mapping if key.startswith(p)), None)
        renamed[key if prefix is None else mapping[prefix] + key[len(prefix):]] = value
    return renamed
