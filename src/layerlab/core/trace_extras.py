"""What the chain rule needs from a traced step that the node values do not show.

A sample's BatchNorm backward needs its batch's statistics and two sums over the whole
batch; Standardize's, its fixed statistics (buffers, not weights); Dropout's, the mask it
drew (inside composite layers too: attention weights, the encoder block's dropouts,
between stacked recurrent layers). These are recorded while the real step runs, only for
the layers that need them, so the traced step stays as cheap and as exact as before: the
masks are read from the random draws torch makes anyway (a dispatch mode that watches
`bernoulli_`), never drawn again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from layerlab.core.layers.extra import MASKED
from layerlab.core.layers.gpt import CausalSelfAttention, GPTBlock
from layerlab.core.layers.norm import Standardize

DROPOUTS = (nn.Dropout, *MASKED)  # one mask per step, shaped like (or broadcast over) x
RANDOM = (*DROPOUTS, nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.LSTM, nn.GRU,
          CausalSelfAttention, GPTBlock)
_BERNOULLI = {torch.ops.aten.bernoulli_.float, torch.ops.aten.bernoulli.p}
_NATIVE_DROPOUT = torch.ops.aten.native_dropout.default


class _RandomDraws(TorchDispatchMode):
    """Keeps the dropout masks an operation draws, in the order it draws them."""

    def __init__(self) -> None:
        super().__init__()
        self.draws: list[torch.Tensor] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in _BERNOULLI:
            self.draws.append(out)  # scaled in place afterwards; only its zeros matter
        elif func is _NATIVE_DROPOUT:
            self.draws.append(out[1])
        return out


def wants_extras(module: nn.Module) -> bool:
    """Whether a layer's backward needs more than its input, output and weights."""
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, Standardize, *RANDOM))


class ExtrasRecorder:
    """Fills `values` (node → named tensors and flags) during one traced step."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.values: dict[str, dict[str, Any]] = {}
        self._normalised: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def run(self, node: str, module: nn.Module, x: torch.Tensor,
            call: Callable[[], object]) -> object:
        """Run the layer (`call`) and keep what its backward will need."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            self._batch_norm(node, module, x)
            return call()
        if isinstance(module, Standardize):  # its statistics are buffers, not weights
            self.values[node] = {"mean": module.mean.detach().cpu().clone(),
                                 "std": module.std.detach().cpu().clone()}
            return call()
        with _RandomDraws() as random:
            out = call()
        masks = [m.detach() != 0 for m in random.draws]
        if isinstance(module, DROPOUTS):
            self.values[node] = {"training": module.training,
                                 "masks": [m[: self.keep].cpu() for m in masks]}
        else:
            self.values[node] = {"training": module.training, "masks": [m.cpu() for m in masks]}
        return out

    def _batch_norm(self, node: str, module: nn.modules.batchnorm._BatchNorm,
                    x: torch.Tensor) -> None:
        batch_stats = module.training or module.running_mean is None
        if batch_stats:
            dims = [0, *range(2, x.dim())]
            with torch.no_grad():
                var, mean = torch.var_mean(x.detach().float(), dim=dims, unbiased=False)
            self._normalised[node] = (x, (var + module.eps).rsqrt(), mean)
        else:
            mean, var = module.running_mean.detach().clone(), module.running_var.detach().clone()
        self.values[node] = {"training": batch_stats, "mean": mean.cpu(), "var": var.cpu()}

    def grad_hooks(self) -> dict[str, Callable[[torch.Tensor], None]]:
        """node → a hook for its output's gradient, for the layers that need batch sums."""
        return {node: self._sums_hook(node) for node in self._normalised}

    def _sums_hook(self, node: str) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            x, inv_std, mean = self._normalised.pop(node)
            shape = [1, -1, *[1] * (x.dim() - 2)]
            dims = [0, *range(2, x.dim())]
            with torch.no_grad():
                g = grad.float()
                x_hat = (x.detach().float() - mean.view(shape)) * inv_std.view(shape)
                self.values[node]["sum_dy"] = g.sum(dims).cpu()
                self.values[node]["sum_dy_xhat"] = (g * x_hat).sum(dims).cpu()
        return hook
