"""`layerlab datasets`: the datasets, their sample shapes, classes and options."""

from __future__ import annotations

import argparse

from layerlab.cli.common import print_table
from layerlab.core.datasets import DATASETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments."""


def run(args: argparse.Namespace) -> int:
    rows = [("dataset", "sample shape", "classes", "description")]
    rows += [(d.name, d.sample_shape, d.classes, d.description) for d in DATASETS.values()]
    print_table(rows, left=4)
    print("\noptions (set in the project's training.dataset.options):")
    for d in DATASETS.values():
        if d.options:
            opts = ", ".join(f"{p.name}={p.default!r}" for p in d.options)
            print(f"  {d.name}: {opts}")
    return 0
