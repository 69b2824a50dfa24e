"""Let a trained next-token model write: one token at a time, each drawn from the model's
distribution for the next position (or the most likely one), with its probability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


class GenerateError(ValueError):
    """A generation that cannot run; one sentence for a person."""


@dataclass(frozen=True)
class Generated:
    tokens: tuple[int, ...]  # the new tokens, prompt excluded
    probabilities: tuple[float, ...]  # p(token | everything before it), temperature 1


def _next_scores(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The model's scores for the token after `ids` [T]: its output is [1, V, T] (classes
    first, as CrossEntropyLoss reads them) or [1, T, V]; a square [1, T, T] is read classes
    first."""
    out = model(ids.unsqueeze(0))
    steps = len(ids)
    if out.dim() != 3 or steps not in out.shape[1:]:
        raise GenerateError(f"the model gives {list(out.shape[1:])} for a sequence of "
                            f"{steps} tokens; generation needs a score per vocabulary entry "
                            "at each position")
    return out[0, :, -1] if out.shape[2] == steps else out[0, -1, :]


@torch.no_grad()
def generate(model: torch.nn.Module, prompt: Sequence[int], n: int, *, seed: int = 0,
             temperature: float = 1.0, context: int | None = None,
             on_token: Callable[[int, float], None] | None = None) -> Generated:
    """`n` tokens after `prompt`, the model in evaluation mode. Temperature 0 takes the most
    likely token; above 0 it draws from softmax(scores / temperature) with a generator
    seeded by `seed`, so the same seed writes the same tokens. The model reads at most the
    last `context` tokens (its Input's length). Each token's probability is the model's own,
    at temperature 1. `on_token(token, probability)` hears each token as it is drawn (the
    window shows them as they come)."""
    if not prompt:
        raise GenerateError("the prompt is empty; generation needs at least one token")
    if temperature < 0:
        raise GenerateError(f"temperature must be 0 or more, not {temperature:g}")
    device = next(model.parameters()).device
    ids = torch.tensor(list(prompt), dtype=torch.int64, device=device)
    draw = torch.Generator(device=device).manual_seed(seed)
    tokens: list[int] = []
    chances: list[float] = []
    was = model.training
    model.eval()
    try:
        for _ in range(n):
            scores = _next_scores(model, ids if context is None else ids[-context:]).float()
            probabilities = torch.softmax(scores, dim=0)
            if temperature == 0:
                token = int(scores.argmax())
            else:
                weights = torch.softmax(scores / temperature, dim=0)
                token = int(torch.multinomial(weights, 1, generator=draw))
            tokens.append(token)
            chances.append(float(probabilities[token]))
            if on_token is not None:
                on_token(token, chances[-1])
            ids = torch.cat([ids, ids.new_tensor([token])])
    finally:
        model.train(was)
    return Generated(tuple(tokens), tuple(chances))
