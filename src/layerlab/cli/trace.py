"""`layerlab trace`: one training step, node by node, with gradient-health verdicts; or,
with --node NODE, the chain rule at one node for one sample, and with --update KEY:I,J, the
optimizer's update of one weight, each with the step's own numbers."""

from __future__ import annotations

import argparse
import unicodedata
from collections.abc import Sequence

import torch

from layerlab.cli import CliError
from layerlab.cli.common import graph_problems, print_table, read_project
from layerlab.core.catalogue import OPTIMIZERS
from layerlab.core.datasets import DATASETS, DatasetError
from layerlab.core.diagnostics import diagnose, judged_weights, update_ratios
from layerlab.core.errors import GraphError
from layerlab.core.explain import NodeExplanation, explain_node
from layerlab.core.ports import owner
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.spec import fmt_shape
from layerlab.core.tracer import DEFAULT_KEEP, StepTrace
from layerlab.core.trainer import Trainer, TrainingError
from layerlab.core.update_rule import UpdateExplanation, explain_update
from layerlab.core.weights import WeightsError, load_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file")
    parser.add_argument("--weights", metavar="W", help="safetensors or PyTorch weights to "
                        "start from (default: the project's initialisation)")
    parser.add_argument("--dataset", metavar="NAME", help=f"{', '.join(DATASETS)} (any case)")
    parser.add_argument("--batch-size", type=int, metavar="N")
    parser.add_argument("--seed", type=int, metavar="N")
    explain = parser.add_mutually_exclusive_group()
    explain.add_argument("--node", metavar="NODE", help="explain the chain rule at one node "
                         "(its id, e.g. fc1) with the numbers of one sample")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="the sample of the traced batch --node shows (default 0)")
    explain.add_argument("--update", type=weight_place, metavar="KEY:I,J",
                         help="explain the optimizer's update of one weight, e.g. "
                              "fc1.weight:3,2 (state-dict key, then its index from 0)")


def weight_place(text: str) -> tuple[str, tuple[int, ...]]:
    """KEY:I,J… → (key, index); argparse turns the error into a usage message."""
    key, _, index = text.rpartition(":")
    try:
        numbers = tuple(int(i) for i in index.split(","))
    except ValueError:
        numbers = ()
    if not key or not numbers:
        raise argparse.ArgumentTypeError(f"{text!r} is not a weight: write the parameter's "
                                         "state-dict key and its index, e.g. fc1.weight:3,2")
    return key, numbers


def run(args: argparse.Namespace) -> int:
    if args.sample is not None and not args.node:
        raise CliError("--sample picks the sample that --node explains: give --node too", 2)
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
    judged = judged_weights(trainer.model)
    try:  # --node: every sample kept, so that the parameters' gradients can be shown too
        trace = trainer.trace_next_batch(keep=trainer.settings.batch_size if args.node
                                         else DEFAULT_KEEP)
    except TrainingError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    if args.node:
        try:
            print_node(explain_node(trace, project.graph, args.node, args.sample or 0))
        except ValueError as exc:
            raise CliError(f"{args.file}: {exc}") from None
        return 0
    if args.update:
        key, index = args.update
        try:
            print_update(explain_update(trace, key, index))
        except ValueError as exc:
            raise CliError(f"{args.file}: {exc}") from None
        return 0
    print_trace(project, trace, trainer.objective.loss_type, judged)
    return 0


SHOWN = 16  # a tensor with up to this many values is printed whole


def values(t: torch.Tensor) -> str:
    """A tensor on one line: its shape and its values, or the first few and a summary."""
    flat = t.detach().double().reshape(-1)
    shape = f"[{'×'.join(map(str, t.shape))}]" if t.dim() else "scalar"
    if flat.numel() <= SHOWN:
        return f"{shape}  {' '.join(f'{x:.6g}' for x in flat.tolist())}"
    head = " ".join(f"{x:.4g}" for x in flat[:6].tolist())
    return (f"{shape}  {head} … (min {float(flat.min()):.4g}, max {float(flat.max()):.4g}, "
            f"norm {float(flat.norm()):.4g})")


def print_node(e: NodeExplanation) -> None:
    """The node's local backward rule, its terms for the sample, the gradient it sends to
    each input, its parameters' gradients, and whether autograd agrees."""
    print(f"{e.node} ({e.type}), sample {e.sample}")
    print(f"rule: {e.formula}")
    print(f"inputs: {', '.join(e.inputs) or 'none (the data)'}\n\nterms:")
    print_named([(name, values(t)) for name, t in e.terms.items()])
    if e.inputs:
        print("\ngradient to each input:")
        print_named([(f"dL/d{src}", "none: it carries no gradient (integer tokens)"
                      if g is None else values(g)) for src, g in zip(e.inputs, e.grad_inputs,
                                                                      strict=True)])
    if e.param_grads:
        print("\nparameter gradients (the whole batch):")
        print_named([(key, values(g)) for key, g in e.param_grads.items()])
    for part in e.parts:
        print(f"\n{part.name}: {part.formula}")
        print_named([("value", values(part.value)), ("gradient", values(part.grad))])
    if e.max_diff is None:
        print("\nautograd recorded nothing here to compare with")
    else:
        verdict = "agrees" if e.matches else "DISAGREES"
        print(f"\nautograd {verdict}: max difference {e.max_diff:.1e}")


def print_named(rows: list[tuple[str, str]]) -> None:
    width = max(shown_width(name) for name, _ in rows)
    for name, text in rows:
        print(f"  {name}{' ' * (width - shown_width(name))}  {text}")


def shown_width(text: str) -> int:
    """Columns `text` takes on a terminal: combining marks (the hat of m̂) take none."""
    return sum(not unicodedata.combining(ch) for ch in text)


def place(key: str, index: Sequence[int]) -> str:
    return f"{key}[{', '.join(map(str, index))}]"


def print_update(e: UpdateExplanation) -> None:
    """The rule, every term with its value, the rule worked with those values, and the
    weight it gives beside the one torch's step gave."""
    step = "" if e.step is None else f", step {e.step}"
    print(f"{place(e.key, e.index)}: {OPTIMIZERS[e.optimizer].title}{step}")
    print(f"rule: {e.formula}\n\nterms:")
    print_named([(name, f"{value:>15.9g}") for name, value in e.terms.items()])
    print("\nworked:")
    for line in e.steps:
        print(f"  {line}")
    print(f"\nthe rule gives  {e.predicted:.9g}\ntorch's step    {e.actual:.9g}  "
          f"(difference {e.difference:.1e})")


def print_trace(project: Project, trace: StepTrace, loss_type: str,
                judged: frozenset[str]) -> None:
    grads = dict(trace.grad_stats)
    rows = [("node", "type", "output", "mean", "std", "min", "max", "zeros", "dL/dy norm")]
    for node, _ in trace.forward:
        s = trace.stats[node]
        g = grads.get(node)
        rows.append((node, project.graph.nodes[owner(node)]["type"], fmt_shape(s.shape[1:]),
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
    verdicts = diagnose(trace, judged)
    print("\nverdicts:" if verdicts else "\nverdicts: none — gradients look healthy")
    for verdict in verdicts:
        print(f"  {verdict.message}")
    print(f"\n({trace.kept['note']})")
