"""The bundled lessons (assets/lessons, shipped as layerlab.assets): ready experiments.

A lesson is a project plus the sweep that shows one of the seed's claims on real runs,
declared in `NAME.lesson.json`:

    {"title": "…", "order": 1, "look_for": "Two sentences of what to look for.",
     "project": "NAME.layerlab.json", "sets": ["optimizer=sgd,adam", …], "epochs": 40}

`sets` are `layerlab sweep --set` values (core/sweep.py); `epochs` (optional) overrides the
project's. The window's Help ▸ Lessons and `layerlab lessons NAME` both run
`lesson_plans(lesson, project)`, the project being the lesson's written to a file of its own
(`write_lesson_project`), so that the runs are kept beside it.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from layerlab.core.atomic import atomic_write_text
from layerlab.core.project import Project, parse_json
from layerlab.core.sweep import PlannedRun, parse_sets, plan_sweep

SUFFIX = ".lesson.json"
PROJECT_SUFFIX = ".layerlab.json"


def _folder() -> Traversable:
    return importlib.resources.files("layerlab.assets") / "lessons"


@dataclass(frozen=True)
class Lesson:
    """One lesson: what it shows, its project's file and the sweep that shows it."""

    name: str
    title: str
    look_for: str
    project_file: str
    sets: tuple[str, ...]
    epochs: int | None = None
    order: int = 0

    def project_text(self) -> str:
        """The JSON text of the lesson's project."""
        return (_folder() / self.project_file).read_text(encoding="utf-8")

    def project(self) -> Project:
        """The lesson's project (not saved anywhere yet: its path is None)."""
        return Project.from_dict(parse_json(self.project_text().encode("utf-8"),
                                            self.project_file), self.project_file)

    @property
    def runs(self) -> int:
        """How many runs its sweep trains (every combination of its sets)."""
        count = 1
        for text in self.sets:
            count *= len(text.partition("=")[2].split(","))
        return count


def _lesson(name: str, data: dict[str, Any]) -> Lesson:
    epochs = data.get("epochs")
    return Lesson(name=name, title=str(data["title"]), look_for=str(data["look_for"]),
                  project_file=str(data["project"]), sets=tuple(map(str, data["sets"])),
                  epochs=int(epochs) if epochs is not None else None,
                  order=int(data.get("order", 0)))


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


def lesson_plans(lesson: Lesson, project: Project, epochs: int | None = None
                 ) -> list[PlannedRun]:
    """The lesson's runs for `project` (the lesson's, as loaded from where it was written),
    with `epochs` (or the lesson's own) for every run."""
    chosen = epochs if epochs is not None else lesson.epochs
    return plan_sweep(project, parse_sets(list(lesson.sets), project),
                      {} if chosen is None else {"epochs": chosen})
