"""`layerlab new --data FILE|DIR [--target COLUMN] -o FILE`: a starter project sized to the
user's own table or image folder, ready to train."""

from __future__ import annotations

import argparse
from pathlib import Path

from layerlab.cli import CliError
from layerlab.cli.common import TASK_FLAGS, check_file, write_failed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="FILE|DIR",
                        help="a table (CSV, TSV, …) or a folder with one sub-folder of "
                             "images per class")
    parser.add_argument("--target", metavar="COLUMN", help="the table's target column "
                        "(several, comma-separated, for regression); default: the last")
    parser.add_argument("--task", choices=tuple(TASK_FLAGS),
                        help="override the task detected from the target")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the project file to write (*.layerlab.json)")
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")


def run(args: argparse.Namespace) -> int:
    from layerlab.core.datasets import DatasetError
    from layerlab.core.starter import new_project

    data, out = Path(args.data), Path(args.output)
    if not data.exists():
        raise CliError(f"{data}: no such file or folder")
    if out.exists() and not args.force:
        raise CliError(f"{out} exists; use --force to replace it, or choose another -o")
    check_file(out)
    try:
        project = new_project(data, out, args.target, TASK_FLAGS.get(args.task or ""))
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    try:
        project.save(out)
    except OSError as exc:
        raise write_failed(out, exc) from None
    options = project.training["dataset"]["options"]
    shape = project.graph.nodes["input"]["params"]["shape"]
    if project.graph.nodes["loss"]["type"] == "CrossEntropyLoss":
        what = f"classification into {project.graph.nodes['out']['params']['out_features']} " \
               "classes"
    else:
        what = f"regression of {project.graph.nodes['out']['params']['out_features']} value(s)"
    print(f"wrote {out}: {what} from inputs of shape {shape} "
          f"({project.training['dataset']['name']} {options['path']}); "
          f"train it with: layerlab train {out}")
    return 0
