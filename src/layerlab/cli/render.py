"""`layerlab render FILE -o OUT.png|svg [--size WxH] [--direction TB|LR]`: a picture of the
graph as the window draws it on opening, drawn offscreen (no window, no display needed).
A project with problems is drawn with them, as the canvas shows them."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from layerlab.cli import CliError
from layerlab.cli.common import check_file, graph_problems, write_failed
from layerlab.core.errors import GraphError, ProjectFileError
from layerlab.core.project import DIRECTIONS, load_project_lenient

MAX_SIDE = 16_384  # QImage and viewers refuse larger pictures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.png|OUT.svg",
                        help="the picture to write; its suffix chooses PNG or SVG")
    parser.add_argument("--size", metavar="WxH",
                        help="fit the graph into this many pixels, e.g. 1600x1000 "
                             "(default: the graph at 100 %%)")
    parser.add_argument("--direction", choices=DIRECTIONS,
                        help="lay the graph out again, top to bottom (TB) or left to right "
                             "(LR); default: as the file has it")


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match or not all(0 < int(v) <= MAX_SIDE for v in match.groups()):
        raise CliError(f"--size {text}: give width x height in pixels, e.g. 1600x1000 "
                       f"(each 1 to {MAX_SIDE})", 2)
    return int(match[1]), int(match[2])


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix.lower() not in (".png", ".svg"):
        raise CliError(f"{out}: the picture must end in .png or .svg", 2)
    size = parse_size(args.size)
    try:
        project, _ = load_project_lenient(args.file)
    except ProjectFileError as exc:
        raise CliError(str(exc), 2) from None
    except GraphError as exc:
        raise graph_problems(args.file, exc) from None
    check_file(out)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no window is ever shown
    from layerlab.app.application import make_application
    from layerlab.app.picture import picture_of_project

    make_application()
    try:
        picture_of_project(project, out, size, args.direction)
    except OSError as exc:
        raise write_failed(out, exc) from None
    print(f"wrote {out}")
    return 0
