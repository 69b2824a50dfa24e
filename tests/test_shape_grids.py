"""Shape inference at the edges, exhaustively over small grids: for every combination of
input size, kernel, stride, padding, dilation and ceil_mode (and heads, padding_idx, dims),
the inferred shape is the one torch computes, and shape inference refuses exactly what torch
refuses. Each case is one graph through `analyze` and one torch module written by hand."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from layerlab.core.shapes import analyze

from helpers import chain_graph

Case = tuple[str, dict[str, Any], list[int]]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Thousands of tiny ops: torch's thread pool only costs time here (6 ms a conv on
    two busy cores, against 0.05 ms on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def inferred(typ: str, params: dict[str, Any], shape: list[int],
             dtype: str = "float32") -> tuple[int, ...] | None:
    analysis = analyze(chain_graph(shape, (typ, params), dtype=dtype))
    assert all(node == "n0" for node, _ in analysis.errors), analysis.errors
    return analysis.shapes.get("n0")


def torch_shape(build: Callable[[], nn.Module], x: torch.Tensor,
                call: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
                ) -> tuple[int, ...] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 'same' with even kernels: a copy, still right
            module = build().eval()
            out = call(module, x) if call else module(x)
    except (RuntimeError, ValueError, AssertionError):
        return None
    shape = tuple(out.shape[1:])
    return shape if all(shape) else None  # an empty output is refused: nothing would follow


def mismatches(cases: Iterable[tuple[Case, Callable[[], nn.Module]]],
               dtype: str = "float32", call=None) -> list[str]:
    found = []
    for (typ, params, shape), build in cases:
        x = torch.zeros(2, *shape, dtype=torch.int64 if dtype == "int64" else torch.float32)
        ours, theirs = inferred(typ, params, shape, dtype), torch_shape(build, x, call)
        if ours != theirs:
            found.append(f"{typ} {params} on {shape}: LayerLab {ours}, torch {theirs}")
    return found


def tup(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


# -- pooling --------------------------------------------------------------------------------
def test_max_pool_1d_at_every_padding_dilation_and_ceil_edge():
    def cases():
        for length, k, s, p, d, ceil in itertools.product(range(1, 7), range(1, 5),
                                                          (None, 1, 2, 3), range(3), (1, 2),
                                                          (False, True)):
            params = {"kernel_size": k, "stride": s, "padding": p, "dilation": d,
                      "ceil_mode": ceil}
            yield ("MaxPool1d", params, [2, length]), lambda params=params: nn.MaxPool1d(
                **params)
    assert mismatches(cases()) == []


def test_avg_pool_2d_at_every_padding_and_ceil_edge():
    def cases():
        for h, k, s, p, ceil in itertools.product(range(1, 7), range(1, 5), (None, 1, 2, 3),
                                                  range(3), (False, True)):
            params = {"kernel_size": [k, 2], "stride": None if s is None else [s, 1],
                      "padding": [p, 0], "ceil_mode": ceil, "count_include_pad": p > 1}
            yield ("AvgPool2d", params, [1, h, 3]), lambda params=params: nn.AvgPool2d(
                **{k: tup(v) for k, v in params.items()})
    assert mismatches(cases()) == []


def test_max_pool_2d_treats_each_dimension_with_its_own_numbers():
    def cases():
        for (h, w), kernel, stride, padding, ceil in itertools.product(
                [(1, 5), (4, 7), (5, 2)], [2, [3, 1], [1, 4]], [None, [2, 3], 2],
                [0, [1, 0], [0, 2]], (False, True)):
            params = {"kernel_size": kernel, "stride": stride, "padding": padding,
                      "dilation": [1, 2], "ceil_mode": ceil}
            yield ("MaxPool2d", params, [1, h, w]), lambda params=params: nn.MaxPool2d(
                **{k: tup(v) for k, v in params.items()})
    assert mismatches(cases()) == []


def test_adaptive_average_pool_gives_any_asked_size():
    cases = ((("AdaptiveAvgPool2d", {"output_size": [oh, ow]}, [2, h, 3]),
              lambda oh=oh, ow=ow: nn.AdaptiveAvgPool2d((oh, ow)))
             for h, oh, ow in itertools.product(range(1, 5), range(1, 6), (1, 4)))
    assert mismatches(cases) == []


# -- convolution ----------------------------------------------------------------------------
def test_conv_1d_at_every_padding_and_padding_mode_edge():
    def cases():
        for length, k, s, p, d, mode in itertools.product(
                range(1, 6), range(1, 4), (1, 2), (0, 1, 2, 3, "same", "valid"), (1, 2),
                ("zeros", "reflect", "replicate", "circular")):
            params = {"out_channels": 2, "kernel_size": k, "stride": s, "padding": p,
                      "dilation": d, "padding_mode": mode}
            yield ("Conv1d", params, [2, length]), lambda params=params: nn.Conv1d(2,
                                                                                  **params)
    assert mismatches(cases()) == []


def test_conv_2d_groups_and_per_dimension_numbers():
    def cases():
        for (c, out, groups), kernel, padding, mode in itertools.product(
                [(2, 4, 2), (3, 3, 3), (2, 3, 2), (3, 2, 1)], [3, [1, 3]],
                [1, [2, 0], "same"], ("zeros", "reflect")):
            params = {"out_channels": out, "kernel_size": kernel, "padding": padding,
                      "groups": groups, "padding_mode": mode}
            yield ("Conv2d", params, [c, 2, 4]), lambda params=params, c=c: nn.Conv2d(
                c, **{k: tup(v) for k, v in params.items()})
    assert mismatches(cases()) == []


def test_conv_transpose_2d_at_every_stride_padding_and_output_padding_edge():
    def cases():
        for h, k, s, p, op, d in itertools.product(range(1, 4), range(1, 4), range(1, 4),
                                                   range(3), range(3), (1, 2)):
            params = {"out_channels": 2, "kernel_size": [k, 1], "stride": [s, 1],
                      "padding": [p, 0], "output_padding": [op, 0], "dilation": [d, 1]}
            yield ("ConvTranspose2d", params, [1, h, 2]), lambda params=params: \
                nn.ConvTranspose2d(1, **{k: tup(v) for k, v in params.items()})
    assert mismatches(cases()) == []


# -- sequences ------------------------------------------------------------------------------
def test_embedding_padding_idx_at_both_ends_of_the_vocabulary():
    cases = ((("Embedding", {"num_embeddings": n, "embedding_dim": 3, "padding_idx": pad},
               [4]), lambda n=n, pad=pad: nn.Embedding(n, 3, padding_idx=pad))
             for n in range(1, 5) for pad in range(-n - 2, n + 2))
    assert mismatches(cases, dtype="int64") == []


def test_attention_heads_must_divide_the_features():
    def self_attention(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x, x, x)[0]

    mha = ((("MultiheadAttention", {"num_heads": h}, [3, d]),
            lambda d=d, h=h: nn.MultiheadAttention(d, h, batch_first=True))
           for d, h in itertools.product(range(1, 9), range(1, 5)))
    assert mismatches(mha, call=self_attention) == []
    encoder = ((("TransformerEncoderLayer", {"nhead": h, "dim_feedforward": 4}, [2, d]),
                lambda d=d, h=h: nn.TransformerEncoderLayer(d, h, 4, batch_first=True))
               for d, h in itertools.product(range(1, 9), range(1, 5)))
    assert mismatches(encoder) == []


def test_recurrent_layers_give_hidden_size_per_direction_at_every_step():
    def first(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x)[0]

    cases = (((typ, {"hidden_size": hidden, "num_layers": layers, "bidirectional": both},
               [steps, 3]),
              lambda typ=typ, hidden=hidden, layers=layers, both=both: getattr(nn, typ)(
                  3, hidden, layers, batch_first=True, bidirectional=both))
             for typ, hidden, layers, both, steps in itertools.product(
                 ("LSTM", "GRU"), (1, 4), (1, 2), (False, True), (1, 5)))
    assert mismatches(cases, call=first) == []


def test_mean_over_every_dimension_list_and_keepdim():
    class Mean(nn.Module):
        """torch's mean, except over the batch: LayerLab refuses that on purpose, since a
        sample's output must not depend on the other samples of its batch."""

        def __init__(self, dim: Any, keepdim: bool) -> None:
            super().__init__()
            self.dim, self.keepdim = tup(dim), keepdim

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            dims = self.dim if isinstance(self.dim, tuple) else (self.dim,)
            if any(d % x.dim() == 0 for d in dims):
                raise ValueError("the batch dimension")
            return x.mean(dim=self.dim, keepdim=self.keepdim)

    dims = [0, 1, 2, 3, -1, -2, -3, -4, [1, 2], [1, -1], [2, 1], [1, 1], [0, 1], [1, 2, 3]]
    cases = ((("Mean", {"dim": dim, "keepdim": keep}, [2, 3, 4]),
              lambda dim=dim, keep=keep: Mean(dim, keep))
             for dim, keep in itertools.product(dims, (False, True)))
    assert mismatches(cases) == []
