"""Pipeline stages: which stage each node of a graph falls in under `--parallel pipeline`.

One function, `pipeline_plan`, answers for the canvas (which colours each node by its
stage) and for the pipeline trainer (which runs those stages), so what the canvas shows is
what runs. A graph is cut only between layer nodes where exactly one tensor crosses (a
stage hands the next one tensor); between those places the stages are contiguous runs of
the compiled model's order, balanced so that the largest stage's cost is as small as it
can be, the cost being each node's parameter count or its forward FLOPs per sample.

A person may pin a cut: `"stage_start": true` on a node makes it the first node of a stage
(the canvas's "Start Stage Here"); the balance then places only the remaining cuts. The
stage count and the balance live in the training section (`pipeline_stages`,
`pipeline_balance`); without a stage count, a run takes one stage per process.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import networkx as nx
import torch
from torch import fx
from torch.utils.flop_counter import FlopCounterMode

from layerlab.core.compiler import NODE_META, build_model, checked
from layerlab.core.ports import owner
from layerlab.core.records import TrainingError

BALANCES = ("parameters", "flops")
START_KEY = "stage_start"  # node-level: this node starts a pipeline stage


def layer_groups(model: fx.GraphModule) -> list[tuple[str, list[fx.Node]]]:
    """Each layer node of the compiled model with its fx nodes, in the model's order (an
    attention layer is a call and the getitem of its output; a Split, its ports)."""
    groups: list[tuple[str, list[fx.Node]]] = []
    pending: list[fx.Node] = []
    for n in model.graph.nodes:
        if n.op in ("placeholder", "output"):
            continue
        pending.append(n)
        key = n.meta.get(NODE_META)
        if key is None:
            continue  # an intermediate value of the layer whose value comes next
        layer = owner(str(key))
        if groups and groups[-1][0] == layer:
            groups[-1][1].extend(pending)
        else:
            groups.append((layer, pending))
        pending = []
    return groups


def _crossing(model: fx.GraphModule, groups: list[tuple[str, list[fx.Node]]]
              ) -> list[list[fx.Node]]:
    """For each boundary k (before group k, k ≥ 1) the values made before it and used after."""
    nodes = [n for _, members in groups for n in members]
    position = {n: i for i, n in enumerate(nodes)}
    inputs = [n for n in model.graph.nodes if n.op == "placeholder"]
    out, start = [], 0
    for k in range(1, len(groups)):
        start += len(groups[k - 1][1])
        out.append([n for n in inputs + nodes[:start]
                    if any(u.op == "output" or position.get(u, -1) >= start for u in n.users)])
    return out


def _cuttable(crossing: list[fx.Node]) -> bool:
    """One tensor crosses, made by a layer (not the input itself), and not a tuple."""
    return (len(crossing) == 1 and crossing[0].op != "placeholder"
            and not any(u.op == "call_function" and u.target is operator.getitem
                        for u in crossing[0].users))


def cut_points(model: fx.GraphModule) -> list[int]:
    """The positions k (in the order of layer nodes) before which the graph can be cut."""
    groups = layer_groups(model)
    return [k for k, crossing in enumerate(_crossing(model, groups), start=1)
            if _cuttable(crossing)]


def node_parameters(model: fx.GraphModule) -> dict[str, int]:
    """Parameters per layer node; a tensor two nodes share (weight tying) counts once, with
    the node that comes first."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():  # named_parameters lists a shared one once
        node = name.split(".", 1)[0]
        counts[node] = counts.get(node, 0) + p.numel()
    return counts


def node_flops(model: fx.GraphModule, input_shape: Sequence[int], dtype: str
               ) -> dict[str, int]:
    """Forward FLOPs per sample of each layer node, counted by torch's FlopCounterMode on a
    model and input on the meta device (no memory, no arithmetic): matmuls, convolutions
    and attention, a multiply-add counted as 2."""
    of = {n: layer for layer, members in layer_groups(model) for n in members}
    flops: dict[str, int] = {}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        class Counting(fx.Interpreter):
            def run_node(self, n: fx.Node) -> object:
                before = counter.get_total_flops()
                value = super().run_node(n)
                if n in of:
                    flops[of[n]] = flops.get(of[n], 0) + counter.get_total_flops() - before
                return value

        x = torch.zeros(1, *input_shape, dtype=torch.int64 if dtype == "int64" else None,
                        device="meta")
        Counting(model.eval()).run(x)
    return flops


def plan_stages(model: fx.GraphModule, stages: int, costs: dict[str, int] | None = None,
                starts: Sequence[str] = ()) -> list[list[str]]:
    """The layer nodes of each stage, in order: `stages` contiguous runs cut where one
    tensor crosses, every node of `starts` beginning a stage, the largest stage's cost
    (`costs`, by default parameters) as small as it can be. TrainingError, in one sentence,
    when the graph has too few such places or a pinned node cannot start a stage."""
    groups = layer_groups(model)
    names = [layer for layer, _ in groups]
    cuts = cut_points(model)
    pinned = _pinned(model, groups, cuts, starts)
    _check_count(names, cuts, pinned, stages)
    costs = node_parameters(model) if costs is None else costs
    prefix = [0]
    for name in names:
        prefix.append(prefix[-1] + costs.get(name, 0))
    bounds = [0, *cuts, len(names)]
    # best[s][j]: the smallest largest-stage cost splitting names[:bounds[j]] into s stages
    best = [[math.inf] * len(bounds) for _ in range(stages + 1)]
    choice = [[0] * len(bounds) for _ in range(stages + 1)]
    best[0][0] = 0
    for s in range(1, stages + 1):
        for j in range(1, len(bounds)):
            for i in range(j):
                if any(bounds[i] < p < bounds[j] for p in pinned):
                    continue  # a pinned cut may not fall inside a stage
                cost = max(best[s - 1][i], prefix[bounds[j]] - prefix[bounds[i]])
                if cost < best[s][j]:
                    best[s][j], choice[s][j] = cost, i
    ends, j = [], len(bounds) - 1
    for s in range(stages, 0, -1):
        ends.append(bounds[j])
        j = choice[s][j]
    begins = [0, *reversed(ends[1:])]
    return [names[a:b] for a, b in zip(begins, reversed(ends), strict=True)]


def _pinned(model: fx.GraphModule, groups: list[tuple[str, list[fx.Node]]],
            cuts: list[int], starts: Sequence[str]) -> list[int]:
    """The positions of the pinned nodes (the first layer already starts stage 1)."""
    position = {layer: k for k, (layer, _) in enumerate(groups)}
    crossing = _crossing(model, groups)
    out = []
    for node in starts:
        k = position.get(node)
        if k is None:
            raise TrainingError(f"node {node} cannot start a pipeline stage: it is not a "
                                "layer of the model (an Input or a loss node)")
        if k == 0:
            continue
        if k not in cuts:
            values = ", ".join(sorted({str(v.meta.get(NODE_META, v.name))
                                       for v in crossing[k - 1]}))
            raise TrainingError(f"node {node} cannot start a pipeline stage: "
                                f"{len(crossing[k - 1])} values cross into it from before "
                                f"({values}), and a stage can hand on only one tensor")
        out.append(k)
    return sorted(set(out))


def _check_count(names: list[str], cuts: list[int], pinned: list[int], stages: int) -> None:
    if len(pinned) > stages - 1:
        where = ", ".join(names[k] for k in pinned)
        raise TrainingError(f"the project starts {len(pinned) + 1} pipeline stages (at the "
                            f"first layer and at {where}) but {stages} are planned; plan "
                            f"{len(pinned) + 1} stages or unpin a node")
    if len(cuts) >= stages - 1:
        return
    start = f"the graph cannot be split into {stages} pipeline stages: "
    if not cuts:
        raise TrainingError(start + "no boundary between its nodes carries a single "
                            "tensor; train it without --parallel pipeline")
    where = ", ".join(names[k - 1] for k in cuts)
    raise TrainingError(start + f"only {len(cuts)} node boundaries carry a single "
                        f"tensor (after: {where}); run {len(cuts) + 1} processes or fewer")


def pinned_starts(graph: nx.DiGraph) -> list[str]:
    """The nodes a person pinned to start a stage."""
    return [n for n, data in graph.nodes(data=True) if data.get(START_KEY) is True]


def _meta_model(graph: nx.DiGraph, balance: str) -> tuple[fx.GraphModule, dict[str, int]]:
    """The model built on the meta device (no memory) and each layer node's cost."""
    analysis = checked(graph)
    assert analysis.input_node is not None
    with torch.device("meta"):
        model = build_model(graph)
    if balance == "flops":
        return model, node_flops(model, analysis.shapes[analysis.input_node],
                                 analysis.dtypes[analysis.input_node])
    return model, node_parameters(model)


def costed_plan(graph: nx.DiGraph, stages: int, balance: str = "parameters"
                ) -> tuple[list[list[str]], dict[str, int]]:
    """The plan and each layer node's cost as the balance counts it."""
    model, costs = _meta_model(graph, balance)
    return plan_stages(model, stages, costs, pinned_starts(graph)), costs


def pipeline_plan(graph: nx.DiGraph, stages: int, balance: str = "parameters"
                  ) -> list[list[str]]:
    """The stages of a valid graph, balanced by `balance` ("parameters" or "flops"),
    honouring the pinned starts. GraphError while the graph has errors."""
    return costed_plan(graph, stages, balance)[0]


def stage_of(plan: list[list[str]]) -> dict[str, int]:
    """Each layer node's stage (0-based)."""
    return {name: i for i, names in enumerate(plan) for name in names}


def describe(plan: list[list[str]]) -> str:
    """The stages in one line: `1: fc1, tanh1 · 2: fc2 … fc3` (a long stage by its ends)."""
    def span(names: list[str]) -> str:
        return ", ".join(names) if len(names) <= 2 else f"{names[0]} … {names[-1]}"
    return " · ".join(f"{i}: {span(names)}" for i, names in enumerate(plan, start=1))


def stage_modules(model: fx.GraphModule, plan: list[list[str]]) -> list[fx.GraphModule]:
    """One GraphModule per stage; its submodules keep their node ids, so each stage's state
    dict keys are the full model's (`fc1.weight`), and they share the model's tensors."""
    from torch.fx.passes.split_module import split_module

    layer = stage_of(plan)
    of = {n.name: layer[name] for name, members in layer_groups(model) for n in members}
    split = split_module(model, None, lambda node: of[node.name])
    return [getattr(split, f"submod_{i}") for i in range(len(plan))]
