"""Shape inference: every node's output shape, or every problem, each tied to its node.

Runs on every edit in the window, so it must stay cheap: one pass in topological order,
no torch modules built. A node whose own declaration or inputs are broken is reported once
and its descendants are skipped silently, so one mistake does not paint the graph red.
"""

from __future__ import annotations

import difflib
import keyword
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch.fx
from torch import nn

from layerlab.core.catalogue import CATALOGUE
from layerlab.core.errors import GraphError
from layerlab.core.ports import in_edges_in_port_order, out_port, value_key
from layerlab.core.spec import Ctx, LayerSpec, Shape, ShapeError, fmt_output
from layerlab.core.tying import tie_problems

ID_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names a submodule cannot take: they would shadow nn.Module or GraphModule attributes.
RESERVED_IDS = frozenset(dir(nn.Module)) | frozenset(vars(nn.Module())) | frozenset(
    dir(torch.fx.GraphModule)) | {"self", "torch"}
INFERRED = ("in_features", "in_channels", "num_features", "normalized_shape", "embed_dim",
            "d_model", "input_size")

Error = tuple[str | None, str]


@dataclass
class Analysis:
    """What the graph is: shapes, resolved layer contexts, order, and every error."""

    shapes: dict[str, Shape] = field(default_factory=dict)  # several outputs: port 0's
    port_shapes: dict[str, tuple[Shape, ...]] = field(default_factory=dict)  # those nodes
    dtypes: dict[str, str] = field(default_factory=dict)
    contexts: dict[str, Ctx] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    errors: list[Error] = field(default_factory=list)
    input_node: str | None = None
    loss_node: str | None = None
    output_node: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def errors_of(self, node: str) -> list[str]:
        return [m for n, m in self.errors if n == node]

    def out_shape(self, node: str, port: int = 0) -> Shape | None:
        """The shape leaving output `port` of `node`, or None when unknown or no such port."""
        if node in self.port_shapes:
            ports = self.port_shapes[node]
            return ports[port] if 0 <= port < len(ports) else None
        return self.shapes.get(node) if port == 0 else None

    def shown(self, node: str) -> str:
        """The node's output for a person: [8, 4], or [8, 2] · [8, 2] for several ports."""
        if node in self.port_shapes:
            return " · ".join(fmt_output(s) for s in self.port_shapes[node])
        return fmt_output(self.shapes.get(node))


def infer_shapes(graph: nx.DiGraph) -> dict[str, Shape]:
    """Each node's output shape (batch excluded); raises GraphError listing every problem."""
    analysis = analyze(graph)
    if analysis.errors:
        raise GraphError(analysis.errors)
    return analysis.shapes


def valid_id_error(node_id: object) -> str | None:
    """Why `node_id` cannot name a node, or None when it can."""
    if not isinstance(node_id, str) or not ID_PATTERN.match(node_id):
        return (f"'{node_id}' is not a valid id: use letters, digits and _, "
                "not starting with a digit")
    if keyword.iskeyword(node_id):
        return f"'{node_id}' is a Python keyword; choose another id"
    if node_id in RESERVED_IDS:
        return f"'{node_id}' is reserved by torch.nn.Module; choose another id"
    return None


def check_params(spec: LayerSpec, params: Any) -> list[str]:
    """Every problem with one node's parameters, as sentences."""
    if not isinstance(params, dict):
        return [f"params must be an object, not {params!r}"]
    problems = []
    known = {p.name for p in spec.params}
    for name in params:
        if name in known:
            continue
        if name in INFERRED:
            problems.append(f"{name} is inferred from the incoming shape; remove it")
            continue
        hint = _did_you_mean(str(name), known)
        problems.append(f"unknown parameter '{name}' for {spec.type}{hint}")
    for p in spec.params:
        if p.name not in params:
            if p.required:
                problems.append(f"missing parameter {p.name}")
            continue
        reason = p.check(params[p.name])
        if reason:
            problems.append(f"{p.name} {reason}")
    return problems


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), lowered, n=1)
    return f" (did you mean {lowered[close[0]]}?)" if close else ""


def analyze(graph: nx.DiGraph) -> Analysis:
    """Check and infer the whole graph without raising; collect every error."""
    a = Analysis()
    specs = _declared_specs(graph, a.errors)
    _check_roles(graph, specs, a)
    cyclic = _check_cycles(graph, a.errors)
    inputs_ok = _check_inputs(graph, specs, a.errors)
    acyclic = graph.subgraph(n for n in graph if n not in cyclic)
    a.order = [n for n in nx.topological_sort(acyclic) if n in specs]
    for node in a.order:
        _infer_node(graph, node, specs[node], inputs_ok, a)
    _check_outputs(graph, specs, a)
    a.errors.extend(tie_problems(graph, a.contexts))  # weight tying: core/tying.py
    return a


def _declared_specs(graph: nx.DiGraph, errors: list[Error]) -> dict[str, LayerSpec]:
    """Nodes whose type and parameters are usable, by id; report the rest."""
    specs = {}
    for node, data in graph.nodes(data=True):
        reason = valid_id_error(node)
        if reason:
            errors.append((str(node), reason))
        if "type" not in data:  # created by an edge that names a missing node
            for pred in graph.predecessors(node):
                errors.append((pred, f"edge from {pred} goes to missing node '{node}'"))
            for succ in graph.successors(node):
                errors.append((succ, f"edge into {succ} comes from missing node '{node}'"))
            continue
        spec = CATALOGUE.get(data["type"])
        if spec is None:
            hint = _did_you_mean(str(data["type"]), CATALOGUE)
            errors.append((node, f"unknown layer type {data['type']!r}{hint}"))
            continue
        problems = check_params(spec, data.get("params", {}))
        errors.extend((node, m) for m in problems)
        if not problems:
            specs[node] = spec
    return specs


def _check_roles(graph: nx.DiGraph, specs: dict[str, LayerSpec], a: Analysis) -> None:
    inputs = [n for n, d in graph.nodes(data=True) if d.get("type") == "Input"]
    losses = [n for n, d in graph.nodes(data=True)
              if d.get("type") in CATALOGUE and CATALOGUE[d["type"]].is_loss]
    if not inputs:
        a.errors.append((None, "the graph has no Input node"))
    for extra in inputs[1:]:
        a.errors.append((extra, f"a graph has exactly one Input; {inputs[0]} is already one"))
    for extra in losses[1:]:
        a.errors.append((extra, f"a graph has at most one loss node; {losses[0]} is already "
                                "one"))
    for node in losses:
        for succ in graph.successors(node):
            a.errors.append((node, f"a loss node must be last, but {node} feeds {succ}"))
    a.input_node = inputs[0] if len(inputs) == 1 and inputs[0] in specs else None
    a.loss_node = losses[0] if len(losses) == 1 else None


def _check_cycles(graph: nx.DiGraph, errors: list[Error]) -> set[str]:
    cyclic: set[str] = set()
    for component in nx.strongly_connected_components(graph):
        node = next(iter(component))
        if len(component) == 1 and not graph.has_edge(node, node):
            continue
        edges = nx.find_cycle(graph.subgraph(component), source=node)
        path = " → ".join([e[0] for e in edges] + [edges[0][0]])
        for member in sorted(component, key=str):
            errors.append((member, f"cycle: {path}"))
        cyclic |= component
    return cyclic


def _check_inputs(graph: nx.DiGraph, specs: dict[str, LayerSpec],
                  errors: list[Error]) -> set[str]:
    """Arity and ports of each declared node; returns the nodes whose inputs are well formed."""
    ok = set()
    for node, spec in specs.items():
        edges = list(graph.in_edges(node, data=True))
        count = len(edges)
        sources = ", ".join(e[0] for e in edges)
        if count < spec.min_inputs or (spec.max_inputs is not None and count > spec.max_inputs):
            errors.append((node, _arity_message(node, spec, count, sources)))
            continue
        problems = _port_problems(node, spec, edges)
        errors.extend((node, m) for m in problems)
        if not problems:
            ok.add(node)
    return ok


def _arity_message(node: str, spec: LayerSpec, count: int, sources: str) -> str:
    got = f"receives {count} (from {sources})" if count else "has none"
    if spec.max_inputs == 0:
        article = "an" if spec.type[0] in "AEIOU" else "a"
        return f"{article} {spec.type} takes no inputs but {node} {got}"
    if spec.max_inputs is None:
        return f"{node} needs at least {spec.min_inputs} inputs but {got}"
    return f"{node} needs exactly {spec.min_inputs} input but {got}"


def _port_problems(node: str, spec: LayerSpec, edges: list[tuple[str, str, dict]]) -> list[str]:
    problems = []
    seen: dict[int, str] = {}
    for src, _, data in edges:
        port = data.get("port", None if spec.is_merge else 0)
        if port is None:
            problems.append(f"the edge from {src} into {node} needs a port (0 to "
                            f"{len(edges) - 1})")
        elif isinstance(port, bool) or not isinstance(port, int) or \
                not 0 <= port < max(len(edges), 1):
            problems.append(f"port {port!r} of the edge from {src} is out of range for "
                            f"{len(edges)} input(s) (0 to {len(edges) - 1})")
        elif port in seen:
            problems.append(f"port {port} is used twice, by {seen[port]} and {src}")
        else:
            seen[port] = src
    return problems


def _infer_node(graph: nx.DiGraph, node: str, spec: LayerSpec, inputs_ok: set[str],
                a: Analysis) -> None:
    if node not in inputs_ok:
        return
    edges = in_edges_in_port_order(graph, node)
    if any(s not in a.shapes for s, _ in edges):
        return  # an upstream problem is already reported
    in_shapes = []
    for src, data in edges:
        port = out_port(data)
        whole = isinstance(port, int) and not isinstance(port, bool)
        shape = a.out_shape(src, port) if whole else None
        if shape is None:
            count = len(a.port_shapes.get(src, ((),)))
            a.errors.append((node, f"the edge from {src} into {node} leaves from output port "
                                   f"{port!r}, but {src} has {count} (0 to {count - 1})"))
            return
        in_shapes.append(shape)
    sources = tuple(value_key(s, out_port(d), s in a.port_shapes) for s, d in edges)
    ctx = Ctx(node, spec.resolve(graph.nodes[node].get("params", {})), tuple(in_shapes),
              sources, tuple(a.dtypes[s] for s, _ in edges))
    dtype_problem = _dtype_problem(ctx, spec)
    if dtype_problem:
        a.errors.append((node, dtype_problem))
        return
    try:
        inferred = spec.infer(ctx)
        if spec.outputs is not None:
            a.port_shapes[node] = tuple(tuple(s) for s in inferred)  # type: ignore[union-attr]
            inferred = inferred[0]
        a.shapes[node] = tuple(inferred)  # type: ignore[arg-type]
    except ShapeError as exc:
        a.errors.append((node, str(exc)))
        return
    a.contexts[node] = ctx
    if spec.type == "Input":
        a.dtypes[node] = ctx.params["dtype"]
    elif spec.input_dtype == "any":
        a.dtypes[node] = ctx.in_dtypes[0]
    else:
        a.dtypes[node] = "float32"


def _dtype_problem(ctx: Ctx, spec: LayerSpec) -> str | None:
    for k, dtype in enumerate(ctx.in_dtypes):
        if spec.input_dtype == "float32" and dtype == "int64":
            return (f"{ctx.node_id} needs real-valued input but receives int64 token ids "
                    f"from {ctx.in_ids[k]}; put an Embedding first")
        if spec.input_dtype == "int64" and dtype != "int64":
            return (f"{ctx.node_id} needs int64 token ids but receives {dtype} values from "
                    f"{ctx.in_ids[k]}; set the Input's dtype to int64")
    return None


def _check_outputs(graph: nx.DiGraph, specs: dict[str, LayerSpec], a: Analysis) -> None:
    sinks = [n for n in graph if graph.out_degree(n) == 0 and "type" in graph.nodes[n]]
    if a.loss_node is not None:
        for node in sinks:
            if node != a.loss_node:
                a.errors.append((node, f"the output of {node} is not used; connect it "
                                       f"towards {a.loss_node} or delete it"))
        preds = list(graph.predecessors(a.loss_node))
        a.output_node = preds[0] if len(preds) == 1 else None
    elif len(sinks) > 1:
        a.errors.append((None, f"the graph has {len(sinks)} outputs ({', '.join(sinks)}); "
                               "connect them into one or add a loss node"))
    elif sinks:
        a.output_node = sinks[0]
    if a.output_node is not None and specs.get(a.output_node) is not None and \
            specs[a.output_node].outputs is not None:
        a.errors.append((a.output_node, f"the model's output must be one tensor, but "
                                        f"{a.output_node} has several; put a layer after "
                                        "the port you want"))
        a.output_node = None
