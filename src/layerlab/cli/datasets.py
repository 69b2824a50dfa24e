"""`layerlab datasets`: the datasets, their sample shapes, classes and options, each option
explained."""

from __future__ import annotations

import argparse
import json
import textwrap

from layerlab.cli.common import print_table
from layerlab.core.datasets import DATASETS

OWN_DATA = ("Your own data: `layerlab new --data FILE.csv --target COLUMN -o FILE` (or "
            "--data FOLDER of class sub-folders of images) writes a starter project; "
            "`layerlab train FILE --data PATH` trains on another file.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments."""


def run(args: argparse.Namespace) -> int:
    rows = [("dataset", "sample shape", "classes", "description")]
    rows += [(d.name, d.sample_shape, d.classes, d.description) for d in DATASETS.values()]
    print_table(rows, left=4)
    print("\noptions (set in the project's training.dataset.options):")
    for d in DATASETS.values():
        if not d.options:
            continue
        print(f"  {d.name}:")
        for p in d.options:
            default = json.dumps(p.default)
            print(textwrap.fill(f"{p.name} (default {default}): {p.help}", width=92,
                                initial_indent="    ", subsequent_indent="      "))
    print("\n" + textwrap.fill(OWN_DATA, width=92))
    return 0
