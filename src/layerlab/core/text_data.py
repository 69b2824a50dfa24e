"""Text that a tiny language model learns on a CPU in minutes, generated here or read from
the user's own UTF-8 file, at the level of characters.

Every sequence is a row of token ids; token id i is character `vocab[i]` (the dataset's
class names), so a model's output scores one class per character. Two tasks:

- next-token prediction: the input is the sequence less its last character, the target the
  sequence less its first — every position is a target (what GPT is pre-trained on);
- classification: the whole sequence in, one label out ("is this sum correct?").

Addition is written with fixed widths ("07+25=032"), so every sample has the same length
and no position is padding.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerlab.core.spec import Param

ADDITION_VOCAB = tuple("0123456789+=")
REVERSE_MARK = ">"
TASKS = ("next-token", "classify")


class TextDataError(Exception):
    """A text dataset that cannot be made; one sentence for a person."""


@dataclass(frozen=True)
class TextData:
    x: torch.Tensor  # (N, T) int64 token ids
    y: torch.Tensor  # (N, T) int64 next tokens, or (N,) int64 labels
    classes: tuple[str, ...]  # the vocabulary (next-token) or the labels (classify)
    vocab: tuple[str, ...]


def encode(text: str, vocab: tuple[str, ...]) -> list[int]:
    """Token ids of `text`; TextDataError names a character the vocabulary lacks."""
    index = {c: i for i, c in enumerate(vocab)}
    missing = sorted({c for c in text if c not in index})
    if missing:
        raise TextDataError(f"{''.join(missing)!r} is not in the vocabulary "
                            f"{''.join(vocab)!r}")
    return [index[c] for c in text]


def decode(ids: list[int] | torch.Tensor, vocab: tuple[str, ...]) -> str:
    return "".join(vocab[int(i)] for i in ids)


def preview_rows(x: torch.Tensor, y: torch.Tensor, vocab: tuple[str, ...],
                 classes: tuple[str, ...]) -> list[list[str]]:
    """(input, target) as text per sample: the next characters, or the label."""
    return [[decode(xi, vocab), decode(yi, vocab) if yi.dim() else classes[int(yi)]]
            for xi, yi in zip(x, y, strict=True)]


def addition_text(a: int, b: int, digits: int, total: int | None = None) -> str:
    """'07+25=032': operands `digits` wide, the sum one wider (it may carry)."""
    return f"{a:0{digits}d}+{b:0{digits}d}={a + b if total is None else total:0{digits + 1}d}"


def _sequences(rows: list[str], vocab: tuple[str, ...], task: str,
               labels: list[int] | None = None,
               label_names: tuple[str, ...] = ()) -> TextData:
    ids = torch.tensor([encode(r, vocab) for r in rows], dtype=torch.int64)
    if task == "next-token":
        return TextData(ids[:, :-1].contiguous(), ids[:, 1:].contiguous(), vocab, vocab)
    assert labels is not None
    return TextData(ids, torch.tensor(labels, dtype=torch.int64), label_names, vocab)


def addition(opts: dict[str, Any]) -> TextData:
    """Sums of two random `digits`-digit numbers. For classification, half the sums are
    made wrong by a random non-zero amount (label 1: the sum is correct)."""
    rng = np.random.default_rng(opts["seed"])
    n, digits = opts["n_samples"], opts["digits"]
    a = rng.integers(0, 10 ** digits, n)
    b = rng.integers(0, 10 ** digits, n)
    if opts["task"] == "next-token":
        rows = [addition_text(int(i), int(j), digits) for i, j in zip(a, b, strict=True)]
        return _sequences(rows, ADDITION_VOCAB, "next-token")
    right = rng.random(n) < 0.5
    top = 2 * 10 ** digits - 1  # the largest sum that fits digits + 1 places
    shift = rng.integers(1, top + 1, n)
    totals = np.where(right, a + b, (a + b + shift) % (top + 1))
    rows = [addition_text(int(i), int(j), digits, int(t))
            for i, j, t in zip(a, b, totals, strict=True)]
    return _sequences(rows, ADDITION_VOCAB, "classify", right.astype(int).tolist(),
                      ("wrong", "right"))


def reverse_vocab(letters: int) -> tuple[str, ...]:
    return (*string.ascii_lowercase[:letters], REVERSE_MARK)


def reverse(opts: dict[str, Any]) -> TextData:
    """'abca>acba': a random word, a mark, the word backwards. For classification, half the
    second halves are another word (label 1: it is the reverse)."""
    rng = np.random.default_rng(opts["seed"])
    n, length, letters = opts["n_samples"], opts["length"], opts["letters"]
    vocab = reverse_vocab(letters)
    words = rng.integers(0, letters, (n, length))
    if opts["task"] == "next-token":
        rows = [_word(w, vocab) + REVERSE_MARK + _word(w[::-1], vocab) for w in words]
        return _sequences(rows, vocab, "next-token")
    right = rng.random(n) < 0.5
    others = rng.integers(0, letters, (n, length))
    tails = [w[::-1] if ok or (o == w[::-1]).all() else o
             for w, o, ok in zip(words, others, right, strict=True)]
    labels = [int((t == w[::-1]).all()) for w, t in zip(words, tails, strict=True)]
    rows = [_word(w, vocab) + REVERSE_MARK + _word(t, vocab)
            for w, t in zip(words, tails, strict=True)]
    return _sequences(rows, vocab, "classify", labels, ("wrong", "right"))


def _word(ids: np.ndarray, vocab: tuple[str, ...]) -> str:
    return "".join(vocab[int(i)] for i in ids)


def text_file(opts: dict[str, Any]) -> TextData:
    """Windows of `context` + 1 characters of a UTF-8 file, every `stride` characters; the
    vocabulary is the file's characters, sorted."""
    if not opts["path"]:
        raise TextDataError("the text dataset needs option path (the UTF-8 file to read)")
    path = Path(opts["path"])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TextDataError(f"{path} is not UTF-8 text (byte {exc.start} cannot be read)") \
            from None
    except OSError as exc:
        raise TextDataError(f"cannot read {path}: {exc.strerror or exc}") from None
    context, stride = opts["context"], opts["stride"]
    if len(text) < context + 1:
        raise TextDataError(f"{path} holds {len(text)} characters, fewer than context + 1 = "
                            f"{context + 1}; lower option context")
    vocab = tuple(sorted(set(text)))
    ids = torch.tensor(encode(text, vocab), dtype=torch.int64)
    windows = ids.unfold(0, context + 1, stride)
    return TextData(windows[:, :-1].contiguous(), windows[:, 1:].contiguous(), vocab, vocab)


def _common(n_samples: int) -> tuple[Param, ...]:
    return (
        Param("n_samples", "int", n_samples, minimum=2, maximum=10_000_000,
              help="Number of sequences."),
        Param("task", "choice", "next-token", choices=TASKS,
              help="next-token: every position's target is the following character; "
                   "classify: the whole sequence, labelled right or wrong."),
        Param("seed", "int", 0, minimum=0, help="Seed of the generator."),
    )


ADDITION_OPTIONS = (
    Param("digits", "int", 2, minimum=1, maximum=9, help="Digits of each operand."),
    *_common(4000),
)
REVERSE_OPTIONS = (
    Param("length", "int", 4, minimum=1, maximum=64, help="Letters in each word."),
    Param("letters", "int", 4, minimum=2, maximum=26, help="Size of the alphabet (a, b, …)."),
    *_common(4000),
)
TEXT_OPTIONS = (
    Param("path", "text", "", help="The UTF-8 text file to read; relative to the project "
          "file."),
    Param("context", "int", 32, minimum=1, maximum=100_000,
          help="Characters each sample reads."),
    Param("stride", "int", 1, minimum=1, help="Characters between the starts of samples."),
)


def exact_answers(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  answer: int) -> float:
    """The share of sequences whose last `answer` targets are all predicted: with every
    earlier answer character right, greedy decoding writes exactly these, so this is the
    share of prompts a greedy decoder completes correctly. The model's output holds the
    vocabulary scores in dimension 1 ([N, V, T], what CrossEntropyLoss reads)."""
    if len(x) == 0:
        return 0.0
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            predicted = model(x).argmax(dim=1)
    finally:
        model.train(was)
    right = (predicted[:, -answer:] == y[:, -answer:]).all(dim=1)
    return float(right.float().mean())
