"""`layerlab examples [NAME [-o FILE] [--force]]`: list the bundled examples, print one, or
write one out. A different file already at FILE is replaced only with --force."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerlab.cli import CliError
from layerlab.cli.common import check_file, write_failed
from layerlab.core.atomic import atomic_write_text
from layerlab.core.examples import example_names, example_text, example_title


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", type=str.lower, help="an example's name "
                        "(any case); without it, the list")
    parser.add_argument("-o", "--output", metavar="FILE", help="write it here instead of "
                        "printing it")
    parser.add_argument("--force", action="store_true",
                        help="replace FILE even when it holds something else")


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        for name in example_names():
            print(f"{name:<18} {example_title(name)}")
        return 0
    try:
        text = example_text(args.name)
    except KeyError as exc:
        raise CliError(str(exc.args[0]), 2) from None
    if args.output is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    check_file(out)
    if out.exists() and not args.force and _content(out) != text:
        raise CliError(f"{out} exists and is not example {args.name}; use --force to "
                       "replace it, or choose another file")
    try:
        atomic_write_text(out, text)
    except OSError as exc:
        raise write_failed(out, exc) from None
    print(f"wrote {out}")
    return 0


def _content(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
