"""Chain-rule rules of convolution and pooling: dx by the transposed operation, dW by
correlating the input with dL/dy; max pooling routes to the first maximum of each window
(torch's pick, ties not shared), average pooling spreads dL/dy evenly over each window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn import grad as conv_grad

from layerlab.core.explain_rules import Local, Rule, RuleFn, Tensor, need


def _size(v: Local, name: str, n: int) -> tuple[int, ...]:
    value = v.params[name]
    return tuple(value) if isinstance(value, list) else (value,) * n


def _pads(v: Local, n: int, kernel: tuple[int, ...],
          dilation: tuple[int, ...]) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dimension, as torch applies it."""
    padding = v.params["padding"]
    if padding == "valid":
        return [(0, 0)] * n
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in _size(v, "padding", n)]


def _pad(x: Tensor, pads: list[tuple[int, int]], mode: str) -> tuple[Tensor, Tensor]:
    """The padded input and, for each padded position, the input position it copies
    (−1 for a zero): the adjoint of padding sends each gradient back there."""
    spatial = x.shape[2:]
    flat = [p for pair in reversed(pads) for p in pair]
    index = torch.arange(math.prod(spatial), dtype=torch.float64).reshape(1, 1, *spatial)
    if mode == "zeros":
        return F.pad(x, flat), F.pad(index, flat, value=-1.0)
    return F.pad(x, flat, mode=mode), F.pad(index, flat, mode=mode)


def _unpad(grad: Tensor, index: Tensor, like: Tensor) -> Tensor:
    """Sum the padded gradient back onto the input positions it came from."""
    g = grad.reshape(*grad.shape[:2], -1)
    idx = index.reshape(-1).long()
    keep = idx >= 0
    out = torch.zeros(*like.shape[:2], math.prod(like.shape[2:]), dtype=grad.dtype)
    out.index_add_(2, idx[keep], g[..., keep])
    return out.reshape(like.shape)


def _conv(v: Local) -> Rule:
    x, w, s = v.xs[0], need(v, "weight"), v.sample
    n = x.dim() - 2
    kernel, stride, dilation = w.shape[2:], _size(v, "stride", n), _size(v, "dilation", n)
    groups = v.params["groups"]
    xp, index = _pad(x, _pads(v, n, tuple(kernel), dilation), v.params["padding_mode"])
    grad_input = conv_grad.conv1d_input if n == 1 else conv_grad.conv2d_input
    grad_weight = conv_grad.conv1d_weight if n == 1 else conv_grad.conv2d_weight
    dxp = grad_input(xp.shape, w, v.dy, stride, 0, dilation, groups)
    dx = _unpad(dxp, index, x)
    params = {"weight": grad_weight(xp, w.shape, v.dy, stride, 0, dilation, groups)}
    if "bias" in v.weights:
        params["bias"] = v.dy.sum([0, *range(2, v.dy.dim())])
    terms = {"{x}": x[s], "dL/d{y}": v.dy[s], "dL/d{x}": dx[s]}
    terms.update(_position_share(xp[s], v.dy[s], kernel, stride, dilation, groups))
    return Rule("dL/d{x} = conv_transpose(dL/d{y}, W) (each output spreads its gradient back "
                "over the inputs its window read);  dL/dW = Σₙ {x}ₙ ⋆ dL/d{y}ₙ "
                "(correlation);  dL/db = Σ dL/d{y}", [dx], params, terms)


def _position_share(xp: Tensor, dy: Tensor, kernel: torch.Size, stride: tuple[int, ...],
                    dilation: tuple[int, ...], groups: int) -> dict[str, Tensor]:
    """One output position's share of dL/dW: its dL/dy times the input patch it read (the
    position where |dL/dy| is largest)."""
    where = [int(i) for i in torch.unravel_index(dy.abs().argmax(), dy.shape)]
    channel, position = where[0], where[1:]
    per_group = xp.shape[0] // groups
    first = channel // (dy.shape[0] // groups) * per_group
    window = tuple(slice(p * st, p * st + d * (k - 1) + 1, d) for p, st, d, k in
                   zip(position, stride, dilation, kernel, strict=True))
    patch = xp[(slice(first, first + per_group), *window)]
    at = ", ".join(str(i) for i in where)
    return {f"patch read by output ({at})": patch, f"dL/d{{y}} at ({at})": dy[tuple(where)],
            f"its share of dL/dW[{channel}]": dy[tuple(where)] * patch}


def _conv_transpose(v: Local) -> Rule:
    x, w, s = v.xs[0], need(v, "weight"), v.sample
    stride, padding, dilation = (_size(v, k, 2) for k in ("stride", "padding", "dilation"))
    groups = v.params["groups"]
    full = F.conv2d(v.dy, w, None, stride, padding, dilation, groups)
    dx = full[..., : x.shape[2], : x.shape[3]]  # output_padding ≥ stride: rows x never had
    virtual = F.pad(x, (0, full.shape[3] - x.shape[3], 0, full.shape[2] - x.shape[2]))
    params = {"weight": conv_grad.conv2d_weight(v.dy, w.shape, virtual, stride, padding,
                                                dilation, groups)}
    if "bias" in v.weights:
        params["bias"] = v.dy.sum([0, 2, 3])
    return Rule("dL/d{x} = conv(dL/d{y}, W) (the forward convolution undoes the spreading);  "
                "dL/dW = Σₙ dL/d{y}ₙ ⋆ {x}ₙ (correlation);  dL/db = Σ dL/d{y}", [dx], params,
                terms={"{x}": x[s], "dL/d{y}": v.dy[s], "dL/d{x}": dx[s]})


def _windows(x: Tensor, out: tuple[int, int], kernel: tuple[int, int],
             stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
             fill: float) -> tuple[Tensor, tuple[int, int]]:
    """Every pooling window of x [N, C, H, W] as columns [N, C, window, positions]; the
    padded size (windows that ceil_mode lets run past the edge read `fill` there)."""
    spans = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in
             zip(out, stride, dilation, kernel, strict=True)]
    after = [max(p, span - size - p) for p, span, size in
             zip(padding, spans, x.shape[2:], strict=True)]
    xp = F.pad(x, (padding[1], after[1], padding[0], after[0]), value=fill)
    xp = xp[..., : spans[0], : spans[1]]
    # unfold over [N, C, H, W] at once (channel-major columns): per-channel [N·C, 1, H, W]
    # made the same columns 20× slower
    cols = F.unfold(xp, kernel, dilation, 0, stride)
    return cols.reshape(*x.shape[:2], math.prod(kernel), -1), (spans[0], spans[1])


def _fold(cols: Tensor, like: Tensor, padded: tuple[int, int], kernel: tuple[int, int],
          stride: tuple[int, int], padding: tuple[int, int],
          dilation: tuple[int, int]) -> Tensor:
    """The adjoint of _windows: add each window's column back where it was read from."""
    n, c = like.shape[:2]
    out = F.fold(cols.reshape(n, c * cols.shape[2], -1), padded, kernel, dilation, 0, stride)
    h, w = like.shape[2:]
    short = (max(0, padding[1] + w - padded[1]), max(0, padding[0] + h - padded[0]))
    out = F.pad(out.reshape(n, c, *padded), (0, short[0], 0, short[1]))  # never read: 0
    return out[..., padding[0]: padding[0] + h, padding[1]: padding[1] + w]


def _pool_args(v: Local, n: int) -> tuple[tuple[int, int], ...]:
    kernel = _size(v, "kernel_size", n)
    stride = kernel if v.params["stride"] is None else _size(v, "stride", n)
    dilation = _size(v, "dilation", n) if "dilation" in v.params else (1,) * n
    padding = _size(v, "padding", n)
    if n == 1:  # a signal is an image of height 1
        return (1, *kernel), (1, *stride), (0, *padding), (1, *dilation)  # type: ignore
    return kernel, stride, padding, dilation  # type: ignore


def _max_pool(v: Local) -> Rule:
    x, s = v.xs[0], v.sample
    n = x.dim() - 2
    kernel, stride, padding, dilation = _pool_args(v, n)
    x4, dy4 = (x, v.dy) if n == 2 else (x.unsqueeze(2), v.dy.unsqueeze(2))
    cols, padded = _windows(x4, dy4.shape[2:], kernel, stride, padding, dilation, -math.inf)
    first = cols.argmax(dim=2, keepdim=True)  # the first maximum of each window
    routed = torch.zeros_like(cols).scatter_(2, first, dy4.reshape(*dy4.shape[:2], 1, -1))
    dx = _fold(routed, x4, padded, kernel, stride, padding, dilation).reshape(x.shape)
    return Rule("dL/d{x} = dL/d{y} routed to the arg-max of each window (the first maximum "
                "when several tie; the others get 0)", [dx], terms={
                    "{x}": x[s], "{y}": v.y[s], "arg-max in each window": first[s].reshape(
                        v.dy.shape[1:]), "dL/d{y}": v.dy[s], "dL/d{x}": dx[s]})


def _avg_divisors(v: Local, size: int, out: int, k: int, s: int, p: int) -> Tensor:
    """torch's divisor of each window along one dimension."""
    starts = torch.arange(out) * s - p
    ends = torch.clamp(starts + k, max=size + p)
    if v.params["count_include_pad"]:
        return (ends - starts).double()
    return (torch.clamp(ends, max=size) - torch.clamp(starts, min=0)).double()


def _avg_pool(v: Local) -> Rule:
    x, s = v.xs[0], v.sample
    kernel, stride, padding, dilation = _pool_args(v, 2)
    out = v.dy.shape[2:]
    div = torch.outer(*[_avg_divisors(v, size, o, k, st, p) for size, o, k, st, p in
                        zip(x.shape[2:], out, kernel, stride, padding, strict=True)])
    share = (v.dy / div.to(v.dy.dtype)).reshape(*v.dy.shape[:2], 1, -1)
    cols = share.expand(-1, -1, math.prod(kernel), -1)
    _, padded = _windows(x[:1, :1], out, kernel, stride, padding, dilation, 0.0)
    dx = _fold(cols, x, padded, kernel, stride, padding, dilation)
    return Rule("dL/d{x} = each window's dL/d{y} / (its size), spread over the window",
                [dx], terms={"{x}": x[s], "dL/d{y}": v.dy[s], "window sizes": div,
                             "dL/d{x}": dx[s]})


def _adaptive_matrix(size: int, out: int, dtype: torch.dtype) -> Tensor:
    """[out, size]: row i averages torch's adaptive window i."""
    m = torch.zeros(out, size, dtype=dtype)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def _adaptive_avg_pool(v: Local) -> Rule:
    x, s = v.xs[0], v.sample
    (h, w), (oh, ow) = x.shape[2:], v.dy.shape[2:]
    rows, cols = _adaptive_matrix(h, oh, v.dy.dtype), _adaptive_matrix(w, ow, v.dy.dtype)
    dx = rows.T @ v.dy @ cols
    return Rule("dL/d{x} = each adaptive window's dL/d{y} / (its size), spread over the "
                "window", [dx], terms={"{x}": x[s], "dL/d{y}": v.dy[s], "dL/d{x}": dx[s]})


RULES: dict[str, RuleFn] = {
    "Conv1d": _conv, "Conv2d": _conv, "ConvTranspose2d": _conv_transpose,
    "MaxPool1d": _max_pool, "MaxPool2d": _max_pool, "AvgPool2d": _avg_pool,
    "AdaptiveAvgPool2d": _adaptive_avg_pool,
}
