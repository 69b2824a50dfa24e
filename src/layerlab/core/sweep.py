"""Sweeps: every combination of a few settings, each trained as its own run.

`parse_sets(["optimizer=sgd,adam", "lr=0.1,0.01", "drop1.p=0,0.5"], project)` reads and checks
the settings to vary against the project, before anything runs; `plan_sweep` makes one project
per combination (with the values applied exactly as `layerlab train --optimizer … --lr …`
would); `run_sweep` trains them, one after the other or in worker processes, each through
core.runs.RunWriter into its own run folder, and writes `summary.csv` beside them. A run in a
sweep gives exactly the metrics `layerlab train` gives with the same settings and seed.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import fnmatch
import io
import itertools
import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from layerlab.core.atomic import atomic_write_text
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.compiler import checked
from layerlab.core.datasets import DatasetError, absolute_data, project_folder
from layerlab.core.errors import GraphError, format_error
from layerlab.core.project import Project
from layerlab.core.records import Record, StepRecord, TrainingError
from layerlab.core.runs import (
    RunInfo,
    RunWriter,
    format_value,
    new_run_folder,
    read_run,
    varied_label,
)
from layerlab.core.settings import settings_from, with_overrides
from layerlab.core.spec import Param
from layerlab.core.validation import FIELDS
from layerlab.core.weights import WeightsError, load_weights

# a sweep key → the training field it sets (validation.FIELDS names and checks it)
TRAINING_KEYS = {"optimizer": "optimizer.name", "lr": "optimizer.lr",
                 "batch_size": "batch_size", "epochs": "epochs", "l1": "l1", "l2": "l2",
                 "seed": "seed"}
SUMMARY = "summary.csv"
SUMMARY_METRICS = ("final_val_loss", "best_val_loss", "final_val_accuracy",
                   "best_val_accuracy", "seconds")
STOP_CHECK_S = 0.1  # how often a run looks whether the sweep was asked to stop


class SweepError(Exception):
    """A sweep that cannot start; one sentence naming the --set key, node or value."""


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class Axis:
    """One varied setting: its key as typed (`lr`, `drop1.p`) and its values, checked."""

    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class PlannedRun:
    """One combination: the project with its values applied, its label and `varied`; it
    starts from `init_weights` (matched by name and shape, as `train --init-weights`) when
    given: fine-tuning."""

    project: Project
    label: str
    varied: dict[str, str]
    init_weights: Path | None = None


# -- reading --set ----------------------------------------------------------------------
def parse_sets(sets: Sequence[str], project: Project) -> list[Axis]:
    """`KEY=V1,V2…` each; keys: optimizer, lr, batch_size, epochs, l1, l2, seed, and per
    node NODE.PARAM (a layer parameter), NODE.type (an activation's type), NODE.init,
    where NODE may be a pattern (`fc*.init`: every node it matches gets the value).
    Every value is checked against `project`; SweepError names the first culprit."""
    axes: list[Axis] = []
    for text in sets:
        key, sep, values = (part.strip() for part in text.partition("="))
        items = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(items):
            raise SweepError(f"--set {text!r} must read KEY=V1,V2,… (for example "
                             "lr=0.1,0.01)")
        if any(a.key == key for a in axes):
            raise SweepError(f"--set {key} is given twice; list all its values in one --set")
        axes.append(Axis(key, tuple(parse_value(key, v, project) for v in items)))
    return axes


def parse_value(key: str, text: str, project: Project) -> Any:
    """One value of `key` as the project file stores it; SweepError says why not."""
    if key in TRAINING_KEYS:
        spec = FIELDS[TRAINING_KEYS[key]]
        try:
            value = spec.parse(text)
        except ValueError:
            value = text
        reason = spec.problem(value)
        if reason:
            raise SweepError(f"--set {key}: {spec.label} must be {spec.expected()}, "
                             f"not {text!r}")
        return value
    name = key.rpartition(".")[2]
    values = [_node_value(key, node, project.graph.nodes[node].get("type"), name, text)
              for node in matched_nodes(key, project)]
    return values[0]


def matched_nodes(key: str, project: Project) -> list[str]:
    """The nodes a NODE.PARAM key names: one node id, or every node a pattern with * or ?
    matches (`fc*.init` sets the init of fc1, fc2, …); SweepError when none."""
    pattern, dot, _ = key.rpartition(".")
    ids = [str(n) for n in project.graph.nodes]
    nodes = fnmatch.filter(ids, pattern) if any(c in pattern for c in "*?[") else \
        [pattern] if pattern in ids else []
    if not dot or not nodes:
        known = ", ".join([*TRAINING_KEYS, "NODE.PARAM"])
        raise SweepError(f"--set {key}: no such setting or node (keys: {known}; nodes: "
                         f"{', '.join(ids)})")
    return nodes


def _node_value(key: str, node: str, node_type: Any, name: str, text: str) -> Any:
    if name == "type":
        return _activation_type(key, node, node_type, text)
    spec = CATALOGUE.get(node_type)
    names = [p.name for p in spec.params] if spec else []
    if spec is None or name not in names:
        raise SweepError(f"--set {key}: node {node} ({node_type}) has no parameter {name!r}"
                         + (f"; it has {', '.join(names)}" if names else ""))
    value = _param_value(spec.param(name), text)
    reason = spec.param(name).check(value)
    if reason:
        raise SweepError(f"--set {key}: {name} of node {node} {reason}")
    return value


def _activation_type(key: str, node: str, node_type: Any, text: str) -> str:
    activations = {t.lower(): t for t, s in CATALOGUE.items() if s.group == "activation"}
    if node_type not in activations.values():
        raise SweepError(f"--set {key}: node {node} is a {node_type}, not an activation; "
                         "only an activation's type can be varied")
    chosen = activations.get(text.lower())
    if chosen is None:
        raise SweepError(f"--set {key}: {text!r} is not an activation (choose from "
                         f"{', '.join(activations.values())})")
    return chosen


def _param_value(param: Param, text: str) -> Any:
    """A typed value for a layer parameter: numbers as numbers, true/false, lists as
    JSON; anything else stays text (Param.check then says what it must be)."""
    if param.kind in ("choice", "text"):
        return text
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# -- planning ---------------------------------------------------------------------------
def plan_sweep(project: Project, axes: Sequence[Axis],
               base: dict[str, Any] | None = None) -> list[PlannedRun]:
    """Every combination of `axes` (the first axis varying slowest): `project` with
    `base` training overrides (e.g. {"epochs": 5}) and the combination applied. Each
    combination must train: SweepError names the first that cannot."""
    start = copy.deepcopy(project)
    start.training = absolute_data(start.training, project_folder(project.path))
    plans = []
    for combination in itertools.product(*(axis.values for axis in axes)):
        values = dict(zip((axis.key for axis in axes), combination, strict=True))
        planned = apply_values(start, {**(base or {}), **values})
        varied = {k: format_value(v) for k, v in values.items()}
        label = varied_label(varied) or "run"
        _check_plan(planned, label)
        plans.append(PlannedRun(planned, label, varied))
    return plans


def apply_values(project: Project, values: dict[str, Any]) -> Project:
    """A copy of `project` with sweep values applied; training keys as `layerlab train`'s
    options apply them (another optimizer drops the old one's arguments)."""
    out = copy.deepcopy(project)
    out.training = with_overrides(out.training, **{k: v for k, v in values.items()
                                                   if k in TRAINING_KEYS})
    for key, value in values.items():
        if key not in TRAINING_KEYS:
            for node in matched_nodes(key, out):
                _set_node(out.graph.nodes[node], key.rpartition(".")[2], value)
    return out


def _set_node(data: dict[str, Any], name: str, value: Any) -> None:
    if name == "type":  # parameters the new activation does not have are dropped
        kept = {p.name for p in CATALOGUE[value].params}
        data["type"] = value
        data["params"] = {k: v for k, v in data.get("params", {}).items() if k in kept}
    else:
        data.setdefault("params", {})[name] = value


def _check_plan(project: Project, label: str) -> None:
    try:
        checked(project.graph)
        settings_from(project.training)
    except GraphError as exc:
        node, message = exc.errors[0]
        raise SweepError(f"the run {label!r} cannot train: {format_error(node, message)}"
                         ) from None


# -- running ----------------------------------------------------------------------------
Listener = Callable[[int, int, RunInfo], None]  # (runs done, runs in all, the run just done)


def train_plan(project: Project, label: str, varied: dict[str, str], out_dir: Path,
               stop: StopFlag | None = None, init_weights: Path | None = None) -> RunInfo:
    """Train one planned run into a new folder of `out_dir` as `layerlab train` would
    (from `init_weights` as `--init-weights` would); a run that cannot start or fails is
    written as failed, with its sentence."""
    try:
        trainer = _trainer(project)
        if init_weights is not None:
            load_weights(trainer.model, init_weights)
    except (GraphError, DatasetError, TrainingError, WeightsError) as exc:
        folder = new_run_folder(out_dir, label)
        writer = RunWriter(folder, project, label=label, varied=varied)
        writer.set_status("failed", str(exc))
        return read_run(folder)
    folder = new_run_folder(out_dir, label)
    RunWriter(folder, project, label=label, varied=varied).attach(trainer)
    if stop is not None:
        trainer.add_listener(_stopper(trainer, stop))
    with contextlib.suppress(TrainingError):  # the writer recorded it and its sentence
        trainer.run()
    return read_run(folder)


def _trainer(project: Project) -> Any:
    from layerlab.core.trainer import Trainer  # torch: imported when a run starts

    return Trainer(project, settings_from(project.training))


def _stopper(trainer: Any, stop: StopFlag) -> Callable[[Record], None]:
    """A listener that stops the run at a batch boundary once `stop` is set (looked at
    every STOP_CHECK_S, so a step pays for a clock read, not a lock)."""
    last = [time.perf_counter()]

    def check(record: Record) -> None:
        if isinstance(record, StepRecord) and time.perf_counter() - last[0] >= STOP_CHECK_S:
            last[0] = time.perf_counter()
            if stop.is_set():
                trainer.control.stop()
    return check


def default_workers(runs: int) -> int:
    """Processes only where cores are idle: one per two idle cores (a torch run uses more
    than one, and two torch threads on one core halve the speed), at most one per run."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(runs, int(_cores() - load) // 2))


def run_sweep(plans: Sequence[PlannedRun], out_dir: Path, workers: int = 1,
              listener: Listener | None = None, stop: StopFlag | None = None
              ) -> list[RunInfo]:
    """Train every plan into `out_dir/<date-time>-<label>/` and write `out_dir/summary.csv`;
    in this process when `workers` is 1, else in that many worker processes. Once `stop`
    is set, the running runs stop at a batch boundary (saved as stopped) and no new one
    starts. Returns the runs in plan order (those that ran)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if workers <= 1 or len(plans) <= 1:
        done: dict[int, RunInfo] = {}
        for index, plan in enumerate(plans):
            if stop is not None and stop.is_set():
                break
            done[index] = train_plan(plan.project, plan.label, plan.varied, out_dir, stop,
                                     plan.init_weights)
            if listener:
                listener(len(done), len(plans), done[index])
    else:
        done = _run_in_processes(plans, out_dir, workers, listener, stop)
    runs = [done[i] for i in sorted(done)]
    write_summary(out_dir / SUMMARY, [p for i, p in enumerate(plans) if i in done], runs)
    return runs


def _run_in_processes(plans: Sequence[PlannedRun], out_dir: Path, workers: int,
                      listener: Listener | None, stop: StopFlag | None) -> dict[int, RunInfo]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    tasks, results, halt = context.Queue(), context.Queue(), context.Event()
    for index, plan in enumerate(plans):
        tasks.put((index, plan.project.to_json(), None if plan.project.path is None
                   else str(plan.project.path), plan.label, plan.varied,
                   None if plan.init_weights is None else str(plan.init_weights)))
    threads = max(1, _cores() // workers)
    processes = [context.Process(target=_worker, args=(tasks, results, halt, str(out_dir),
                                                       threads), daemon=True)
                 for _ in range(min(workers, len(plans)))]
    with _children_ignore_interrupts():
        for process in processes:
            tasks.put(None)
            process.start()
    done: dict[int, RunInfo] = {}
    try:
        while any(p.is_alive() for p in processes) or not results.empty():
            if stop is not None and stop.is_set():
                halt.set()
            try:
                index, folder = results.get(timeout=0.1)
            except queue.Empty:
                continue
            done[index] = read_run(folder)
            if listener:
                listener(len(done), len(plans), done[index])
    finally:
        for process in processes:  # only reached early by a second Ctrl+C or an error
            if process.is_alive():
                process.terminate()
            process.join()
    return done


@contextlib.contextmanager
def _children_ignore_interrupts() -> Iterator[None]:
    """Start processes with Ctrl+C ignored (an ignored signal stays ignored in a spawned
    child from its first instruction): the parent alone decides how a sweep stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


def _worker(tasks: Any, results: Any, halt: Any, out_dir: str, threads: int) -> None:
    """A worker process: runs planned runs until none is left or the sweep stops. Ctrl+C
    is the parent's to handle (it sets `halt`, and each run stops at a batch)."""
    import torch

    torch.set_num_threads(threads)
    while not halt.is_set():
        task = tasks.get()
        if task is None:
            return
        index, text, path, label, varied, weights = task
        project = Project.from_dict(json.loads(text), path or "<sweep>")
        project.path = None if path is None else Path(path)
        info = train_plan(project, label, varied, Path(out_dir), halt,
                          None if weights is None else Path(weights))
        results.put((index, str(info.folder)))


def write_summary(path: Path, plans: Sequence[PlannedRun], runs: Sequence[RunInfo]) -> None:
    """summary.csv: one row per run, a column per varied setting (named as in --set), then
    final/best validation loss and accuracy, seconds, the run's status and folder."""
    keys = list(plans[0].varied) if plans else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*keys, *SUMMARY_METRICS, "status", "run"])
    for plan, run in zip(plans, runs, strict=True):
        metrics = [getattr(run, name) for name in SUMMARY_METRICS]
        writer.writerow([*(plan.varied[k] for k in keys),
                         *("" if m is None else repr(m) for m in metrics[:-1]),
                         f"{run.seconds:.3f}", run.status, run.folder.name])
    atomic_write_text(path, buffer.getvalue())
