"""`layerlab sweep`: every combination of a few settings, each trained as its own run.

`layerlab sweep spiral.layerlab.json --set optimizer=sgd,adam --set lr=0.1,0.01` trains four
runs into the project's runs folder (`spiral.runs/`, or --out DIR), one progress line per
run, and writes summary.csv beside them. Every --set is checked before any run starts. Ctrl+C
stops the running runs at a batch boundary (saved as stopped) and starts no new one.
"""

from __future__ import annotations

import argparse
import math
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from layerlab.cli import CliError
from layerlab.cli.common import check_folder, read_project, write_failed
from layerlab.core.project import Project
from layerlab.core.runs import RUN_JSON, RunInfo, runs_folder
from layerlab.core.sweep import (
    SUMMARY,
    TRAINING_KEYS,
    SweepError,
    default_workers,
    parse_sets,
    plan_sweep,
    run_sweep,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2…",
                        dest="sets", help=f"a setting to vary: {', '.join(TRAINING_KEYS)}, "
                        "or NODE.PARAM (a layer parameter), NODE.type (an activation's "
                        "type), NODE.init, where NODE may be a pattern (act*.type); repeat "
                        "for more (every combination runs)")
    parser.add_argument("--epochs", type=int, metavar="N", help="epochs of every run")
    parser.add_argument("--out", metavar="DIR", help="where the run folders and summary.csv "
                        "go (default: the project's runs folder, NAME.runs/)")
    parser.add_argument("--force", action="store_true", help="write into DIR even when it "
                        "holds files LayerLab did not write")
    parser.add_argument("--workers", type=int, metavar="N", help="runs trained at once, "
                        "in processes (default: one per two idle cores, at least 1)")


def run(args: argparse.Namespace) -> int:
    project = read_project(args.file)
    if not args.sets:
        raise CliError("sweep: give at least one --set KEY=V1,V2,… (for example "
                       "--set optimizer=sgd,adam)", 2)
    out = Path(args.out) if args.out else runs_folder(args.file)
    if args.out and not args.force:  # the project's own runs folder is ours
        check_sweep_folder(out)
    return sweep(project, args.file, args.sets, out, epochs=args.epochs,
                 workers=args.workers)


def check_sweep_folder(out: Path) -> None:
    """Refuse a folder that holds anything but run folders and a summary.csv, as `train
    --out` refuses one with files LayerLab did not write: a sweep writes summary.csv there."""
    if not out.is_dir():
        return
    foreign = sorted(child.name for child in out.iterdir() if child.name != SUMMARY
                     and not (child / RUN_JSON).is_file())
    if foreign:
        shown = ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "")
        raise CliError(f"{out} holds files LayerLab did not write ({shown}); use --force to "
                       "write the sweep there anyway, or choose another --out")


def sweep(project: Project, file: str, sets: list[str], out: Path, *,
          epochs: int | None = None, workers: int | None = None) -> int:
    """Check, plan and run a sweep, printing a line per run; the exit code."""
    if epochs is not None and epochs < 1:
        raise CliError(f"--epochs must be at least 1, not {epochs}", 2)
    if workers is not None and workers < 1:
        raise CliError(f"--workers must be at least 1, not {workers}", 2)
    try:
        plans = plan_sweep(project, parse_sets(sets, project),
                           {} if epochs is None else {"epochs": epochs})
    except SweepError as exc:
        raise CliError(f"{file}: {exc}") from None
    check_folder(out)
    count = workers or default_workers(len(plans))
    print(f"sweep: {len(plans)} run(s), {count} at a time → {out}", flush=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, _stop_on_interrupt(stop))
    try:
        runs = run_sweep(plans, out, count, _progress, stop)
    except OSError as exc:
        raise write_failed(out, exc) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    best = _best(runs)
    if best is not None:
        print(f"best: {best.label}: {_scores(best)}")
    print(f"summary → {out / 'summary.csv'}")
    if stop.is_set():
        return 130
    return 1 if any(r.status == "failed" for r in runs) else 0


def _stop_on_interrupt(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # second Ctrl+C: give up at once
            raise KeyboardInterrupt
        print("\nstopping the running runs after this batch (Ctrl+C again to abort)…",
              flush=True)
        stop.set()
    return handler


def _progress(done: int, total: int, info: RunInfo) -> None:
    detail = info.message if info.status == "failed" else _scores(info)
    print(f"[{done}/{total}] {info.label}: {info.status} in {info.seconds:.1f} s; {detail} "
          f"→ {info.folder.name}", flush=True)


def _scores(info: RunInfo) -> str:
    parts = []
    if info.final_val_loss is not None:
        parts.append(f"val loss {info.final_val_loss:.4f} (best {info.best_val_loss:.4f})")
    if info.final_val_accuracy is not None:
        parts.append(f"val accuracy {100 * info.final_val_accuracy:.2f}%")
    return ", ".join(parts) or "no validation scores"


def _best(runs: list[RunInfo]) -> RunInfo | None:
    """The run with the lowest final validation loss (finished or stopped runs only)."""
    scored = [r for r in runs if r.final_val_loss is not None and r.status != "failed"
              and math.isfinite(r.final_val_loss)]
    return min(scored, key=lambda r: r.final_val_loss or 0.0, default=None)
