"""Convolution and pooling layers over 1-D signals [C, L] and 2-D images [C, H, W]."""

from __future__ import annotations

from torch import nn

from layerlab.core.layers.common import BIAS, INIT
from layerlab.core.spec import (
    REQUIRED,
    Ctor,
    Ctx,
    LayerSpec,
    Param,
    Shape,
    ShapeError,
    conv_out,
    ctor,
    fmt_shape,
    need_rank,
)

LAYOUT = {1: "[C, L]", 2: "[C, H, W]"}


def _size(name: str, n: int, default: object, help_text: str, minimum: int = 1,
          nullable: bool = False, suggest: object = None) -> Param:
    return Param(name, "size", default, help=help_text, minimum=minimum, length=n,
                 nullable=nullable, suggest=suggest)


def _spatial_out(ctx: Ctx, n: int, kernel: tuple[int, ...], stride: tuple[int, ...],
                 padding: tuple[int, ...], dilation: tuple[int, ...],
                 ceil_mode: bool = False) -> tuple[int, ...]:
    out = tuple(conv_out(length, k, s, p, d, ceil_mode) for length, k, s, p, d in
                zip(ctx.shape[1:], kernel, stride, padding, dilation, strict=True))
    if any(o < 1 for o in out):
        raise ShapeError(f"kernel {fmt_shape(kernel)} (dilation {fmt_shape(dilation)}, "
                         f"padding {fmt_shape(padding)}) is larger than the input "
                         f"{ctx.src()}; output would be {fmt_shape(out)}")
    return out


def _conv_shape(ctx: Ctx, n: int) -> Shape:
    need_rank(ctx, (n + 1,), LAYOUT[n])
    p = ctx.params
    _check_groups(ctx)
    kernel, stride, dilation = ctx.size("kernel_size", n), ctx.size("stride", n), \
        ctx.size("dilation", n)
    if p["padding"] == "same":
        if any(s != 1 for s in stride):
            raise ShapeError("padding='same' needs stride 1 (torch refuses it otherwise)")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        _check_padding_mode(ctx, [(t // 2, t - t // 2) for t in totals])
        return (p["out_channels"], *ctx.shape[1:])
    padding = (0,) * n if p["padding"] == "valid" else ctx.size("padding", n)
    _check_padding_mode(ctx, [(pad, pad) for pad in padding])
    return (p["out_channels"], *_spatial_out(ctx, n, kernel, stride, padding, dilation))


def _check_groups(ctx: Ctx) -> None:
    """Grouped (and depthwise: groups = input channels) convolutions split the channels
    into equal groups, so groups must divide both channel counts."""
    groups, channels, out = ctx.params["groups"], ctx.shape[0], ctx.params["out_channels"]
    if channels % groups or out % groups:
        raise ShapeError(f"{ctx.node_id} has groups={groups}, which must divide both its "
                         f"input channels ({channels}, {ctx.src()}) and out_channels ({out})")


def _check_padding_mode(ctx: Ctx, pads: list[tuple[int, int]]) -> None:
    """Reflect padding mirrors the input, so it must be shorter than the input; circular
    padding wraps it around, at most once. (torch refuses either only at the first batch.)"""
    mode = ctx.params["padding_mode"]
    if mode not in ("reflect", "circular"):
        return
    for length, (low, high) in zip(ctx.shape[1:], pads, strict=True):
        if (max(low, high) >= length) if mode == "reflect" else (max(low, high) > length):
            bound = "smaller than" if mode == "reflect" else "at most"
            raise ShapeError(f"padding_mode={mode} needs padding {bound} each spatial size "
                             f"of the input, but {ctx.src()} is padded by {max(low, high)}")


def _conv_params(n: int) -> tuple[Param, ...]:
    return (
        Param("out_channels", "int", help="Number of filters (output channels).", minimum=1,
              suggest=8),
        _size("kernel_size", n, REQUIRED, "Size of each filter.", suggest=3),
        _size("stride", n, 1, "Step between filter positions."),
        Param("padding", "padding", 0, minimum=0, length=n,
              help="Zeros added on each side, or 'same' / 'valid'."),
        _size("dilation", n, 1, "Spacing between filter taps."),
        Param("groups", "int", 1, minimum=1, help="Split channels into independent groups; "
              "groups = input channels is a depthwise convolution."),
        BIAS,
        Param("padding_mode", "choice", "zeros", choices=("zeros", "reflect", "replicate",
                                                          "circular"),
              help="What the padding holds."),
        INIT,
    )


def _conv_build(cls: type[nn.Module]):
    def build(ctx: Ctx) -> Ctor:
        p = dict(ctx.params)
        p.pop("init")
        return ctor(cls, ctx.shape[0], **{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in p.items()})
    return build


def _conv_transpose_shape(ctx: Ctx) -> Shape:
    need_rank(ctx, (3,), LAYOUT[2])
    p = ctx.params
    _check_groups(ctx)
    k, s, pad, op, d = (ctx.size(name, 2) for name in
                        ("kernel_size", "stride", "padding", "output_padding", "dilation"))
    if any(o >= max(si, di) for o, si, di in zip(op, s, d, strict=True)):
        raise ShapeError("output_padding must be smaller than stride or dilation")
    out = tuple((length - 1) * si - 2 * pi + di * (ki - 1) + oi + 1 for length, ki, si, pi,
                oi, di in zip(ctx.shape[1:], k, s, pad, op, d, strict=True))
    if any(o < 1 for o in out):
        raise ShapeError(f"padding {fmt_shape(pad)} is too large for {ctx.src()}")
    return (p["out_channels"], *out)


def _pool_shape(ctx: Ctx, n: int, dilated: bool = True) -> Shape:
    need_rank(ctx, (n + 1,), LAYOUT[n])
    p = ctx.params
    kernel = ctx.size("kernel_size", n)
    stride = kernel if p["stride"] is None else ctx.size("stride", n)
    padding = ctx.size("padding", n)
    dilation = ctx.size("dilation", n) if dilated else (1,) * n
    if any(2 * pi > ki for pi, ki in zip(padding, kernel, strict=True)):
        raise ShapeError(f"padding {fmt_shape(padding)} must be at most half the kernel "
                         f"size {fmt_shape(kernel)}")
    out = _spatial_out(ctx, n, kernel, stride, padding, dilation, p["ceil_mode"])
    return (ctx.shape[0], *out)


def _pool_params(n: int, dilated: bool) -> tuple[Param, ...]:
    params = [
        _size("kernel_size", n, REQUIRED, "Size of the pooling window.", suggest=2),
        _size("stride", n, None, "Step between windows; empty means kernel_size.",
              nullable=True),
        _size("padding", n, 0, "Implicit padding on each side.", minimum=0),
    ]
    if dilated:
        params.append(_size("dilation", n, 1, "Spacing between window taps."))
    params.append(Param("ceil_mode", "bool", False, help="Round the output size up."))
    if not dilated:
        params.append(Param("count_include_pad", "bool", True,
                            help="Count padding zeros in the average."))
    return tuple(params)


def _pool_build(cls: type[nn.Module]):
    return lambda ctx: ctor(cls, **{k: tuple(v) if isinstance(v, list) else v
                              for k, v in ctx.params.items()})


def _adaptive_shape(ctx: Ctx) -> Shape:
    need_rank(ctx, (3,), LAYOUT[2])
    return (ctx.shape[0], *ctx.size("output_size", 2))


def _conv_spec(n: int) -> LayerSpec:
    return LayerSpec(
        f"Conv{n}d", "convolution",
        f"{n}-D convolution: slides learned filters over the input, each producing one "
        "output channel.", "y[o] = b[o] + Σ_c W[o, c] ⋆ x[c]",
        params=_conv_params(n), infer=lambda c: _conv_shape(c, n),
        build=_conv_build(nn.Conv1d if n == 1 else nn.Conv2d),
        key_params=("out_channels", "kernel_size"),
    )


def _maxpool_spec(n: int) -> LayerSpec:
    return LayerSpec(
        f"MaxPool{n}d", "convolution", "Keeps the largest value in each window, shrinking "
        "the feature maps.", "y = max over window of x",
        params=_pool_params(n, dilated=True), infer=lambda c: _pool_shape(c, n),
        build=_pool_build(nn.MaxPool1d if n == 1 else nn.MaxPool2d),
        key_params=("kernel_size",),
    )


SPECS = [
    _conv_spec(1),
    _conv_spec(2),
    LayerSpec(
        "ConvTranspose2d", "convolution", "Transposed convolution: the gradient of Conv2d, "
        "used to upsample feature maps.", "y = W ⋆ᵀ x + b",
        params=(
            Param("out_channels", "int", help="Number of output channels.", minimum=1, suggest=8),
            _size("kernel_size", 2, REQUIRED, "Size of each filter.", suggest=2),
            _size("stride", 2, 1, "Upsampling step."),
            _size("padding", 2, 0, "Removed from each side of the output.", minimum=0),
            _size("output_padding", 2, 0, "Added to one side of the output.", minimum=0),
            Param("groups", "int", 1, minimum=1, help="Independent channel groups."),
            BIAS,
            _size("dilation", 2, 1, "Spacing between filter taps."),
            INIT,
        ),
        infer=_conv_transpose_shape, build=_conv_build(nn.ConvTranspose2d),
        key_params=("out_channels", "kernel_size", "stride"),
    ),
    _maxpool_spec(1),
    _maxpool_spec(2),
    LayerSpec(
        "AvgPool2d", "convolution", "Averages each window, shrinking the feature maps.",
        "y = mean over window of x", params=_pool_params(2, dilated=False),
        infer=lambda c: _pool_shape(c, 2, dilated=False), build=_pool_build(nn.AvgPool2d),
        key_params=("kernel_size",),
    ),
    LayerSpec(
        "AdaptiveAvgPool2d", "convolution", "Averages each feature map down to a fixed size, "
        "whatever the input size.", "y = mean over adaptive windows of x",
        params=(_size("output_size", 2, REQUIRED, "Height and width of the output.", suggest=1),),
        infer=_adaptive_shape,
        build=lambda c: ctor(nn.AdaptiveAvgPool2d, c.size("output_size", 2)),
        key_params=("output_size",),
    ),
]
