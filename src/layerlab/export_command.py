"""`layerlab export FILE --weights W --to FORMAT -o OUT`."""

from __future__ import annotations

import argparse
from pathlib import Path

from layerlab.core.compiler import build_model
from layerlab.core.errors import GraphError, format_error
from layerlab.core.export import FORMATS, ExportError, export
from layerlab.core.project import Project
from layerlab.core.weights import WeightsError, load_weights


class ExportFailed(Exception):
    """The export was refused; the message is for stderr."""


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
        raise ExportFailed("\n".join(f"{args.file}: {format_error(n, m)}"
                                     for n, m in exc.errors)) from None
    try:
        report = load_weights(model, args.weights)
    except WeightsError as exc:
        raise ExportFailed(str(exc)) from None
    problems = [f"{key} ({why})" for key, why in report.skipped] + list(report.missing)
    if problems:
        raise ExportFailed(f"{args.weights} does not fit {args.file}: "
                           f"{', '.join(problems[:5])}{' …' if len(problems) > 5 else ''}")
    try:
        result = export(project, model, args.format, Path(args.output))
    except ExportError as exc:
        raise ExportFailed(f"{args.file}: {exc}") from None
    except OSError as exc:
        raise ExportFailed(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"wrote {result.path}: {result.detail}")
    return 0
