"""The bundled tiny GPT (assets/examples/tiny-gpt.layerlab.json) learning 2-digit addition by
next-token prediction with its own settings, on the CPU: after each epoch, the seconds of
training so far and the exact-answer accuracy on 1,000 sums it never saw (neither in its
training nor in its validation split), answers written by greedy decoding.

    .venv/bin/python benchmarks/bench_tiny_gpt.py [--threads N] [--epochs N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import layerlab
from layerlab.core.datasets import load_dataset
from layerlab.core.generate import generate
from layerlab.core.settings import settings_from
from layerlab.core.text_data import ADDITION_VOCAB, decode, encode, exact_answers
from layerlab.core.trainer import EpochRecord, Trainer

EXAMPLE = Path(__file__).parents[1] / "assets" / "examples" / "tiny-gpt.layerlab.json"


def unseen_sums(trainer: Trainer, count: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    seen = {tuple(row) for row in torch.cat([trainer.x_train, trainer.x_val]).tolist()}
    fresh = load_dataset("addition", {"digits": 2, "n_samples": 4 * count, "seed": 99})
    keep = torch.tensor([tuple(row) not in seen for row in fresh.x.tolist()])
    return fresh.x[keep][:count], fresh.y[keep][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    project = layerlab.load_project(EXAMPLE)
    overrides = {"epochs": args.epochs} if args.epochs else {}
    trainer = Trainer(project, settings_from(project.training, device="cpu", **overrides))
    x, y = unseen_sums(trainer)
    start = time.perf_counter()
    print(f"{len(x)} unseen sums; {args.threads} thread(s)")
    print("epoch  seconds  train_loss  val_token_acc  unseen_exact")

    def report(record: object) -> None:
        if isinstance(record, EpochRecord):
            spent = time.perf_counter() - start
            exact = exact_answers(trainer.model, x, y, 3)
            print(f"{record.epoch:5d}  {spent:7.1f}  {record.train_loss:10.3f}  "
                  f"{record.val_accuracy:13.3f}  {exact:12.3f}", flush=True)

    trainer.add_listener(report)
    trainer.run()
    prompt = "38+47="
    made = generate(trainer.model, encode(prompt, ADDITION_VOCAB), 3, temperature=0,
                    context=8)
    shown = " ".join(f"{decode([t], ADDITION_VOCAB)}({p:.3f})"
                     for t, p in zip(made.tokens, made.probabilities, strict=True))
    print(f"{prompt} → {shown}")


if __name__ == "__main__":
    main()
