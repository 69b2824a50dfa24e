"""`layerlab lessons [NAME]`: list the bundled lessons, or run one headless.

`layerlab lessons optimizers` writes the lesson's project as `./optimizers.layerlab.json`
(or into --dir), says what to look for, and runs its sweep into `optimizers.runs/` beside it,
as `layerlab sweep` would; open the project in the window to see the runs' curves. A lesson
with a pre-training run trains it first, then its variants from its weights, and prints
them side by side (accuracy, loss, trainable parameters, seconds).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from layerlab.cli import CliError
from layerlab.cli.common import check_folder, print_table, read_project, write_failed
from layerlab.cli.sweep import _progress, _stop_on_interrupt, sweep
from layerlab.core.lessons import (
    Lesson,
    comparison,
    lessons,
    load_lesson,
    run_lesson,
    write_lesson_project,
)
from layerlab.core.runs import runs_folder
from layerlab.core.sweep import SweepError, default_workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="the lesson to run (without: list them)")
    parser.add_argument("--dir", default=".", metavar="DIR", help="where the lesson's "
                        "project and its runs folder go (default: here)")
    parser.add_argument("--epochs", type=int, metavar="N", help="epochs of every run "
                        "but a pre-training run (default: the lesson's)")
    parser.add_argument("--pretrain-epochs", type=int, metavar="N", help="epochs of a "
                        "lesson's pre-training run (default: the lesson's)")
    parser.add_argument("--workers", type=int, metavar="N", help="runs trained at once, "
                        "in processes (default: one per two idle cores, at least 1)")
    parser.add_argument("--force", action="store_true", help="replace a project file of "
                        "that name that is not the lesson's")


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        rows = [("name", "title", "runs")]
        rows += [(lesson.name, lesson.title, str(lesson.runs)) for lesson in lessons()]
        print_table(rows, left=2)
        return 0
    try:
        lesson = load_lesson(args.name)
    except KeyError as exc:
        raise CliError(str(exc.args[0]), 2) from None
    for option, value in (("--epochs", args.epochs), ("--workers", args.workers),
                          ("--pretrain-epochs", args.pretrain_epochs)):
        if value is not None and value < 1:  # refused before anything is written
            raise CliError(f"{option} must be at least 1, not {value}", 2)
    folder = Path(args.dir)
    path = _write_project(lesson, folder, args.force)
    print(f"{lesson.title}\n{lesson.look_for}\nproject → {path}", flush=True)
    if lesson.pretrain is not None:
        return _pretrain_then_compare(lesson, path, args)
    return sweep(read_project(str(path)), str(path), list(lesson.sets), runs_folder(path),
                 epochs=args.epochs if args.epochs is not None else lesson.epochs,
                 workers=args.workers)


def _pretrain_then_compare(lesson: Lesson, path: Path, args: argparse.Namespace) -> int:
    """The pre-training run, then the variants from its weights, a line per run; then the
    comparison table. Ctrl+C stops the running run at a batch boundary."""
    out = runs_folder(path)
    workers = args.workers or default_workers(len(lesson.variants))
    print(f"lesson: {lesson.runs} run(s), pre-training first → {out}", flush=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, _stop_on_interrupt(stop))
    try:
        done = run_lesson(lesson, read_project(str(path)), out, epochs=args.epochs,
                          pretrain_epochs=args.pretrain_epochs, workers=workers,
                          listener=_progress, stop=stop)
    except SweepError as exc:
        raise CliError(f"{path}: {exc}") from None
    except OSError as exc:
        raise write_failed(out, exc) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if done.runs:
        rows = [("start", "trainable", "val accuracy", "val loss", "seconds", "status")]
        rows += [(row.label, f"{row.trainable:,}", _number(row.val_accuracy),
                  _number(row.val_loss), f"{row.seconds:.1f}", row.status)
                 for row in comparison(done.plans, done.runs)]
        print()
        print_table(rows, left=1)
    if stop.is_set():
        return 130
    return 1 if any(r.status == "failed" for r in (done.pretrained, *done.runs)) else 0


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _write_project(lesson: Lesson, folder: Path, force: bool) -> Path:
    """The lesson's project in `folder`: kept when it is already the lesson's own (its runs
    gather beside it), refused (without --force) when another file has its name."""
    check_folder(folder)
    path = folder / f"{lesson.name}.layerlab.json"
    if path.exists() and not force:
        try:
            same = path.read_text(encoding="utf-8") == lesson.project_text()
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            raise CliError(f"{path} exists and is not the lesson's project; use --force to "
                           "replace it, or choose another --dir")
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return write_lesson_project(lesson, folder)
    except OSError as exc:
        raise write_failed(path, exc) from None
