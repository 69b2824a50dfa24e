"""A recorded step as a timeline a person can walk: forward through each node, the loss,
backward through each node, the update of each layer with weights — and, at each event, what
happened in words and numbers. Everything here is read from the StepTrace; nothing is made up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx

from layerlab.core.catalogue import CATALOGUE
from layerlab.core.diagnostics import node_of
from layerlab.core.ports import owner
from layerlab.core.spec import fmt_shape
from layerlab.core.tracer import Stats, StepTrace

PHASES = ("forward", "loss", "backward", "update")


@dataclass(frozen=True)
class Event:
    phase: str
    node: str
    index: int


def timeline(trace: StepTrace, graph: nx.DiGraph) -> list[Event]:
    """Forward in execution order, the loss, backward in autograd's order, then updates."""
    events = [("forward", node) for node in _nodes(trace.forward)]
    loss = next((n for n, d in graph.nodes(data=True)
                 if CATALOGUE.get(d.get("type", "")) and CATALOGUE[d["type"]].is_loss), None)
    if loss is not None:
        events.append(("loss", loss))
    events += [("backward", node) for node in _nodes(trace.backward)]
    updated: list[str] = []
    for key in trace.param_stats:
        node = node_of(key)
        if node not in updated and any(node_of(k) == node for k in trace.updates):
            updated.append(node)
    events += [("update", node) for node in updated]
    return [Event(phase, node, i) for i, (phase, node) in enumerate(events)]


def _nodes(values: list[tuple[str, object]]) -> list[str]:
    """The nodes of recorded values, once each: a Split records one value per port."""
    return list(dict.fromkeys(owner(key) for key, _ in values))


def _keys(stats: dict[str, Stats], node: str) -> list[str]:
    """`node:0`, `node:1`, … for a layer with several outputs, else [node]."""
    return [k for k in stats if ":" in k and owner(k) == node] or [node]


def grad_norms_by_node(trace: StepTrace) -> dict[str, float]:
    """‖dL/dy‖ per node; over all its ports for a layer with several outputs."""
    squares: dict[str, float] = {}
    for key, stats in trace.grad_stats.items():
        squares[owner(key)] = squares.get(owner(key), 0.0) + stats.norm ** 2
    return {node: math.sqrt(total) for node, total in squares.items()}


def update_ratio(trace: StepTrace, node: str) -> float:
    """‖Δw‖ / ‖w‖ over all the node's parameters."""
    delta = sum(float(u.pow(2).sum()) for k, u in trace.updates.items() if node_of(k) == node)
    weight = sum(float(w.pow(2).sum()) for k, w in trace.weights.items() if node_of(k) == node)
    return math.sqrt(delta) / math.sqrt(weight) if weight > 0 else 0.0


def describe(event: Event, trace: StepTrace, graph: nx.DiGraph) -> str:
    """One paragraph: what the node is and what happened to it at this event."""
    node = event.node
    typ = graph.nodes[node].get("type", "?")
    spec = CATALOGUE.get(typ)
    head = f"{node} · {typ}" + (f" · {spec.formula}" if spec else "")
    if event.phase == "forward":
        s = trace.stats[node]
        shape = " · ".join(fmt_shape(trace.stats[k].shape[1:]) for k in _keys(trace.stats, node))
        zeros = f" · {100 * s.zeros:.0f}% zeros" if s.zeros > 0 else ""
        dead = f" · {100 * s.dead:.0f}% of units dead" if s.dead else ""
        return (f"{head} · output {shape} · mean |y| "
                f"{s.mean_abs:.3g} · mean {s.mean:.3g} · std {s.std:.3g}"
                f"{zeros}{dead}")
    if event.phase == "loss":
        return f"{head} · loss {float(trace.loss):.6g} over a batch of {trace.kept['batch']}"
    if event.phase == "backward":
        keys = _keys(trace.grad_stats, node)  # the rule itself: explain.explain_node
        if keys == [node]:
            g = trace.grad_stats[node]
            return f"dL/dy for {node} ({typ}) has norm {g.norm:.3g} · mean {g.mean:.3g}"
        return (f"dL/dy for {node} ({typ}) over its {len(keys)} outputs has norm "
                f"{grad_norms_by_node(trace)[node]:.3g}")
    ratio = update_ratio(trace, node)
    keys = [k for k in trace.updates if node_of(k) == node]
    return (f"{node} · {typ} · update of {', '.join(keys)} · ‖Δw‖/‖w‖ = {ratio:.2e} "
            "(about 1e-3 is healthy)")
