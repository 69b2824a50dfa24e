"""`layerlab export FILE --weights W --to FORMAT -o OUT`."""

from __future__ import annotations

import argparse
from pathlib import Path

from layerlab.cli import CliError
from layerlab.cli.common import check_file, graph_problems, read_project, write_failed
from layerlab.core.compiler import build_model
from layerlab.core.errors import GraphError
from layerlab.core.export import FORMATS, ExportError, export
from layerlab.core.weights import WeightsError, load_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")
    parser.add_argument("--weights", required=True, metavar="W",
                        help="trained weights (weights.safetensors from layerlab train)")
    parser.add_argument("--to", required=True, choices=FORMATS, dest="format",
                        type=str.lower, help="the format (any case)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT")


def run(args: argparse.Namespace) -> int:
    project = read_project(args.file)
    out = Path(args.output)
    check_file(out)
    try:
        model = build_model(project.graph)
    except GraphError as exc:
        raise graph_problems(args.file, exc) from None
    try:
        report = load_weights(model, args.weights)
    except WeightsError as exc:
        raise CliError(str(exc)) from None
    mismatch = report.mismatch()
    if mismatch:
        raise CliError(f"{args.weights} does not fit {args.file}: {mismatch}")
    try:
        result = export(project, model, args.format, out)
    except OSError as exc:
        raise write_failed(out, exc) from None
    except ExportError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    print(f"wrote {result.path}: {result.detail}")
    return 0
