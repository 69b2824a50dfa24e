"""`layerlab train`: headless training with a progress bar and atomically written results.

Without --out the run gets a new folder among the project's runs (`NAME.runs/<date-time>-
<label>/`, core/runs.py); with --out DIR it is written to DIR. The place is checked before any
work starts (writable; DIR not another project's run, unless --force), but nothing is written
until the run is known to be able to start; core.runs.RunWriter replaces every file atomically
at the end of an epoch (at most every SAVE_EVERY_S seconds, and at the end of the run), so an
interrupted run (Ctrl+C stops at the next batch) leaves either the previous files or complete
new ones.
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from layerlab.cli import CliError
from layerlab.cli.common import (
    TASK_FLAGS,
    check_folder,
    graph_problems,
    read_project,
    write_failed,
)
from layerlab.core.catalogue import OPTIMIZERS
from layerlab.core.datasets import (
    DATASETS,
    DatasetError,
    absolute_data,
    project_folder,
    with_data,
)
from layerlab.core.errors import GraphError, ProjectFileError
from layerlab.core.health_watch import HealthWatch
from layerlab.core.parallel import STRATEGIES, ParallelTrainer
from layerlab.core.project import FORMAT, Project, parse_json
from layerlab.core.runs import (
    RUN_FILES,
    RunWriter,
    differences,
    new_run_folder,
    run_label,
    runs_folder,
)
from layerlab.core.settings import settings_from, with_overrides
from layerlab.core.stages import describe
from layerlab.core.trainer import (
    EpochRecord,
    HealthRecord,
    Record,
    StepRecord,
    Trainer,
    TrainingError,
    distributed_rank,
)
from layerlab.core.validation import DEVICES
from layerlab.core.weights import WeightsError, load_weights

OVERRIDES = ("dataset", "epochs", "batch_size", "lr", "optimizer", "device", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")
    parser.add_argument("--dataset", metavar="NAME", help=f"{', '.join(DATASETS)} (any case)")
    parser.add_argument("--epochs", type=int, metavar="N")
    parser.add_argument("--batch-size", type=int, metavar="N")
    parser.add_argument("--lr", type=float, metavar="X")
    parser.add_argument("--optimizer", metavar="NAME",
                        help=f"{', '.join(OPTIMIZERS)} (any case)")
    parser.add_argument("--device", metavar="NAME", help=f"{', '.join(DEVICES)} (any case)")
    parser.add_argument("--seed", type=int, metavar="N")
    parser.add_argument("--data", metavar="PATH", help="train on this table (csv) or "
                        "folder of class sub-folders of images (imagefolder)")
    parser.add_argument("--target", metavar="COLUMN", help="the table's target column(s)")
    parser.add_argument("--task", choices=tuple(TASK_FLAGS),
                        help="override the task detected from the table's target")
    parser.add_argument("--out", metavar="DIR", help="where to write results (default: a "
                        "new run folder NAME.runs/<date-time>-<label>/ beside the project)")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="continue a run from its checkpoint.pt")
    parser.add_argument("--init-weights", metavar="W",
                        help="start from these weights (safetensors or a PyTorch state dict), "
                             "matched by name and shape: fine-tuning")
    parser.add_argument("--force", action="store_true", help="write into DIR even when it "
                        "holds another project's run or files LayerLab did not write")
    parser.add_argument("--parallel", choices=STRATEGIES, help="under torchrun: "
                        "data-parallel (ddp, the default), parameters sharded (fsdp), or the "
                        "graph cut into one stage per process (pipeline)")
    parser.add_argument("--microbatches", type=int, metavar="N", help="micro-batches each "
                        "batch is split into under --parallel pipeline (default: the number "
                        "of stages)")


def prepare(project: Project, args: argparse.Namespace) -> Trainer:
    """Everything that can refuse the run, before any file is written."""
    overrides = {k: getattr(args, k) for k in OVERRIDES}
    if args.data is not None or args.target is not None or args.task is not None:
        data = None if args.data is None else str(Path(args.data).resolve())
        task = TASK_FLAGS.get(args.task or "")
        project.training = with_data(project.training, data, args.target, task)
    project.training = absolute_data(project.training, project_folder(project.path))
    try:
        settings = settings_from(project.training, **overrides)
        if args.parallel in ("fsdp", "pipeline"):
            trainer: Trainer = ParallelTrainer(project, settings, strategy=args.parallel,
                                               microbatches=args.microbatches,
                                               progress=_download_progress())
        else:
            trainer = Trainer(project, settings, progress=_download_progress())
    except GraphError as exc:
        raise graph_problems(args.file, exc) from None
    except (DatasetError, TrainingError) as exc:
        raise CliError(f"{args.file}: {exc}") from None
    project.training = with_overrides(project.training, **overrides)
    if args.init_weights:
        try:
            report = load_weights(trainer.model, args.init_weights)
        except WeightsError as exc:
            raise CliError(str(exc)) from None
        if trainer.rank == 0:
            for line in report.lines():
                print(f"init weights: {line}", file=sys.stderr)
    if args.resume:
        try:
            trainer.load_checkpoint(Path(args.resume))
        except TrainingError as exc:
            raise CliError(str(exc)) from None
    if isinstance(trainer, ParallelTrainer):
        try:
            trainer.distribute()
        except TrainingError as exc:
            raise CliError(f"{args.file}: {exc}") from None
        if trainer.plan is not None and trainer.rank == 0:
            print(f"pipeline stages: {describe(trainer.plan)}", file=sys.stderr)
    return trainer


def run(args: argparse.Namespace) -> int:
    """Train; under torchrun (WORLD_SIZE > 1) data-parallel, with rank 0 alone writing."""
    project = read_project(args.file)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.parallel and world < 2:
        raise CliError(f"--parallel {args.parallel} needs several processes: start it with "
                       "torchrun --nproc_per_node=N -m layerlab train …", code=2)
    if args.microbatches is not None and args.parallel != "pipeline":
        raise CliError("--microbatches splits batches between pipeline stages: use it with "
                       "--parallel pipeline", code=2)
    import torch.distributed as dist

    own_group = world > 1 and not dist.is_initialized()  # a calling program's group is kept
    if own_group:
        _init_distributed(args.device)
    try:
        return _run(project, args)
    finally:
        if own_group:
            dist.destroy_process_group()


def _init_distributed(device: str | None) -> None:
    """gloo on CPU, nccl on CUDA; each process on the GPU of its LOCAL_RANK."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and device in (None, "auto", "cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")


def _run(project: Project, args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else runs_folder(args.file)
    if distributed_rank()[0] == 0:  # the one process that writes
        check_folder(out)
        if args.out:
            check_run_folder(out, project, args.force)
    base = copy.deepcopy(project.training)
    trainer = prepare(project, args)
    if trainer.rank != 0:  # the other processes train and stay quiet
        state = trainer.run()
        return 0 if state == "finished" else 130
    label = run_label(project.training, base)
    try:
        if args.out:
            out.mkdir(parents=True, exist_ok=True)
        else:
            out = new_run_folder(out, label)
    except OSError as exc:
        raise write_failed(out, exc) from None
    varied = differences(project.training, base)
    bar = ProgressBar(trainer)
    trainer.add_listener(bar.update)
    trainer.add_listener(_health_warnings(HealthWatch(trainer)))
    RunWriter(out, project, label=label, varied=varied).attach(trainer)
    previous = signal.signal(signal.SIGINT, _stop_on_interrupt(trainer))
    start = time.perf_counter()
    try:
        state = trainer.run()
    except TrainingError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    except OSError as exc:  # the folder was fine at the start: a full disk, a lost mount
        raise write_failed(out, exc) from None
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    print(summary(trainer, state, time.perf_counter() - start, out))
    return 0 if state == "finished" else 130


def check_run_folder(out: Path, project: Project, force: bool) -> None:
    """Refuse (without --force) to write into a folder that holds another project's run or
    files LayerLab did not write. A run is this project's when its snapshot has this
    project's name: retraining an edited design replaces its own run."""
    if not out.is_dir() or force:
        return
    foreign = sorted(name for name in os.listdir(out)
                     if name not in RUN_FILES and not _our_temporary(name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "")
        raise CliError(f"{out} holds files LayerLab did not write ({shown}); use --force to "
                       "write the run there anyway, or choose another --out")
    snapshot = out / "project.layerlab.json"
    if not snapshot.exists():
        return
    try:
        data = parse_json(snapshot.read_bytes(), str(snapshot))
    except (OSError, ProjectFileError):
        data = {}
    if data.get("format") != FORMAT:
        raise CliError(f"{snapshot} is not a run's project snapshot; use --force to replace "
                       "it, or choose another --out")
    other = data.get("name", Project().name)
    if other != project.name:
        raise CliError(f"{out} holds a run of another project ({other!r}, not "
                       f"{project.name!r}); use --force to replace it, or choose another "
                       "--out")


def _our_temporary(name: str) -> bool:
    """A temporary file an interrupted atomic write left (core.atomic names them so)."""
    return any(name.startswith(f".{run}.") and ".tmp" in name for run in RUN_FILES)


def _stop_on_interrupt(trainer: Trainer):
    def handler(signum: int, frame: FrameType | None) -> None:
        if trainer.control.stopping:  # second Ctrl+C: give up at once
            raise KeyboardInterrupt
        print("\nstopping after this batch (Ctrl+C again to abort)…", file=sys.stderr)
        trainer.control.stop()
    return handler


def _health_warnings(watch: HealthWatch) -> Callable[[Record], None]:
    """A listener that prints each verdict of the run's health once, when it first stands
    (above the progress bar, on stderr)."""
    from tqdm import tqdm

    def warn(record: Record) -> None:
        if isinstance(record, HealthRecord):
            for verdict in watch.first_seen(record):
                tqdm.write(f"warning: {verdict.message}", file=sys.stderr)
    return warn


def summary(trainer: Trainer, state: str, seconds: float, out: Path) -> str:
    last = trainer.history[-1] if trainer.history else None
    parts = [f"{state} after {trainer.epoch} epoch(s), {trainer.step} steps, in {seconds:.1f} s"]
    if last and last.val_loss is not None:
        parts.append(f"val loss {last.val_loss:.4f}")
    if last and last.val_accuracy is not None:
        parts.append(f"val accuracy {100 * last.val_accuracy:.2f}%")
    scores = trainer.regression_scores(trainer.x_val, trainer.y_val)
    if scores is not None:
        parts.append(f"val R² {scores[0]:.4f}, val MSE {scores[1]:.4g}")
    data = trainer.data
    if data.test_x is not None and data.test_y is not None:
        _, acc = trainer.evaluate(data.test_x.to(trainer.device), data.test_y.to(trainer.device))
        if acc is not None:
            parts.append(f"test accuracy {100 * acc:.2f}% ({len(data.test_x):,} samples)")
    return "; ".join(parts) + f" → {out}"


class ProgressBar:
    """tqdm over all steps: epoch, loss, accuracy, samples/s, and tqdm's ETA."""

    def __init__(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        total = trainer.settings.epochs * trainer.batches_per_epoch
        self.bar = tqdm(total=total, initial=trainer.step, unit="step", dynamic_ncols=True,
                        mininterval=0.25, file=sys.stderr)
        self.epochs = trainer.settings.epochs
        self.accuracy = ""

    def update(self, record: Record) -> None:
        if isinstance(record, StepRecord):
            self.bar.update(1)
            if record.batch == 1 or record.batch == record.batches or record.step % 20 == 0:
                self.bar.set_postfix_str(
                    f"epoch {record.epoch}/{self.epochs} loss {record.loss:.4f}{self.accuracy} "
                    f"{record.samples_per_s:,.0f} samples/s", refresh=False)
        elif isinstance(record, EpochRecord) and record.val_accuracy is not None:
            self.accuracy = f" val acc {100 * record.val_accuracy:.1f}%"

    def close(self) -> None:
        self.bar.close()


def _download_progress():
    bars: dict[str, object] = {}

    def report(name: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(total=total or None, desc=f"downloading {name}", unit="B",
                                    unit_scale=True, file=sys.stderr)
        bar.update(done - bar.n)  # type: ignore[attr-defined]
        if total and done >= total:
            bar.close()  # type: ignore[attr-defined]
    return report
