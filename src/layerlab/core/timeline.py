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
from layerlab.core.spec import fmt_shape
from layerlab.core.tracer import StepTrace

PHASES = ("forward", "loss", "backward", "update")


@dataclass(frozen=True)
class Event:
    phase: str
    node: str
    index: int


def timeline(trace: StepTrace, graph: nx.DiGraph) -> list[Event]:
    """Forward in execution order, the loss, backward in autograd's order, then updates."""
    events = [("forward", node) for node, _ in trace.forward]
    loss = next((n for n, d in graph.nodes(data=True)
                 if CATALOGUE.get(d.get("type", "")) and CATALOGUE[d["type"]].is_loss), None)
    if loss is not None:
        events.append(("loss", loss))
    events += [("backward", node) for node, _ in trace.backward]
    updated: list[str] = []
    for key in trace.param_stats:
        node = node_of(key)
        if node not in updated and any(node_of(k) == node for k in trace.updates):
            updated.append(node)
    events += [("update", node) for node in updated]
    return [Event(phase, node, i) for i, (phase, node) in enumerate(events)]


def grad_norms_by_node(trace: StepTrace) -> dict[str, float]:
    return {node: stats.norm for node, stats in trace.grad_stats.items()}


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
        zeros = f" · {100 * s.zeros:.0f}% zeros" if s.zeros > 0 else ""
        dead = f" · {100 * s.dead:.0f}% of units dead" if s.dead else ""
        return (f"{head} · output {fmt_shape(s.shape[1:])} · mean |y| "
                f"{s.mean_abs:.3g} · mean {s.mean:.3g} · std {s.std:.3g}"
                f"{zeros}{dead}")
    if event.phase == "loss":
        return f"{head} · loss {float(trace.loss):.6g} over a batch of {trace.kept['batch']}"
    if event.phase == "backward":
        g = trace.grad_stats[node]  # the rule itself, with numbers: explain.explain_node
        return f"dL/dy for {node} ({typ}) has norm {g.norm:.3g} · mean {g.mean:.3g}"
    ratio = update_ratio(trace, node)
    keys = [k for k in trace.updates if node_of(k) == node]
    return (f"{node} · {typ} · update of {', '.join(keys)} · ‖Δw‖/‖w‖ = {ratio:.2e} "
            "(about 1e-3 is healthy)")
