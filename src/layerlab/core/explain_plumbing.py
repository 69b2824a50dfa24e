"""Chain-rule rules of the tensor plumbing (core/layers/plumbing.py): each moves values
without changing them, so its backward puts each gradient back where its value came from —
and a learned Parameter, used by every sample, gathers the gradients of all of them.
"""

from __future__ import annotations

import torch

from layerlab.core.explain_rules import Local, Rule, RuleFn, Tensor, sample_dim


def _pieces(v: Local) -> Rule:
    """Split, Chunk: dL/dx is the ports' gradients joined back in port order."""
    dim = sample_dim(v.params["dim"], v.xs[0].dim())
    dx = torch.cat(list(v.dys), dim=dim)
    ports = ", ".join(f"dL/d{{y{k}}}" for k in range(len(v.dys)))
    s = v.sample
    terms = {"{x}": v.xs[0][s]}
    terms.update({f"dL/d{{y{k}}}": dy[s] for k, dy in enumerate(v.dys)})
    terms["dL/d{x}"] = dx[s]
    return Rule(f"dL/d{{x}} = [{ports}] joined along dim {v.params['dim']} (a port nothing "
                "uses sends zeros)", [dx], terms=terms)


def _moved(v: Local, formula: str, dx: Tensor) -> Rule:
    s = v.sample
    return Rule(formula, [dx], terms={"dL/d{y}": v.dy[s], "dL/d{x}": dx[s]})


def _permute(v: Local) -> Rule:
    rank = v.xs[0].dim()
    dims = [d % rank for d in v.params["dims"]]
    inverse = [dims.index(k) for k in range(rank)]
    return _moved(v, f"dL/d{{x}} = (dL/d{{y}}).permute({', '.join(map(str, inverse))}): each "
                     "gradient goes back to where its value came from", v.dy.permute(inverse))


def _transpose(v: Local) -> Rule:
    a, b = v.params["dim0"], v.params["dim1"]
    return _moved(v, f"dL/d{{x}} = (dL/d{{y}}).transpose({a}, {b})", v.dy.transpose(a, b))


def _expand(v: Local) -> Rule:
    dx = v.dy.sum_to_size(v.xs[0].shape)
    return _moved(v, "dL/d{x} = dL/d{y} summed over the dimensions Expand repeated (each "
                     "value was used that many times)", dx)


def _placed(v: Local, index: tuple[object, ...], formula: str) -> Rule:
    """Select, Slice: the gradient lands where the values were taken; zeros elsewhere."""
    dx = torch.zeros_like(v.xs[0])
    dx[index] = v.dy
    return _moved(v, formula, dx)


def _select(v: Local) -> Rule:
    dim = sample_dim(v.params["dim"], v.xs[0].dim())
    index = (*(slice(None),) * dim, v.params["index"])
    return _placed(v, index, f"dL/d{{x}}[{', '.join([':'] * dim)}, {v.params['index']}] = "
                             "dL/d{y}; 0 everywhere else")


def _slice(v: Local) -> Rule:
    p = v.params
    dim = sample_dim(p["dim"], v.xs[0].dim())
    index = (*(slice(None),) * dim, slice(p["start"], p["end"], p["step"]))
    where = f"{'' if p['start'] is None else p['start']}:{'' if p['end'] is None else p['end']}"
    where += "" if p["step"] == 1 else f":{p['step']}"
    return _placed(v, index, f"dL/d{{x}}[{', '.join([':'] * dim)}, {where}] = dL/d{{y}}; "
                             "0 everywhere else")


def _parameter(v: Local) -> Rule:
    """y = θ for every sample n: dL/dθ = Σₙ dL/dyₙ (over the kept samples)."""
    grad = v.dy.sum(0)
    s = v.sample
    return Rule("dL/dθ = Σ over the samples n of dL/d{y}ₙ (θ is the same for every sample)",
                [], params={"param": grad},
                terms={"θ": v.y[s], "dL/d{y}": v.dy[s], "dL/dθ": grad})


RULES: dict[str, RuleFn] = {
    "Split": _pieces, "Chunk": _pieces, "Permute": _permute, "Transpose": _transpose,
    "Expand": _expand, "Select": _select, "Slice": _slice, "Parameter": _parameter,
}
