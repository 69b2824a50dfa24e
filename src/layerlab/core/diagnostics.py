"""Gradient and activation health: where values vanish, explode or stop being numbers."""

from __future__ import annotations

import torch
import torch.fx

from layerlab.core.compiler import NODE_META


class _FirstNonFinite(torch.fx.Interpreter):
    """Runs the model node by node and stops at the first output that is not finite."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module)
        self.culprit: str | None = None

    def run_node(self, n: torch.fx.Node) -> object:
        out = super().run_node(n)
        node = n.meta.get(NODE_META)
        if node is not None and self.culprit is None and isinstance(out, torch.Tensor) and \
                out.is_floating_point() and not bool(torch.isfinite(out).all()):
            self.culprit = node
        return out


def first_nonfinite_node(model: torch.fx.GraphModule, x: torch.Tensor,
                         rng_state: torch.Tensor | None = None) -> str | None:
    """The id of the first node (in execution order) whose output holds inf or NaN.

    Give the CPU RNG state from before the failing step so that Dropout draws the same
    masks as the step that failed.
    """
    if rng_state is not None:
        torch.set_rng_state(rng_state)
    finder = _FirstNonFinite(model)
    with torch.no_grad():
        finder.run(x)
    return finder.culprit
