"""What the commands share: reading the project, refusing, printing tables, and checking
that an output place can be written before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from layerlab.cli import CliError
from layerlab.core.errors import GraphError, ProjectFileError, format_error
from layerlab.core.project import Project, load_project

TASK_FLAGS = {"classify": "classification", "regress": "regression"}  # --task: a table's task


def read_project(path: str) -> Project:
    """The project, or CliError: exit 2 for a file that is not a project, 1 for one with
    problems (one line each)."""
    try:
        return load_project(path)
    except ProjectFileError as exc:
        raise CliError(str(exc), 2) from None
    except GraphError as exc:
        raise graph_problems(path, exc) from None


def graph_problems(file: str, exc: GraphError) -> CliError:
    return CliError("\n".join(f"{file}: {format_error(n, m)}" for n, m in exc.errors))


def print_table(rows: list[tuple[str, ...]], left: int = 3) -> None:
    """Columns padded to fit; the first `left` columns flush left, numbers flush right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) if i < left else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path.cwd()


def check_folder(folder: Path) -> None:
    """CliError unless `folder` exists as a writable folder, or could be created as one.
    Nothing is created: a run refused later must leave no trace."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise CliError(f"cannot write to {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CliError(f"cannot write to {folder}: {existing} is not writable")


def check_file(path: Path) -> None:
    """CliError unless a file can be written at `path`: its folder must exist and be
    writable, and `path` itself must not be a folder."""
    if path.is_dir():
        raise CliError(f"cannot write {path}: it is a folder")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise CliError(f"cannot write {path}: {existing} is a file, not a folder")
    if existing != path.parent:
        raise CliError(f"cannot write {path}: folder {path.parent} does not exist")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CliError(f"cannot write {path}: folder {existing} is not writable")


def write_failed(path: Path, error: OSError) -> CliError:
    """The one sentence for a write that failed after all."""
    return CliError(f"cannot write {path}: {error.strerror or error}")
