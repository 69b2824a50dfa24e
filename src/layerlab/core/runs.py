"""Runs kept with the project: one folder per run, and the folder is the truth.

`NAME.layerlab.json` keeps its runs in `NAME.runs/<YYYYmmdd-HHMMSS>-<label>/`, each holding
what `layerlab train --out` writes (weights.safetensors, metrics.csv, project.layerlab.json,
checkpoint.pt) plus run.json: its label, status, start, training time, the settings that were
varied to make it, and a failure's sentence. RunWriter is the one writer of run folders
(`layerlab train`, `layerlab sweep`, the window); read_run and list_runs read them back.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerlab.core.atomic import atomic_write_text
from layerlab.core.records import EpochRecord, Record, StateRecord
from layerlab.core.weights import save_weights

if TYPE_CHECKING:
    from layerlab.core.project import Project
    from layerlab.core.trainer import Trainer

PROJECT_SUFFIX = ".layerlab.json"
RUN_JSON = "run.json"
RUN_FILES = ("weights.safetensors", "metrics.csv", "project.layerlab.json", "checkpoint.pt",
             RUN_JSON)
STATUSES = ("running", "paused", "stopped", "finished", "failed")
SAVE_EVERY_S = 10.0  # the least time between two saves of a run folder during a run
METRICS_HEADER = ("epoch", "step", "train_loss", "val_loss", "val_accuracy", "val_r2",
                  "seconds", "samples_per_s")
SHORT_KEYS = {"batch_size": "batch"}  # how a label writes a setting's key
BARE_KEYS = ("optimizer", "dataset")  # shown by their value alone: "adam lr=0.01"


class RunError(Exception):
    """A folder that is not a run, or a run that cannot be changed; one sentence."""


# -- where runs live --------------------------------------------------------------------
def runs_folder(project_path: str | os.PathLike[str]) -> Path:
    """`<dir>/spiral.runs` for `<dir>/spiral.layerlab.json` (any other file: its stem)."""
    path = Path(project_path)
    name = path.name
    stem = name[: -len(PROJECT_SUFFIX)] if name.endswith(PROJECT_SUFFIX) else path.stem
    return path.parent / f"{stem}.runs"


def slug(label: str) -> str:
    """A label as a folder name: letters, digits and . = _ - kept, a pattern's * ? [ ]
    dropped, anything else one '-'."""
    text = re.sub(r"[^A-Za-z0-9.=_-]+", "-", re.sub(r"[*?\[\]]", "", label)).strip("-.")
    return text[:60].rstrip("-.") or "run"


def new_run_folder(parent: Path, label: str, when: datetime | None = None) -> Path:
    """Create and claim `<parent>/<YYYYmmdd-HHMMSS>-<slug>` (with -2, -3… when taken):
    claiming by mkdir keeps two processes that start at once from sharing a folder."""
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{stamp}-{slug(label)}"
    for n in range(1, 10_000):
        folder = parent / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise RunError(f"{parent} has no free name for a run labelled {label!r}")


# -- labels -----------------------------------------------------------------------------
def format_value(value: Any) -> str:
    """A setting's value as a label and summary.csv write it: 0.01, 64, adam."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def varied_label(varied: Mapping[str, str]) -> str:
    """"sgd lr=0.1 fc1.p=0.5": each varied setting, the optimizer by its name alone."""
    return " ".join(v if k in BARE_KEYS else f"{SHORT_KEYS.get(k, k)}={v}"
                    for k, v in varied.items())


def _settings(training: Mapping[str, Any]) -> dict[str, str]:
    optimizer = training.get("optimizer", {})
    return {
        "dataset": format_value(training.get("dataset", {}).get("name", "")),
        "optimizer": format_value(optimizer.get("name", "")),
        "lr": format_value(optimizer.get("lr", "")),
        "batch_size": format_value(training.get("batch_size", "")),
        "epochs": format_value(training.get("epochs", "")),
        "l1": format_value(training.get("l1", 0.0)),
        "l2": format_value(training.get("l2", 0.0)),
        "seed": format_value(training.get("seed", 0)),
    }


def differences(training: Mapping[str, Any], base_training: Mapping[str, Any]) -> dict[str, str]:
    """The settings of `training` that differ from `base_training`, as run.json's `varied`
    keeps them; a different optimizer brings its learning rate along."""
    now, base = _settings(training), _settings(base_training)
    differs = {k: v for k, v in now.items() if v != base[k]}
    if "optimizer" in differs:
        differs = {"optimizer": now["optimizer"], "lr": now["lr"],
                   **{k: v for k, v in differs.items() if k not in ("optimizer", "lr")}}
    return differs


def run_label(training: Mapping[str, Any], base_training: Mapping[str, Any]) -> str:
    """What differs from `base_training` as short text ("adam lr=0.01", "sgd lr=0.1
    batch=64"); with nothing different, "<optimizer> lr=<lr>"."""
    now = _settings(training)
    return varied_label(differences(training, base_training)
                        or {"optimizer": now["optimizer"], "lr": now["lr"]})


# -- metrics.csv ------------------------------------------------------------------------
def metrics_csv(history: list[EpochRecord]) -> str:
    """metrics.csv of a run: one row per epoch, floats as repr (exact), speed as %.6g."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METRICS_HEADER)
    for r in history:
        writer.writerow([r.epoch, r.step, repr(r.train_loss),
                         "" if r.val_loss is None else repr(r.val_loss),
                         "" if r.val_accuracy is None else repr(r.val_accuracy),
                         "" if r.val_r2 is None else repr(r.val_r2),
                         f"{r.seconds:.6g}", f"{r.samples_per_s:.6g}"])
    return buffer.getvalue()


def read_metrics(path: Path) -> list[dict[str, str]]:
    """metrics.csv's rows as dicts by header (columns grow by name); [] when absent."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return []


# -- writing ----------------------------------------------------------------------------
class RunWriter:
    """Writes one run's folder as its trainer reports: run.json and the project snapshot
    when the run starts; every file at an epoch's end once SAVE_EVERY_S have passed since
    the last save (four synced files per epoch made a 300-epoch run 20× slower) and when
    the run stops or finishes; run.json at each pause, resume and failure. Each file is
    replaced atomically. Only the training thread calls it (through the trainer's
    listener), so the model is never read mid-step."""

    def __init__(self, folder: Path, project: Project, *, label: str,
                 varied: Mapping[str, str] | None = None, every_s: float | None = None) -> None:
        self.folder = Path(folder)
        self.project = project
        self.label = label
        self.varied = dict(varied or {})
        self.every_s = SAVE_EVERY_S if every_s is None else every_s
        self.status = "running"
        self.message = ""
        # to the millisecond: runs that start within one second still list in their order
        self.started = datetime.now().astimezone().isoformat(timespec="milliseconds")
        self._last_save = time.perf_counter()
        self._trainer: Trainer | None = None
        self._written = False  # run.json is this writer's (an older run's may be there)

    def attach(self, trainer: Trainer) -> None:
        """Listen to `trainer`: the run folder follows it from its first record on."""
        self._trainer = trainer
        trainer.add_listener(self.record)

    def record(self, record: Record) -> None:
        trainer = self._trainer
        assert trainer is not None, "attach the writer to its trainer first"
        if isinstance(record, EpochRecord):
            if time.perf_counter() - self._last_save >= self.every_s:
                self.save(trainer)
        elif isinstance(record, StateRecord):
            if record.state in ("stopped", "finished"):
                self.finish(trainer, record.state)
            elif record.state == "failed":
                self.fail(trainer, record.message)
            else:
                self.set_status(record.state)

    def set_status(self, status: str, message: str = "") -> None:
        """run.json with a new status (the folder and the snapshot are made on the first)."""
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        self.status, self.message = status, message
        self.folder.mkdir(parents=True, exist_ok=True)
        snapshot = self.folder / "project.layerlab.json"
        if not snapshot.exists():
            atomic_write_text(snapshot, self.project.to_json())
        self._write_run_json(self._trainer)

    def save(self, trainer: Trainer) -> None:
        """weights.safetensors, metrics.csv, project.layerlab.json, checkpoint.pt, run.json."""
        self.folder.mkdir(parents=True, exist_ok=True)
        save_weights(trainer.model, self.folder / "weights.safetensors")
        atomic_write_text(self.folder / "metrics.csv", metrics_csv(trainer.history))
        atomic_write_text(self.folder / "project.layerlab.json", self.project.to_json())
        trainer.save_checkpoint(self.folder / "checkpoint.pt")
        self._write_run_json(trainer)
        self._last_save = time.perf_counter()

    def finish(self, trainer: Trainer, status: str, message: str = "") -> None:
        """The run ended (finished or stopped): every file, then its status."""
        self.status, self.message = status, message
        self.save(trainer)

    def fail(self, trainer: Trainer, message: str) -> None:
        """The run failed: its metrics so far and the sentence; the weights of the last
        save are kept (the failing step's weights may not be numbers)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / "metrics.csv", metrics_csv(trainer.history))
        self.set_status("failed", message)

    def _write_run_json(self, trainer: Trainer | None) -> None:
        path = self.folder / RUN_JSON
        if self._written:  # renamed while it runs (rename_run): the new label stays
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                self.label = str(json.loads(path.read_text(encoding="utf-8"))["label"])
        seconds = sum(r.seconds for r in trainer.history) if trainer else 0.0
        data = {"label": self.label, "status": self.status, "started": self.started,
                "seconds": round(seconds, 3), "varied": self.varied,
                "message": self.message, "pid": os.getpid(), "host": socket.gethostname()}
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        self._written = True


# -- reading ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunInfo:
    """One run as its folder holds it."""

    folder: Path
    label: str
    status: str
    started: str
    seconds: float
    varied: dict[str, str] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, str]] = field(default_factory=list)
    message: str = ""

    @property
    def key(self) -> str:
        """The run's key in the window: its folder's path as text."""
        return str(self.folder)

    def _column(self, name: str) -> list[float]:
        values = []
        for row in self.metrics:
            try:
                value = float(row.get(name) or "nan")
            except ValueError:
                continue
            if math.isfinite(value):
                values.append(value)
        return values

    @cached_property
    def _val_losses(self) -> list[float]:  # read once: the runs table asks for each twice
        return self._column("val_loss")

    @cached_property
    def _val_accuracies(self) -> list[float]:
        return self._column("val_accuracy")

    @property
    def best_val_loss(self) -> float | None:
        return min(self._val_losses, default=None)

    @property
    def final_val_loss(self) -> float | None:
        return self._val_losses[-1] if self._val_losses else None

    @property
    def best_val_accuracy(self) -> float | None:
        return max(self._val_accuracies, default=None)

    @property
    def final_val_accuracy(self) -> float | None:
        return self._val_accuracies[-1] if self._val_accuracies else None


def read_run(folder: str | os.PathLike[str]) -> RunInfo:
    """The run in `folder`; RunError when it is not one (no readable run.json)."""
    path = Path(folder)
    try:
        data = json.loads((path / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunError(f"{path} is not a run: it has no readable {RUN_JSON}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path / RUN_JSON} is not a run's description")
    status = str(data.get("status", "stopped"))
    if status not in STATUSES:
        status = "stopped"
    if status in ("running", "paused") and not _writer_alive(data):
        status = "stopped"  # its process ended without saying so (killed, crashed)
    varied = data.get("varied")
    return RunInfo(folder=path, label=str(data.get("label", path.name)), status=status,
                   started=str(data.get("started", "")), seconds=_number(data.get("seconds")),
                   varied={str(k): str(v) for k, v in varied.items()}
                   if isinstance(varied, dict) else {},
                   training=_training(path / "project.layerlab.json"),
                   metrics=read_metrics(path / "metrics.csv"),
                   message=str(data.get("message", "")))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else 0.0


def _training(snapshot: Path) -> dict[str, Any]:
    try:
        data = json.loads(snapshot.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    training = data.get("training") if isinstance(data, dict) else None
    return training if isinstance(training, dict) else {}


def _writer_alive(data: Mapping[str, Any]) -> bool:
    """Whether the process that wrote run.json still runs (another host's: assumed so)."""
    pid = data.get("pid")
    if data.get("host") != socket.gethostname() or not isinstance(pid, int):
        return True
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill would end the process there; assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


# A file last changed longer ago than this is settled: any later change shows in its time.
# (File times tick every few milliseconds: two writes within one tick can leave one time.)
SETTLED_S = 2.0
# Per runs folder: each run read from it, with its files' times when they were read.
_listed: dict[Path, dict[Path, tuple[tuple[int | None, ...], RunInfo]]] = {}


def _file_times(folder: Path) -> tuple[tuple[int | None, ...], bool]:
    """The run files' modification times (None: absent), and whether all are settled."""
    times = []
    for name in (RUN_JSON, "metrics.csv", "project.layerlab.json"):
        try:
            times.append((folder / name).stat().st_mtime_ns)
        except OSError:
            times.append(None)
    settled_before = time.time_ns() - int(SETTLED_S * 1e9)
    return tuple(times), all(t is None or t < settled_before for t in times)


def list_runs(project_path: str | os.PathLike[str]) -> list[RunInfo]:
    """The project's runs, oldest first; folders that are not runs are skipped. A run whose
    files are settled and unchanged since the last listing is not read again (the window
    lists the runs as each run begins and ends: a hundred runs took 50 ms read anew, 3 ms
    so); a running or paused one always is (its process may have ended without a word)."""
    folder = runs_folder(project_path)
    if not folder.is_dir():
        return []
    known, listed = _listed.get(folder, {}), {}
    for child in folder.iterdir():
        if not child.is_dir():
            continue
        times, settled = _file_times(child)
        cached = known.get(child)
        if cached is not None and cached[0] == times:
            listed[child] = cached
            continue
        try:
            run = read_run(child)
        except RunError:
            continue
        if settled and run.status not in ("running", "paused"):
            listed[child] = (times, run)
        else:
            listed[child] = ((), run)  # read again next time
    _listed[folder] = listed
    return sorted((run for _times, run in listed.values()),
                  key=lambda r: (r.started, r.folder.name))


def rename_run(folder: str | os.PathLike[str], label: str) -> None:
    """A new label in run.json (the folder keeps its name)."""
    path = Path(folder) / RUN_JSON
    read_run(folder)  # RunError when it is not a run
    data = json.loads(path.read_text(encoding="utf-8"))
    data["label"] = label
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def delete_run(folder: str | os.PathLike[str]) -> None:
    """Remove a run's folder (only a run's: a folder without run.json is refused)."""
    read_run(folder)
    shutil.rmtree(folder)
