"""The command line of product.md §3. Commands that need no window never import Qt.

One module per command (`layerlab.cli.<command>`), each with `add_arguments(parser)` and
`run(args) -> int`; what they share is in `layerlab.cli.common`. A command refuses by
raising CliError with one sentence per problem, each naming the file, node or option.

Exit codes: 0 done; 1 the project, or a file or place it was given, is refused, or the run
failed; 2 the command line cannot be used as typed (usage, an unknown name, a project file
that cannot be read); 3 a bug of ours; 130 interrupted; 141 stdout was closed early
(`layerlab check F | head -1`), as for a program stopped by SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path

COMMANDS = {
    "check": "check a project: shapes, parameters, training settings, dataset fit",
    "examples": "list the bundled examples or write one out",
    "train": "train a project headless, with a progress bar",
    "sweep": "train every combination of a few settings, each as its own run, and compare",
    "lessons": "list the ready experiments (optimizers, over-fitting, …) or run one",
    "trace": "record one training step node by node, with gradient-health verdicts",
    "generate": "let a trained next-token model continue a prompt, with each character's "
                "probability",
    "export": "export a trained model: onnx, pt2, python, safetensors",
    "datasets": "list the datasets, their shapes and classes",
    "new": "write a starter project sized to your own table or image folder",
    "render": "draw the graph as a picture: png or svg",
    "import": "a PyTorch or ONNX model onto the canvas, weights and all, checked against it",
}
CLOSED_PIPE = 141
MODULE_OF = {"import": "import_model"}  # a command whose name is a Python keyword


class CliError(Exception):
    """A one-sentence message (one line per problem) for stderr, and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; only `command`'s module is imported, for its arguments (most
    import torch, which takes a second or more: `layerlab --help` imports none of them)."""
    parser = argparse.ArgumentParser(
        prog="layerlab", usage="layerlab [FILE] | layerlab COMMAND …",
        description="Design, train and understand neural networks. Without a command, "
                    "opens the window (on FILE, or the default example).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        if name == command:
            module = import_module(f"layerlab.cli.{MODULE_OF.get(name, name)}")
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(run=module.run)
    return parser


def _window(path: str | None) -> int:
    """`layerlab` opens the window on the default example; `layerlab FILE` on FILE."""
    if path is not None and not Path(path).exists():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    from layerlab.app.application import run_window

    return run_window(path)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and not argv[0].startswith("-")):
        return _window(argv[0] if argv else None)
    try:
        command = next((a for a in argv if not a.startswith("-")), None)
        args = build_parser(command).parse_args(argv)
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
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


def _closed_pipe() -> int:
    """The reader stopped reading (`| head`): end quietly. stdout is pointed at devnull so
    that the interpreter's own flush at exit does not complain about the pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture)
        pass
    return CLOSED_PIPE
