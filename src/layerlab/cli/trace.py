"""`layerlab trace`: one training step, node by node, with gradient-health verdicts."""

from __future__ import annotations

import argparse

from layerlab.cli import CliError
from layerlab.cli.common import graph_problems, print_table, read_project
from layerlab.core.datasets import DATASETS, DatasetError
from layerlab.core.diagnostics import diagnose, update_ratios
from layerlab.core.errors import GraphError
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.spec import fmt_shape
from layerlab.core.tracer import StepTrace
from layerlab.core.trainer import Trainer, TrainingError
from layerlab.core.weights import WeightsError, load_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")
    parser.add_argument("--weights", metavar="W", help="safetensors or PyTorch weights to "
                        "start from (default: the project's initialisation)")
    parser.add_argument("--dataset", metavar="NAME", help=f"{', '.join(DATASETS)} (any case)")
    parser.add_argument("--batch-size", type=int, metavar="N")
    parser.add_argument("--seed", type=int, metavar="N")


def run(args: argparse.Namespace) -> int:
    project = read_project(args.file)
    try:
        settings = settings_from(project.training, dataset=args.dataset,
                                 batch_size=args.batch_size, seed=args.seed, device="cpu")
        trainer = Trainer(project, settings)
    except GraphError as exc:
        raise graph_problems(args.file, exc) from None
    except (DatasetError, TrainingError) as exc:
        raise CliError(f"{args.file}: {exc}") from None
    if args.weights:
        try:
            report = load_weights(trainer.model, args.weights)
        except WeightsError as exc:
            raise CliError(str(exc)) from None
        for line in report.lines():
            print(f"weights: {line}")
    try:
        trace = trainer.trace_next_batch()
    except TrainingError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    print_trace(project, trace, trainer.objective.loss_type)
    return 0


def print_trace(project: Project, trace: StepTrace, loss_type: str) -> None:
    grads = dict(trace.grad_stats)
    rows = [("node", "type", "output", "mean", "std", "min", "max", "zeros", "dL/dy norm")]
    for node, _ in trace.forward:
        s = trace.stats[node]
        g = grads.get(node)
        rows.append((node, project.graph.nodes[node]["type"], fmt_shape(s.shape[1:]),
                     f"{s.mean:.3g}", f"{s.std:.3g}", f"{s.min:.3g}", f"{s.max:.3g}",
                     f"{100 * s.zeros:.0f}%", "—" if g is None else f"{g.norm:.3g}"))
    print_table(rows)
    print(f"\nloss ({loss_type}): {float(trace.loss):.6g}")
    ratios = update_ratios(trace)
    rows = [("parameter", "shape", "norm", "grad norm", "update/weight")]
    for key, stats in trace.param_stats.items():
        grad = stats.get("grad")
        rows.append((key, fmt_shape(stats["weight"].shape), f"{stats['weight'].norm:.3g}",
                     "—" if grad is None else f"{grad.norm:.3g}",
                     f"{ratios[key]:.2e}" if key in ratios else "—"))
    print()
    print_table(rows)
    verdicts = diagnose(trace)
    print("\nverdicts:" if verdicts else "\nverdicts: none — gradients look healthy")
    for verdict in verdicts:
        print(f"  {verdict.message}")
    print(f"\n({trace.kept['note']})")
