"""A trained model writing text for the window: what must hold before it can (a text
dataset, the next-token task, a prompt in its characters, weights trained on this very
graph), each refusal one sentence that says what to do; and a trained model's weights
carried to the same model drawn otherwise (a GPTBlock opened into its parts, and back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import networkx as nx
import torch

from layerlab.core.compiler import checked
from layerlab.core.datasets import Dataset
from layerlab.core.generate import Generated, GenerateError, generate
from layerlab.core.gpt_parts import rename_weights
from layerlab.core.groups import KEY as GROUP_KEY
from layerlab.core.text_data import encode

# how a graph is drawn, not what it computes
_VIEW_KEYS = frozenset({"pos", GROUP_KEY, "bends"})


def generation_problem(data: Dataset) -> str | None:
    """Why a model trained on `data` cannot write text, or None when it can."""
    if not data.vocab:
        return (f"Dataset {data.name} is not text, so the model has no characters to write: "
                "choose a text dataset (addition, reverse or text) with the next-token task "
                "and train the model.")
    if data.y.dim() < 2:
        return (f"This model classifies whole sequences of {data.name} rather than "
                "predicting the next character: set the dataset's task to next-token and "
                "train it again.")
    return None


def prompt_tokens(prompt: str, vocab: tuple[str, ...]) -> list[int]:
    """The prompt's token ids; GenerateError names the characters the vocabulary lacks."""
    if not prompt:
        raise GenerateError("The prompt is empty: type at least one character for the model "
                            f"to continue (from {''.join(vocab)!r}).")
    missing = list(dict.fromkeys(c for c in prompt if c not in vocab))
    if missing:
        names = ", ".join(repr(c) for c in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise GenerateError(f"The prompt's character{'s' * (len(missing) > 1)} {names} "
                            f"{verb} not in the model's vocabulary {''.join(vocab)!r}; use "
                            "only those characters.")
    return encode(prompt, vocab)


def write(model: torch.nn.Module, data: Dataset, graph: nx.DiGraph, prompt: str, n: int, *,
          seed: int, temperature: float,
          on_token: Callable[[int, float], None] | None = None) -> Generated:
    """`n` tokens after `prompt` from `model` (built from `graph`, trained on `data`), as
    generate() writes them, reading at most the Input's length."""
    problem = generation_problem(data)
    if problem is not None:
        raise GenerateError(problem)
    ids = prompt_tokens(prompt, data.vocab)
    analysis = checked(graph)
    assert analysis.input_node is not None
    context = analysis.shapes[analysis.input_node][0]
    return generate(model, ids, n, seed=seed, temperature=temperature, context=context,
                    on_token=on_token)


def _design(graph: nx.DiGraph) -> tuple[list[Any], list[Any]]:
    nodes = [(n, {k: v for k, v in d.items() if k not in _VIEW_KEYS})
             for n, d in graph.nodes(data=True)]
    edges = [(u, v, {k: x for k, x in d.items() if k not in _VIEW_KEYS})
             for u, v, d in graph.edges(data=True)]
    return nodes, edges


def same_model(a: nx.DiGraph, b: nx.DiGraph) -> bool:
    """Whether two graphs build the same model: where nodes sit and which group they are
    drawn in do not count."""
    return _design(a) == _design(b)


def carry_weights(source: torch.nn.Module, target: torch.nn.Module,
                  mapping: dict[str, str]) -> None:
    """Load `source`'s weights into `target`, their keys renamed by prefix (`mapping`, as
    gpt_parts.open_block gives it, or its inverse); every key must find its place."""
    target.load_state_dict(rename_weights(source.state_dict(), mapping), strict=True)
