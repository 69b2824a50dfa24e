"""Weight tying: a Linear whose weight is an embedding's table (Press & Wolf 2017, "Using
the Output Embedding to Improve Language Models"; GPT-2's output head reads its token
embedding's matrix).

A Linear node with `tie_weight: "embed"` takes the table [num_embeddings, embedding_dim] of
node `embed` (an Embedding or a TokenPositionEmbedding) as its weight [out_features,
in_features]: the compiled model holds one Parameter that both nodes use, so it is counted
once, stepped once by the optimizer, and its gradient is the sum of both uses. The state
dict lists it under both keys (`embed.token.weight`, `head.weight`); safetensors refuses
tensors that share memory, so a weights file holds it once, under the embedding's key, and
loading re-ties it (weights.py). The tied table trains unless either node is frozen (a
frozen node keeps its weights, and the table is both nodes' weights).
"""

from __future__ import annotations

from typing import Any

import networkx as nx
from torch import nn

from layerlab.core.spec import Param

KEY = "tie_weight"
TABLES = {"Embedding": "weight", "TokenPositionEmbedding": "token.weight"}  # inside the node

TIE = Param(
    KEY, "text", "",
    help="Weight tying: the id of an Embedding or TokenPositionEmbedding node whose table "
         "[vocab, d] this layer uses as its weight [out_features, in_features] (as GPT's "
         "output head reads its token embedding): one tensor, trained by both uses. Empty: "
         "a weight of its own.")

Error = tuple[str | None, str]


def ties(graph: nx.DiGraph) -> dict[str, str]:
    """Each node that ties its weight → the node whose table it uses."""
    out = {}
    for node, data in graph.nodes(data=True):
        params = data.get("params")
        target = params.get(KEY) if isinstance(params, dict) else None
        if isinstance(target, str) and target:
            out[node] = target
    return out


def tie_problems(graph: nx.DiGraph, contexts: dict[str, Any]) -> list[Error]:
    """One sentence, naming both nodes, for each tie that cannot be made (`contexts`: the
    analysis's resolved layers; a node without one already has its problem reported)."""
    problems: list[Error] = []
    for node, target in ties(graph).items():
        ctx = contexts.get(node)
        if ctx is None:
            continue
        kind = graph.nodes[target].get("type") if target in graph else None
        if kind not in TABLES:
            what = f"{target} is a {kind}" if kind else f"there is no node {target}"
            problems.append((node, f"{node} can tie its weight only to an Embedding or "
                                   f"TokenPositionEmbedding node, but {what}"))
            continue
        if ctx.params.get("lora_rank"):
            problems.append((node, f"{node} ties its weight to {target}, so it cannot take "
                                   "LoRA adapters (they would freeze the shared table); set "
                                   "lora_rank to 0 or clear tie_weight"))
        table = contexts.get(target)
        if table is None:
            continue
        rows, width = table.params["num_embeddings"], table.params["embedding_dim"]
        out, features = ctx.params["out_features"], ctx.shape[-1]
        if (rows, width) != (out, features):
            problems.append((node, f"{node} cannot use the table of {target} as its weight: "
                                   f"the table is [{rows}, {width}] (num_embeddings × "
                                   f"embedding_dim) but {node}'s weight is [{out}, "
                                   f"{features}] (out_features × input features)"))
    return problems


def tie_weights(graph: nx.DiGraph, modules: nn.Module) -> None:
    """Make each tied node's weight the very Parameter of its embedding's table."""
    for node, target in ties(graph).items():
        table = modules.get_parameter(f"{target}.{TABLES[graph.nodes[target]['type']]}")
        modules.get_submodule(node).weight = table


def shared_numel(graph: nx.DiGraph, contexts: dict[str, Any]) -> dict[str, int]:
    """The numbers each tied node's count leaves out: its weight is its embedding's table,
    counted there (a tie to a node that has no table leaves the weight its own)."""
    return {node: contexts[node].params["out_features"] * contexts[node].shape[-1]
            for node, target in ties(graph).items()
            if node in contexts and target in contexts
            and graph.nodes[target].get("type") in TABLES}


def frozen_with(graph: nx.DiGraph) -> dict[str, list[str]]:
    """The state-dict key of each tied table → every node whose `frozen` freezes it."""
    out: dict[str, list[str]] = {}
    for node, target in ties(graph).items():
        kind = graph.nodes[target].get("type") if target in graph else None
        if kind in TABLES:
            out.setdefault(f"{target}.{TABLES[kind]}", [target]).append(node)
    return out
