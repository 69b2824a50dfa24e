"""`layerlab check FILE`: each node's type, output shape and parameters; then every problem
of the graph, the training section and the dataset's fit with the network."""

from __future__ import annotations

import argparse
import sys

from layerlab.cli.common import print_table, read_project
from layerlab.core.compiler import param_counts
from layerlab.core.errors import GraphError, format_error
from layerlab.core.fit import dataset_fit
from layerlab.core.memory import machine_memory, memory_problems
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.shapes import Analysis, analyze


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")


def run(args: argparse.Namespace) -> int:
    project = read_project(args.file)
    analysis = analyze(project.graph)
    print_summary(project, analysis)
    problems = list(analysis.errors)
    problems += memory_problems(param_counts(project.graph, analysis), machine_memory())
    try:
        settings_from(project.training)  # the one validation of the training section
    except GraphError as exc:
        problems += exc.errors
    if not problems:
        fit = dataset_fit(project, analysis)
        problems += fit.problems
        for note in fit.notes:
            print(f"note: {note}")
    for node, message in problems:
        print(f"{args.file}: {format_error(node, message)}", file=sys.stderr)
    return 1 if problems else 0


def print_summary(project: Project, analysis: Analysis) -> None:
    counts = param_counts(project.graph, analysis)
    free = param_counts(project.graph, analysis, trainable=True)
    rows = [("node", "type", "output shape", "parameters")]
    for node, data in project.graph.nodes(data=True):
        count = counts.get(node)
        note = " (frozen)" if data.get("frozen") else (
            f" (trainable {free[node]:,})" if free.get(node, count) != count else "")
        rows.append((str(node), str(data.get("type", "?")), analysis.shown(node),
                     "?" if count is None else f"{count:,}{note}"))
    print_table(rows)
    total, trainable = sum(counts.values()), sum(free.values())
    print(f"total parameters: {total:,} (trainable {trainable:,})")
