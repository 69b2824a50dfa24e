"""The chain rule at one node of a recorded step, with the step's own numbers.

`explain_node` evaluates the node's local backward rule (one small function per catalogue
type: explain_layers, explain_conv, explain_loss, explain_composite, explain_recurrent)
from the values, weights and extras the trace recorded — never from autograd — and then
compares what it computed with what autograd recorded. A node whose output autograd did
not need (a Flatten right after the data) gets its dL/d(output) from the rules of the
nodes it feeds, so the first layer's rule gives dL/d(data) too.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch

from layerlab.core import (
    explain_composite,
    explain_conv,
    explain_extra,
    explain_gpt,
    explain_layers,
    explain_loss,
    explain_op,
    explain_plumbing,
    explain_recurrent,
)
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.explain_rules import Local, Part, Rule, RuleFn, Tensor, Unexplained
from layerlab.core.ports import owner, port_of, value_key
from layerlab.core.tracer import StepTrace

RULES: dict[str, RuleFn] = {**explain_layers.RULES, **explain_conv.RULES,
                            **explain_loss.RULES, **explain_composite.RULES,
                            **explain_extra.RULES, **explain_gpt.RULES,
                            **explain_recurrent.RULES, **explain_op.RULES,
                            **explain_plumbing.RULES}

__all__ = ["NodeExplanation", "Part", "Unexplained", "explain_node"]


@dataclass(frozen=True)
class NodeExplanation:
    """The chain rule at one node for one sample (see explain_node)."""

    node: str
    type: str
    sample: int
    formula: str  # the local backward rule, values named after node ids (ŷ, t)
    terms: dict[str, Tensor]  # the rule's named tensors for the sample, in reading order
    inputs: tuple[str, ...]  # the source nodes, in port order
    grad_inputs: tuple[Tensor | None, ...]  # per port: dL/d(input) for the sample; None:
    #                                         an input that carries no gradient (token ids)
    param_grads: dict[str, Tensor] | None  # state-dict key → dL/dθ over the whole batch;
    #                                        None when the trace did not keep every sample
    max_diff: float | None  # largest |rule − autograd| over what autograd recorded
    scale: float  # the largest |value| compared, for judging max_diff
    parts: tuple[Part, ...] = ()  # composite layers: their named pieces with gradients
    dy_recorded: bool = True  # False: dL/d(output) came from the rules of the nodes fed
    rtol: float = 1e-4  # the agreement expected: float32's, or bfloat16's for such a step

    @property
    def matches(self) -> bool:
        """Whether the rule's numbers agree with autograd's to the step's precision."""
        return self.max_diff is not None and self.max_diff <= 1e-7 + self.rtol * self.scale


class _Step:
    """One trace and graph, with each node's rule evaluated at most once."""

    def __init__(self, trace: StepTrace, graph: nx.DiGraph, sample: int) -> None:
        self.trace, self.graph, self.sample = trace, graph, sample
        self.forward = dict(trace.forward)
        self.backward = dict(trace.backward)
        self.rules: dict[str, Rule] = {}
        self.derived: set[str] = set()
        self.loss = next((n for n, d in graph.nodes(data=True)
                          if CATALOGUE.get(d.get("type", "")) is not None
                          and CATALOGUE[d["type"]].is_loss), None)

    def type(self, node: str) -> str:
        return self.graph.nodes[node].get("type", "")

    def rule(self, node: str) -> Rule:
        if node not in self.rules:
            fn = RULES.get(self.type(node))
            if fn is None:
                raise Unexplained(f"{node} ({self.type(node)}) has no chain rule")
            self.rules[node] = fn(self.local(node))
        return self.rules[node]

    def local(self, node: str) -> Local:
        trace = self.trace
        spec = CATALOGUE[self.type(node)]
        weights = {k[len(node) + 1:]: v.float() for k, v in {**trace.frozen,
                                                               **trace.weights}.items()
                   if k.startswith(f"{node}.")}
        xs = tuple(_values(self.value(src)) for src in trace.inputs[node])
        targets = trace.loss_targets if trace.loss_targets is not None else trace.targets
        params = spec.resolve(self.graph.nodes[node].get("params", {}))
        ys, dys = self.ports(node, spec.output_count(params)) if spec.outputs else ((), ())
        return Local(node, params, xs,
                     None if spec.is_loss else ys[0] if ys else _values(self.value(node)),
                     torch.ones(()) if spec.is_loss else dys[0] if dys else self.dy(node),
                     weights, trace.extras.get(node, {}), int(trace.kept["batch"]),
                     self.sample, None if targets is None else _values(targets), ys, dys)

    def ports(self, node: str, count: int) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Values and dL/d(value) of each output port; a port nothing uses gets zeros."""
        keys = [value_key(node, k, True) for k in range(count)]
        ys = tuple(_values(self.value(k)) for k in keys)
        dys = []
        for key, y in zip(keys, ys, strict=True):
            try:
                dys.append(self.dy(key))
            except Unexplained:
                dys.append(torch.zeros_like(y))
        if all(key not in self.backward and key not in self.derived for key in keys):
            raise Unexplained(f"no gradient reaches {node}'s outputs: they hold integer "
                              "values or nothing after them learns")
        return ys, tuple(dys)

    def value(self, node: str) -> Tensor:
        if node not in self.forward:
            raise Unexplained(f"{node}'s output was not recorded in this trace")
        return self.forward[node]

    def dy(self, node: str) -> Tensor:
        """dL/d(output): recorded by autograd, or summed from the rules of the nodes fed.
        `node` is a value key (core/ports.py): a node id, or `node:k` for one port."""
        if node in self.backward:
            return self.backward[node].float()
        total = None
        for consumer in self.consumers(node):
            grad = self.rule(consumer).grads[self.trace.inputs[consumer].index(node)]
            if grad is not None:
                total = grad if total is None else total + grad
        if total is None:
            raise Unexplained(f"no gradient reaches {node}'s output: it holds integer values "
                              "or nothing after it learns")
        self.derived.add(node)
        return total

    def consumers(self, key: str) -> list[str]:
        """The nodes that take the value `key`."""
        return [c for c in self.graph.successors(owner(key)) if key in self.trace.inputs[c]]

    def share_sum(self, source: str) -> Tensor | None:
        """Σ over the nodes `source` feeds of their rule's dL/d(source): what autograd
        recorded for it. None when some of them have no rule here."""
        total = None
        for consumer in self.consumers(source):
            try:
                grad = self.rule(consumer).grads[self.trace.inputs[consumer].index(source)]
            except Unexplained:
                return None
            if grad is not None:
                total = grad if total is None else total + grad
        return total


def _values(t: Tensor) -> Tensor:
    """Computed in float32 whatever the step ran in (bfloat16 autocast included)."""
    return t.float() if t.is_floating_point() else t


def explain_node(trace: StepTrace, graph: nx.DiGraph, node: str,
                 sample: int = 0) -> NodeExplanation:
    """The chain rule at `node` for kept sample `sample` of a recorded step.

    Raises ValueError (Unexplained) in one sentence naming the node when the rule cannot
    be evaluated from this trace (a sample that was not kept, a weight too large to keep).
    """
    if node not in graph:
        raise Unexplained(f"{node} is not a node of this graph")
    kept = int(trace.kept["samples"])
    if not 0 <= sample < kept:
        raise Unexplained(f"sample {sample} was not kept: this trace holds samples 0 to "
                          f"{kept - 1}")
    step = _Step(trace, graph, sample)
    if step.type(node) == "Input":
        return _input(step, node)
    rule = step.rule(node)
    names = _names(step, node)
    diffs, scale = _compare_inputs(step, node, rule)
    params = _param_grads(step, node, rule)
    if params is not None:
        for key, grad in params.items():
            recorded = _recorded_param(trace, key)
            if recorded is not None:
                diffs.append(float((grad - recorded).abs().max()))
                scale = max(scale, float(recorded.abs().max()))
    return NodeExplanation(
        node, step.type(node), sample, _fill(rule.formula, names),
        {_fill(k, names): v for k, v in rule.terms.items()}, tuple(trace.inputs[node]),
        tuple(None if g is None else g[sample] for g in rule.grads), params,
        max(diffs) if diffs else None, scale,
        tuple(Part(_fill(p.name, names), _fill(p.formula, names), p.value, p.grad)
              for p in rule.parts), all(owner(k) != node for k in step.derived),
        _rtol(trace))


def _rtol(trace: StepTrace) -> float:
    """A step run in bfloat16 (autocast) recorded its values and gradients rounded to 8
    bits of mantissa; the rule, computed in float32, agrees with them only that far."""
    low = (torch.bfloat16, torch.float16)
    return 2e-2 if any(t.dtype in low for _, t in trace.backward) else 1e-4


def _compare_inputs(step: _Step, node: str, rule: Rule) -> tuple[list[float], float]:
    """|rule − recorded| for every input autograd recorded a gradient for."""
    diffs, scale = [], 0.0
    for src, grad in zip(step.trace.inputs[node], rule.grads, strict=True):
        if grad is None or src not in step.backward:
            continue
        total = step.share_sum(src)
        if total is not None:
            recorded = step.backward[src].float()
            diffs.append(float((total - recorded).abs().max()))
            scale = max(scale, float(recorded.abs().max()))
    return diffs, scale


def _param_grads(step: _Step, node: str, rule: Rule) -> dict[str, Tensor] | None:
    kept = step.trace.kept
    if not rule.params or kept["samples"] != kept["batch"]:
        return None
    return {f"{node}.{name}": grad for name, grad in rule.params.items()}


def _recorded_param(trace: StepTrace, key: str) -> Tensor | None:
    """Autograd's gradient of the loss alone: the trainer's L1/L2 terms taken out."""
    grad = trace.param_grads.get(key)
    if key in trace.tied or key in trace.tied.values():
        return None  # tied: the recorded gradient sums every node that uses the weight
    state = trace.optimizer_state
    if grad is None or state is None or key not in state.penalised:
        return grad
    reg, w = state.regularisation, trace.weights[key]
    return grad - reg.l1 * torch.sign(w) - 2 * reg.l2 * w


def _input(step: _Step, node: str) -> NodeExplanation:
    """The data: it has no rule of its own, only the gradient the layers it feeds send."""
    s = step.sample
    x = step.value(node)
    terms = {node: x[s]}
    if x.is_floating_point():
        terms[f"dL/d{node}"] = step.dy(node)[s]
    return NodeExplanation(node, "Input", s, f"dL/d{node} = Σ over the layers {node} feeds "
                           "of the gradient each sends back" if x.is_floating_point() else
                           f"{node} holds token ids: no gradient flows into integers",
                           terms, (), (), None, None, 0.0, (), False)


class _Names(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _names(step: _Step, node: str) -> _Names:
    """Template names → node ids; the model's output is ŷ."""
    output = step.trace.inputs[step.loss][0] if step.loss is not None else None

    def name(n: str) -> str:
        return "ŷ" if n == output else n
    sources = step.trace.inputs[node]
    names = _Names(y=name(node))
    for key in step.forward:  # a layer with several outputs: {y0}, {y1}, … name its ports
        if ":" in key and owner(key) == node:
            names[f"y{port_of(key)}"] = name(key)
    if sources:
        names["x"] = name(sources[0])
    for k, src in enumerate(sources):
        names[f"x{k}"] = name(src)
    return names


def _fill(template: str, names: _Names) -> str:
    return template.format_map(names)
