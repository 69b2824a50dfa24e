"""The chain rule at an Op node: the operation's own vector-Jacobian product.

An Op node calls any allow-listed torch function (core/ops.py), so there is no hand-written
local derivative to show; its local rule is the function's own backward, evaluated by torch
autograd on the recorded inputs alone (not on the rest of the network) and multiplied by the
recorded dL/d(output): dL/dxₖ = (∂y/∂xₖ)ᵀ · dL/dy. explain_node then compares the result with
the gradients the training step itself recorded, as for every other layer.
"""

from __future__ import annotations

import torch

from layerlab.core import ops
from layerlab.core.explain_rules import Local, Rule, RuleFn, Tensor, Unexplained, floating


def _recompute(v: Local) -> tuple[list[Tensor], Tensor]:
    """The call again on the kept samples, inputs as fresh leaves; raises Unexplained when
    the result is not what the step recorded (an operation that mixes samples, when only
    some were kept)."""
    leaves = [x.detach().clone().requires_grad_(floating(x)) for x in v.xs]
    with torch.enable_grad():
        y = ops.call(v.params, leaves)
    assert v.y is not None
    if y.shape != v.y.shape or not torch.allclose(y.detach(), v.y, rtol=1e-4, atol=1e-6):
        raise Unexplained(f"{v.node} ({v.params['fn']}) gives other values on the kept "
                          "samples than the step recorded, so its rule cannot be evaluated "
                          "from this trace")
    return leaves, y


def _op(v: Local) -> Rule:
    fn = v.params["fn"]
    leaves, y = _recompute(v)
    wanted = [x for x in leaves if x.requires_grad]
    found = iter(torch.autograd.grad(y, wanted, v.dy, allow_unused=True) if wanted else ())
    grads: list[Tensor | None] = []
    for x in leaves:
        g = next(found) if x.requires_grad else None
        grads.append(torch.zeros_like(x) if x.requires_grad and g is None else g)
    s = v.sample
    terms = {f"{{x{k}}}": x[s].detach() for k, x in enumerate(leaves)}
    terms["{y}"] = v.y[s]
    terms["dL/d{y}"] = v.dy[s]
    terms.update({f"dL/d{{x{k}}}": g[s] for k, g in enumerate(grads) if g is not None})
    rules = [f"dL/d{{x{k}}} = (∂{{y}}/∂{{x{k}}})ᵀ · dL/d{{y}}"
             for k, g in enumerate(grads) if g is not None]
    own = (f"∂{{y}}/∂… is {fn}'s own derivative: its vector-Jacobian product, by torch "
           "autograd on the recorded inputs")
    formula = ";  ".join([*rules, own]) if rules else \
        f"no gradient flows into integer inputs; {own}"
    return Rule(formula, grads, terms=terms)


RULES: dict[str, RuleFn] = {"Op": _op}
