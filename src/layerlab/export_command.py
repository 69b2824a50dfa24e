"""`layerlab export FILE --weights W --to FORMAT -o OUT`."""

from __future__ import annotations

import argparse
from pathlib import Path

from layerlab.command import CommandFailed, graph_problems
from layerlab.core.compiler import build_model
from layerlab.core.errors import GraphError
from layerlab.core.export import FORMATS, ExportError, export
from layerlab.core.project import Project
from layerlab.core.weights import WeightsError, load_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")
    parser.add_argument("--weights", required=True, metavar="W",
                        help="trained weights (weights.safetensors from layerlab train)")
    parser.add_argument("--to", required=True, choices=FORMATS, dest="format")
    parser.add_argument("-o", "--output", required=True, metavar="OUT")


def run(project: Project, args: argparse.Namespace) -> int:
    try:
        model = build_model(project.graph)
    except GraphError as exc:
        raise graph_problems(args.file, exc) from None
    try:
        report = load_weights(model, args.weights)
    except WeightsError as exc:
        raise CommandFailed(str(exc)) from None
    problems = [f"{key} ({why})" for key, why in report.skipped] + list(report.missing)
    if problems:
        raise CommandFailed(f"{args.weights} does not fit {args.file}: "
                           f"{', '.join(problems[:5])}{' …' if len(problems) > 5 else ''}")
    try:
        result = export(project, model, args.format, Path(args.output))
    except ExportError as exc:
        raise CommandFailed(f"{args.file}: {exc}") from None
    except OSError as exc:
        raise CommandFailed(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"wrote {result.path}: {result.detail}")
    return 0
