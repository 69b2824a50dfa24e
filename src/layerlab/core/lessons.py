"""The bundled lessons (assets/lessons, shipped as layerlab.assets): ready experiments.

A lesson is a project plus the sweep that shows one of the seed's claims on real runs,
declared in `NAME.lesson.json`:

    {"title": "…", "order": 1, "look_for": "Two sentences of what to look for.",
     "project": "NAME.layerlab.json", "sets": ["optimizer=sgd,adam", …], "epochs": 40}

`sets` are `layerlab sweep --set` values (core/sweep.py); `epochs` (optional) overrides the
project's. The window's Help ▸ Lessons and `layerlab lessons NAME` both run
`lesson_plans(lesson, project)`, the project being the lesson's written to a file of its own
(`write_lesson_project`), so that the runs are kept beside it.

A lesson about pre-training compares ways to start instead of a sweep (`variants` in place
of `sets`): a first run trains
`pretrain.project` (a language model, say), and each of `variants` then trains the lesson's
project, from those weights or not (matched by name and shape, as `train --init-weights`:
a head of another shape is left as initialised), with nodes frozen and settings given as
`--set` values:

    {"pretrain": {"project": "NAME-lm.layerlab.json", "epochs": 25},
     "variants": [{"label": "from scratch"},
                  {"label": "LoRA", "pretrained": true, "frozen": ["embed"],
                   "set": {"block*.lora_rank": "4"}}], …}

`run_lesson` trains the pre-training run, then the variants from its weights;
`comparison` tabulates them (accuracy, loss, trainable parameters, seconds).
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from layerlab.core.atomic import atomic_write_text
from layerlab.core.project import Project, parse_json
from layerlab.core.runs import RunInfo
from layerlab.core.shapes import analyze
from layerlab.core.summary import summarise
from layerlab.core.sweep import (
    Listener,
    PlannedRun,
    StopFlag,
    matched_nodes,
    parse_sets,
    parse_value,
    plan_sweep,
    run_sweep,
    train_plan,
)

SUFFIX = ".lesson.json"
PROJECT_SUFFIX = ".layerlab.json"
PRETRAIN_LABEL = "pre-training"
START = "start"  # the key of `varied` that names a variant
WEIGHTS = "weights.safetensors"  # what a run folder keeps its final weights in


def _folder() -> Traversable:
    return importlib.resources.files("layerlab.assets") / "lessons"


@dataclass(frozen=True)
class Pretrain:
    """The run whose final weights the variants may start from."""

    project_file: str
    epochs: int | None = None


@dataclass(frozen=True)
class Variant:
    """One way to start a run: from the pre-trained weights or not, with these nodes (ids
    or patterns) frozen and these settings (`--set` keys, one value each)."""

    label: str
    pretrained: bool = False
    frozen: tuple[str, ...] = ()
    sets: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lesson:
    """One lesson: what it shows, its project's file and the sweep that shows it (or the
    pre-training run and the variants that start from it)."""

    name: str
    title: str
    look_for: str
    project_file: str
    sets: tuple[str, ...] = ()
    epochs: int | None = None
    order: int = 0
    pretrain: Pretrain | None = None
    variants: tuple[Variant, ...] = ()

    def project_text(self, file: str | None = None) -> str:
        """The JSON text of the lesson's project (or of another of its files)."""
        return (_folder() / (file or self.project_file)).read_text(encoding="utf-8")

    def project(self) -> Project:
        """The lesson's project (not saved anywhere yet: its path is None)."""
        return _read(self.project_text(), self.project_file)

    @property
    def runs(self) -> int:
        """How many runs it trains: every combination of its sets, or each variant and the
        pre-training run."""
        if self.variants:
            return len(self.variants) + (self.pretrain is not None)
        count = 1
        for text in self.sets:
            count *= len(text.partition("=")[2].split(","))
        return count


def _read(text: str, file: str) -> Project:
    return Project.from_dict(parse_json(text.encode("utf-8"), file), file)


def _lesson(name: str, data: dict[str, Any]) -> Lesson:
    epochs, pretrain = data.get("epochs"), data.get("pretrain")
    if bool(data.get("sets")) == bool(data.get("variants")):
        raise ValueError(f"lesson {name} must have either sets or variants")
    return Lesson(name=name, title=str(data["title"]), look_for=str(data["look_for"]),
                  project_file=str(data["project"]), sets=tuple(map(str, data.get("sets", ()))),
                  epochs=int(epochs) if epochs is not None else None,
                  order=int(data.get("order", 0)),
                  pretrain=None if pretrain is None else Pretrain(
                      str(pretrain["project"]), _int_or_none(pretrain.get("epochs"))),
                  variants=tuple(Variant(str(v["label"]), bool(v.get("pretrained", False)),
                                         tuple(map(str, v.get("frozen", ()))),
                                         {str(k): str(x) for k, x in v.get("set", {}).items()})
                                 for v in data.get("variants", ())))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def lessons() -> list[Lesson]:
    """Every bundled lesson, in the order they are best taken."""
    found = [_lesson(p.name[: -len(SUFFIX)], json.loads(p.read_text(encoding="utf-8")))
             for p in _folder().iterdir() if p.name.endswith(SUFFIX)]
    return sorted(found, key=lambda lesson: (lesson.order, lesson.name))


def lesson_names() -> list[str]:
    return [lesson.name for lesson in lessons()]


def load_lesson(name: str) -> Lesson:
    """One lesson by name; KeyError names the valid ones."""
    for lesson in lessons():
        if lesson.name == name:
            return lesson
    raise KeyError(f"no lesson named {name!r}; choose one of {', '.join(lesson_names())}")


def write_lesson_project(lesson: Lesson, folder: Path) -> Path:
    """Write the lesson's project as `folder/NAME.layerlab.json` (atomically) and return
    its path; its runs then go to `folder/NAME.runs/`."""
    path = Path(folder) / f"{lesson.name}{PROJECT_SUFFIX}"
    atomic_write_text(path, lesson.project_text())
    return path


def lesson_plans(lesson: Lesson, project: Project, epochs: int | None = None,
                 pretrained: Path | None = None) -> list[PlannedRun]:
    """The lesson's runs for `project` (the lesson's, as loaded from where it was written),
    with `epochs` (or the lesson's own) for every run; a lesson's variants that start from
    the pre-trained weights start from `pretrained` (the pre-training run's weights)."""
    chosen = epochs if epochs is not None else lesson.epochs
    base = {} if chosen is None else {"epochs": chosen}
    if not lesson.variants:
        return plan_sweep(project, parse_sets(list(lesson.sets), project), base)
    return [_variant_plan(project, variant, base, pretrained) for variant in lesson.variants]


def _variant_plan(project: Project, variant: Variant, base: dict[str, Any],
                  pretrained: Path | None) -> PlannedRun:
    """`project` with `base` and the variant's settings applied and its nodes frozen
    (SweepError names a setting or node that does not fit, or a run that cannot train)."""
    values = {key: parse_value(key, text, project) for key, text in variant.sets.items()}
    (plan,) = plan_sweep(project, [], {**base, **values})
    planned = plan.project
    for pattern in variant.frozen:
        for node in matched_nodes(f"{pattern}.frozen", planned):
            planned.graph.nodes[node]["frozen"] = True
    return PlannedRun(planned, variant.label, {START: variant.label},
                      pretrained if variant.pretrained else None)


def pretrain_plan(lesson: Lesson, path: Path | None, epochs: int | None = None
                  ) -> PlannedRun:
    """The pre-training run of `lesson` (which must have one), its data found from `path`
    (where the lesson's project was written), with `epochs` or the lesson's own."""
    assert lesson.pretrain is not None
    project = _read(lesson.project_text(lesson.pretrain.project_file),
                    lesson.pretrain.project_file)
    project.path = path
    chosen = epochs if epochs is not None else lesson.pretrain.epochs
    (plan,) = plan_sweep(project, [], {} if chosen is None else {"epochs": chosen})
    return PlannedRun(plan.project, PRETRAIN_LABEL, {START: PRETRAIN_LABEL})


@dataclass(frozen=True)
class LessonRuns:
    """What `run_lesson` trained: the pre-training run, the variants' plans and runs."""

    pretrained: RunInfo
    plans: list[PlannedRun]
    runs: list[RunInfo]


def run_lesson(lesson: Lesson, project: Project, out_dir: Path, *, epochs: int | None = None,
               pretrain_epochs: int | None = None, workers: int = 1,
               listener: Listener | None = None, stop: StopFlag | None = None) -> LessonRuns:
    """Train the lesson's pre-training run, then (once it finished) its variants from its
    final weights, into `out_dir` (summary.csv holds the variants)."""
    first = pretrain_plan(lesson, project.path, pretrain_epochs)
    pretrained = train_plan(first.project, first.label, first.varied, out_dir, stop)
    if listener:
        listener(1, lesson.runs, pretrained)
    if pretrained.status != "finished" or (stop is not None and stop.is_set()):
        return LessonRuns(pretrained, [], [])
    plans = lesson_plans(lesson, project, epochs, pretrained.folder / WEIGHTS)

    def counted(done: int, total: int, info: RunInfo) -> None:
        if listener:
            listener(done + 1, total + 1, info)

    return LessonRuns(pretrained, plans, run_sweep(plans, out_dir, workers, counted, stop))


@dataclass(frozen=True)
class Compared:
    """One variant's outcome, for the lesson's table."""

    label: str
    trainable: int  # parameters its optimizer updates
    val_accuracy: float | None  # final
    val_loss: float | None  # final
    seconds: float
    status: str


def comparison(plans: list[PlannedRun], runs: list[RunInfo]) -> list[Compared]:
    """The variants side by side, in plan order."""
    rows = []
    for plan, run in zip(plans, runs, strict=True):
        graph = plan.project.graph
        rows.append(Compared(plan.label, summarise(graph, analyze(graph)).trainable,
                             run.final_val_accuracy, run.final_val_loss, run.seconds,
                             run.status))
    return rows
