"""`layerlab import` of a 200-node model: seconds to trace and map it, lay it out, compile it
with its weights, compare it with the original, and open the written file again.

The model is a ResNet-style stack written here (28 residual blocks of conv, batch norm,
ReLU and a skip: 200 nodes with the stem, head and loss), so the benchmark needs no
torchvision. The bar is 2 s for the whole import, opened, laid out and compiled.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from layerlab.core import import_fx, importer
from layerlab.core.compiler import build_model
from layerlab.core.project import load_project

BLOCKS = 28
SHAPE = (3, 32, 32)


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class Stack(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(*(Block(width) for _ in range(BLOCKS)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def main() -> None:
    torch.set_num_threads(1)
    model = Stack().eval()
    times: dict[str, float] = {}
    start = time.perf_counter()
    imported = import_fx.from_module(model, SHAPE, "Stack")
    times["trace and map"] = time.perf_counter() - start
    mark = time.perf_counter()
    project = importer.to_project(imported)
    times["graph, groups, layout"] = time.perf_counter() - mark
    mark = time.perf_counter()
    compiled = importer.compile_with_weights(project, imported.layers)
    times["compile with weights"] = time.perf_counter() - mark
    mark = time.perf_counter()
    comparison = importer.compare(compiled, imported)
    times["compare"] = time.perf_counter() - mark
    with tempfile.TemporaryDirectory() as folder:
        mark = time.perf_counter()
        path = Path(folder) / "stack.layerlab.json"
        project.save(path)
        build_model(load_project(path).graph)
        times["save, open, compile again"] = time.perf_counter() - mark
    total = time.perf_counter() - start
    print(f"import of a {project.graph.number_of_nodes()}-node model "
          f"({len(project.groups)} groups):")
    for name, seconds in times.items():
        print(f"  {name:28s} {seconds:6.3f} s")
    print(f"  {'total':28s} {total:6.3f} s  (bar: under 2 s) — "
          f"{'ok' if total < 2 else 'OVER'}")
    print(f"  {comparison.sentence()}")


if __name__ == "__main__":
    main()
