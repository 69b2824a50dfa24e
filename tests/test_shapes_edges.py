"""Shape inference of convolution, pooling and sequence layers against torch itself, on random
parameters that reach the edges (padding, ceil_mode, dilation, stride, groups): LayerLab
accepts a layer exactly when torch runs it, and then infers the shape torch gives."""

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from layerlab.core.compiler import build_model
from layerlab.core.shapes import analyze

from helpers import chain_graph

# torch's own note on an even kernel with padding='same', not a problem of the test
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
CHECKS = settings(max_examples=120, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow])


def size(n: int, low: int, high: int):
    one = st.integers(low, high)
    return st.one_of(one, st.lists(one, min_size=n, max_size=n)) if n > 1 else one


def torch_shape(make, x: torch.Tensor) -> tuple[int, ...] | None:
    """The output shape torch gives, or None when torch refuses the layer or the input or
    gives an empty output (which LayerLab refuses: nothing would reach the next layer)."""
    try:
        with torch.no_grad():
            shape = tuple(make()(x).shape[1:])
    except (RuntimeError, ValueError):
        return None
    return shape if all(d > 0 for d in shape) else None


def layerlab_shape(input_shape: list[int], typ: str, params: dict[str, Any],
                   dtype: str = "float32") -> tuple[int, ...] | None:
    g = chain_graph(input_shape, (typ, params), dtype=dtype)
    analysis = analyze(g)
    if analysis.errors:
        assert all(isinstance(message, str) and message for _, message in analysis.errors)
        return None
    return tuple(analysis.shapes["n0"])


def agree(input_shape, typ, params, make, x):
    expected = torch_shape(make, x)
    got = layerlab_shape(input_shape, typ, params)
    assert got == expected, (typ, input_shape, params)
    if got is not None:  # the compiled model runs and gives that shape too
        with torch.no_grad():
            assert tuple(build_model(chain_graph(input_shape, (typ, params)))(x).shape[1:]) \
                == got


def as_tuple(value, n):
    return tuple(value) if isinstance(value, list) else (value,) * n


@st.composite
def conv_case(draw, n: int):
    channels = draw(st.sampled_from([1, 2, 4]))
    spatial = [draw(st.integers(1, 9)) for _ in range(n)]
    params = {"out_channels": draw(st.sampled_from([1, 2, 4])),
              "kernel_size": draw(size(n, 1, 5)), "stride": draw(size(n, 1, 3)),
              "padding": draw(st.one_of(size(n, 0, 3), st.sampled_from(["same", "valid"]))),
              "dilation": draw(size(n, 1, 3)), "groups": draw(st.sampled_from([1, 2])),
              "bias": draw(st.booleans())}
    return [channels, *spatial], params


@given(conv_case(1))
@CHECKS
def test_conv1d_shapes_are_torchs(case):
    shape, p = case
    agree(shape, "Conv1d", p, lambda: nn.Conv1d(shape[0], **p), torch.randn(2, *shape))


@given(conv_case(2))
@CHECKS
def test_conv2d_shapes_are_torchs(case):
    shape, p = case
    agree(shape, "Conv2d", p, lambda: nn.Conv2d(shape[0], **p), torch.randn(2, *shape))


@given(st.data())
@CHECKS
def test_transposed_conv_shapes_are_torchs(data):
    shape = [data.draw(st.sampled_from([1, 2, 4])), data.draw(st.integers(1, 7)),
             data.draw(st.integers(1, 7))]
    p = {"out_channels": data.draw(st.sampled_from([1, 2, 4])),
         "kernel_size": data.draw(size(2, 1, 4)), "stride": data.draw(size(2, 1, 3)),
         "padding": data.draw(size(2, 0, 3)), "output_padding": data.draw(size(2, 0, 2)),
         "dilation": data.draw(size(2, 1, 2)), "groups": data.draw(st.sampled_from([1, 2]))}
    agree(shape, "ConvTranspose2d", p, lambda: nn.ConvTranspose2d(shape[0], **p),
          torch.randn(2, *shape))


@st.composite
def pool_case(draw, n: int, dilated: bool):
    shape = [draw(st.sampled_from([1, 3])), *[draw(st.integers(1, 9)) for _ in range(n)]]
    params = {"kernel_size": draw(size(n, 1, 5)),
              "stride": draw(st.one_of(st.none(), size(n, 1, 3))),
              "padding": draw(size(n, 0, 3)), "ceil_mode": draw(st.booleans())}
    if dilated:
        params["dilation"] = draw(size(n, 1, 3))
    return shape, params


@given(pool_case(1, True))
@CHECKS
def test_maxpool1d_shapes_are_torchs_at_padding_and_ceil_mode_edges(case):
    shape, p = case
    agree(shape, "MaxPool1d", p, lambda: nn.MaxPool1d(**p), torch.randn(2, *shape))


@given(pool_case(2, True))
@CHECKS
def test_maxpool2d_shapes_are_torchs_at_padding_and_ceil_mode_edges(case):
    shape, p = case
    agree(shape, "MaxPool2d", p, lambda: nn.MaxPool2d(**p), torch.randn(2, *shape))


@given(pool_case(2, False))
@CHECKS
def test_avgpool2d_shapes_are_torchs_at_padding_and_ceil_mode_edges(case):
    shape, p = case
    agree(shape, "AvgPool2d", p, lambda: nn.AvgPool2d(**p), torch.randn(2, *shape))


@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), size(2, 1, 6))
@CHECKS
def test_adaptive_pool_gives_the_asked_size(channels, h, w, out):
    p = {"output_size": out}
    agree([channels, h, w], "AdaptiveAvgPool2d", p, lambda: nn.AdaptiveAvgPool2d(**p),
          torch.randn(2, channels, h, w))


def test_ceil_mode_keeps_a_last_window_only_when_it_starts_inside_the_input():
    # L=5, k=2, s=2: floor gives 2; ceil gives 3 (the last window starts at 4, inside)
    assert layerlab_shape([1, 5], "MaxPool1d", {"kernel_size": 2, "ceil_mode": True}) == (1, 3)
    assert layerlab_shape([1, 5], "MaxPool1d", {"kernel_size": 2}) == (1, 2)
    # L=4, k=2, s=2, padding 1: ceil would start a window at 5, in the right padding only
    assert layerlab_shape([1, 4], "MaxPool1d", {"kernel_size": 2, "padding": 1,
                                                "ceil_mode": True}) == (1, 3)
    assert tuple(nn.MaxPool1d(2, padding=1, ceil_mode=True)(torch.randn(1, 1, 4)).shape[1:]) \
        == (1, 3)


@given(st.sampled_from(["LSTM", "GRU"]), st.integers(1, 6), st.integers(1, 5),
       st.integers(1, 5), st.integers(1, 2), st.booleans())
@CHECKS
def test_recurrent_layers_give_a_state_per_step(typ, steps, features, hidden, layers, both):
    p = {"hidden_size": hidden, "num_layers": layers, "bidirectional": both}

    def make():
        module = getattr(nn, typ)(features, batch_first=True, **p)
        return lambda x: module(x)[0]

    agree([steps, features], typ, p, make, torch.randn(2, steps, features))


@given(st.integers(1, 6), st.sampled_from([1, 2, 3, 4, 6]), st.integers(1, 4))
@CHECKS
def test_attention_keeps_the_sequence_shape_when_the_heads_divide_it(steps, width, heads):
    g = chain_graph([steps, width], ("MultiheadAttention", {"num_heads": heads}))
    analysis = analyze(g)
    assert (not analysis.errors) == (width % heads == 0)
    if width % heads == 0:
        assert tuple(analysis.shapes["n0"]) == (steps, width)
        with torch.no_grad():
            assert tuple(build_model(g)(torch.randn(2, steps, width)).shape) == (2, steps, width)


@given(st.integers(1, 6), st.integers(2, 9), st.integers(1, 5))
@CHECKS
def test_embedding_adds_a_feature_axis_to_token_ids(steps, vocab, dim):
    p = {"num_embeddings": vocab, "embedding_dim": dim}
    assert layerlab_shape([steps], "Embedding", p, dtype="int64") == (steps, dim)
    g = chain_graph([steps], ("Embedding", p), dtype="int64")
    with torch.no_grad():
        out = build_model(g)(torch.randint(0, vocab, (2, steps)))
    assert tuple(out.shape) == (2, steps, dim)
