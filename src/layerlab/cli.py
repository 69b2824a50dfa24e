"""The command line of product.md §3. Commands that need no window never import Qt."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from layerlab.core.errors import GraphError, ProjectFileError, format_error


class CliError(Exception):
    """A one-sentence message for stderr, with the exit code to leave with."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _cmd_check(args: argparse.Namespace) -> int:
    from layerlab.command import print_table
    from layerlab.core.compiler import param_counts
    from layerlab.core.shapes import analyze
    from layerlab.core.spec import fmt_output

    project = _load(args.file)
    analysis = analyze(project.graph)
    counts = param_counts(project.graph, analysis)
    rows = [("node", "type", "output shape", "parameters")]
    for node, data in project.graph.nodes(data=True):
        shown = fmt_output(analysis.shapes.get(node))
        count = counts.get(node)
        frozen = " (frozen)" if data.get("frozen") else ""
        rows.append((str(node), str(data.get("type", "?")), shown,
                     "?" if count is None else f"{count:,}{frozen}"))
    print_table(rows)
    total = sum(counts.values())
    trainable = sum(c for n, c in counts.items() if not project.graph.nodes[n].get("frozen"))
    print(f"total parameters: {total:,} (trainable {trainable:,})")
    for node, message in analysis.errors:
        print(f"{args.file}: {format_error(node, message)}", file=sys.stderr)
    return 1 if analysis.errors else 0


def _cmd_examples(args: argparse.Namespace) -> int:
    from layerlab.core.atomic import atomic_write_text
    from layerlab.core.examples import example_names, example_text, example_title

    if args.name is None:
        for name in example_names():
            print(f"{name:<18} {example_title(name)}")
        return 0
    try:
        text = example_text(args.name)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    if args.output is None:
        sys.stdout.write(text)
        return 0
    _write(lambda: atomic_write_text(Path(args.output), text), args.output)
    print(f"wrote {args.output}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from layerlab.core.datasets import DATASETS

    rows = [("dataset", "sample shape", "classes", "description")]
    rows += [(d.name, d.sample_shape, d.classes, d.description) for d in DATASETS.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    print("\noptions (set in the project's training.dataset.options):")
    for d in DATASETS.values():
        if d.options:
            opts = ", ".join(f"{p.name}={p.default!r}" for p in d.options)
            print(f"  {d.name}: {opts}")
    return 0


def _delegate(module: str) -> Callable[[argparse.Namespace], int]:
    """A command whose work lives in layerlab.<module>, imported only when it runs."""
    def command(args: argparse.Namespace) -> int:
        from importlib import import_module

        from layerlab.command import CommandFailed

        project = _load(args.file)
        try:
            return import_module(f"layerlab.{module}").run(project, args)
        except CommandFailed as exc:
            raise CliError(str(exc), 1) from None
    return command


def _window(path: str | None) -> int:
    """`layerlab` opens the window on the default example; `layerlab FILE` on FILE."""
    if path is not None and not Path(path).exists():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    from layerlab.app.application import run_window

    return run_window(path)


def _load(path: str):
    from layerlab.core.project import load_project

    try:
        return load_project(path)
    except ProjectFileError as exc:
        raise CliError(str(exc), 2) from None
    except GraphError as exc:
        lines = [f"{path}: {format_error(n, m)}" for n, m in exc.errors]
        raise CliError("\n".join(lines), 1) from None


def _write(action: Callable[[], None], path: str) -> None:
    try:
        action()
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerlab", usage="layerlab [FILE] | layerlab COMMAND …",
        description="Design, train and understand neural networks. Without a command, "
                    "opens the window (on FILE, or the default example).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check", help="check a project: shapes, parameters, errors")
    check.add_argument("file")
    check.set_defaults(run=_cmd_check)
    examples = sub.add_parser("examples", help="list the bundled examples or write one out")
    examples.add_argument("name", nargs="?")
    examples.add_argument("-o", "--output", metavar="FILE")
    examples.set_defaults(run=_cmd_examples)
    train = sub.add_parser("train", help="train a project headless, with a progress bar")
    from layerlab.train_command import add_arguments

    add_arguments(train)
    train.set_defaults(run=_delegate("train_command"))
    trace = sub.add_parser("trace", help="record one training step node by node, with "
                           "gradient-health verdicts")
    from layerlab.trace_command import add_arguments as add_trace_arguments

    add_trace_arguments(trace)
    trace.set_defaults(run=_delegate("trace_command"))
    export = sub.add_parser("export", help="export a trained model: onnx, pt2, python, "
                            "safetensors")
    from layerlab.export_command import add_arguments as add_export_arguments

    add_export_arguments(export)
    export.set_defaults(run=_delegate("export_command"))
    datasets = sub.add_parser("datasets", help="list the datasets, their shapes and classes")
    datasets.set_defaults(run=_cmd_datasets)
    return parser


COMMANDS = ("check", "examples", "train", "trace", "export", "datasets")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and not argv[0].startswith("-")):
        return _window(argv[0] if argv else None)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("layerlab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line for the user, the trace on request
        if os.environ.get("LAYERLAB_DEBUG"):
            raise
        print(f"layerlab: internal error: {exc!r} (run with LAYERLAB_DEBUG=1 for details)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
