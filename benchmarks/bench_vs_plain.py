"""LayerLab's trainer against a plain PyTorch loop, steps per second, on the bundled examples.

The plain loop is written as the PyTorch tutorials write it: the model class LayerLab's
Python export writes (a hand-written-looking nn.Module), the optimizer with its default
arguments but the project's learning rate, `randperm` + index slicing instead of a
DataLoader, `zero_grad()` after `step()`, and the loss read back every 100 batches. Both
train on the same tensors, on the same device, in this process (CPU: one torch thread).

Each round times a few epochs of each, alternating which goes first; the ratio is the median
of the rounds' LayerLab steps/s ÷ plain steps/s (> 1: LayerLab is faster). LayerLab's time
is the epochs' `seconds` (training without evaluation, as metrics.csv reports it).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import layerlab
from layerlab.core.compiler import build_loss, checked
from layerlab.core.datasets import Dataset, load_dataset
from layerlab.core.pycode import python_source
from layerlab.core.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CASES = (("spiral", "spiral"), ("digits MLP", "digits-mlp"), ("MNIST MLP", "mnist-mlp"),
         ("LeNet-5", "lenet5"), ("tiny transformer", "tiny-transformer"))
ROUNDS = 7
MIN_STEPS = 150  # per timed block


def mnist_like(samples: int = 12_000) -> Dataset:
    """MNIST from its local files, or random MNIST-shaped images when it is not on disk (the
    benchmark never downloads; speed does not depend on the pixels)."""
    try:
        return load_dataset("mnist", {"download": False})
    except Exception:  # not on this machine
        g = torch.Generator().manual_seed(0)
        x = torch.rand(samples, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (samples,), generator=g)
        return Dataset("mnist", x, y, "classification", tuple(str(i) for i in range(10)),
                       shapes=((784,),))


def plain_model(project: layerlab.Project, trainer: Trainer) -> nn.Module:
    """The Model class of LayerLab's Python export, with the trainer's initial weights."""
    source = python_source(project, trainer.model, checked(project.graph))
    namespace: dict[str, object] = {"__name__": "plain_model"}
    exec(compile(source, "<plain>", "exec"), namespace)
    model = namespace["Model"]()  # type: ignore[operator]
    model.load_state_dict(trainer.model.state_dict())
    return model.to(trainer.device)


def plain_epochs(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int) -> float:
    """The tutorial's loop; returns its seconds."""
    sync(x.device)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), device=x.device)
        for batch, i in enumerate(range(0, len(x), batch_size)):
            idx = order[i:i + batch_size]
            pred = model(x[idx])
            loss = loss_fn(pred, y[idx])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if batch % 100 == 0:
                loss.item()
    sync(x.device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def layerlab_epochs(trainer: Trainer, epochs: int) -> float:
    first = len(trainer.history)
    trainer.settings = dataclasses.replace(trainer.settings, epochs=trainer.epoch + epochs)
    trainer.run()
    return sum(r.seconds for r in trainer.history[first:])


def ratio(example: str, device: str) -> tuple[float, float]:
    """(median LayerLab/plain steps-per-second ratio, LayerLab steps/s)."""
    project = layerlab.load_project(ROOT / "assets/examples" / f"{example}.layerlab.json")
    project.training["device"] = device
    data = mnist_like() if project.training["dataset"]["name"] == "mnist" else None
    trainer = Trainer(project, data=data)
    model = plain_model(project, trainer)
    loss_fn = build_loss(project.graph)
    assert loss_fn is not None
    cls = type(trainer.optimizer)
    optimizer = cls(model.parameters(), lr=trainer.settings.lr)
    bs = trainer.settings.batch_size
    steps = trainer.batches_per_epoch
    epochs = max(1, -(-MIN_STEPS // steps))
    args = (model, loss_fn.to(trainer.device), optimizer, trainer.x_train, trainer.y_train, bs)
    plain_epochs(*args, 1)  # warm-up of both
    layerlab_epochs(trainer, 1)
    ratios, rates = [], []
    for i in range(ROUNDS):
        if i % 2:
            t_layerlab, t_plain = layerlab_epochs(trainer, epochs), plain_epochs(*args, epochs)
        else:
            t_plain, t_layerlab = plain_epochs(*args, epochs), layerlab_epochs(trainer, epochs)
        ratios.append(t_plain / t_layerlab)
        rates.append(steps * epochs / t_layerlab)
    return statistics.median(ratios), statistics.median(rates)


def main() -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch.set_num_threads(1)
    names = [a for a in sys.argv[1:] if not a.startswith("-")]
    print(f"LayerLab / plain PyTorch steps per second (median of {ROUNDS} paired rounds; "
          "> 1: LayerLab faster)")
    print(f"{'network':<18}" + "".join(f"{d:>22}" for d in devices))
    for label, example in CASES:
        if names and example not in names:
            continue
        cells = []
        for device in devices:
            r, rate = ratio(example, device)
            cells.append(f"{r:5.2f} ({rate:7,.0f} steps/s)")
        print(f"{label:<18}" + "".join(f"{c:>22}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
