"""Rules for traced functions and tensor methods (`torch.cat`, `x.flatten(1)`, `a + b`).

Each rule reads the call's arguments as the traced run saw them and adds the catalogue
layer that computes the same thing, or makes the call an alias of its input (`contiguous`).
Shapes given by computed sizes (`x.view(x.size(0), -1)`) are read from the traced output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.fx

if TYPE_CHECKING:
    from layerlab.core.import_ops import Mapper

Node = torch.fx.Node
Rule = Callable[["Mapper", Node], None]

# activation functions: catalogue type and its parameters as (position, name, default)
_ACTIVATIONS: dict[str, tuple[str, tuple[tuple[int, str, Any], ...]]] = {
    "relu": ("ReLU", ()), "sigmoid": ("Sigmoid", ()), "tanh": ("Tanh", ()),
    "silu": ("SiLU", ()), "hardswish": ("Hardswish", ()), "hardsigmoid": ("Hardsigmoid", ()),
    "relu6": ("ReLU6", ()), "gelu": ("GELU", ((1, "approximate", "none"),)),
    "elu": ("ELU", ((1, "alpha", 1.0),)),
    "leaky_relu": ("LeakyReLU", ((1, "negative_slope", 0.01),)),
    "softmax": ("Softmax", ((1, "dim", None),)),
    "log_softmax": ("LogSoftmax", ((1, "dim", None),)),
}


def _activation(key: str) -> Rule:
    type_name, spec = _ACTIVATIONS[key]

    def rule(mapper: Mapper, node: Node) -> None:
        params = {name: mapper.value(node, i, name, default) for i, name, default in spec}
        if params.get("dim", 0) is None:
            raise mapper.refusal(node, "leaves its dimension implicit (deprecated in torch); "
                                       "give dim=")
        mapper.add(node, type_name, params, [mapper.ref(node, node.args[0])])
    return rule


def _binary(type_name: str) -> Rule:
    """a + b, a * b of two tensors (broadcasting as torch does)."""
    def rule(mapper: Mapper, node: Node) -> None:
        operands = list(node.args[:2])
        if len(operands) < 2 or node.kwargs.get("alpha", 1) != 1:
            raise mapper.refusal(node, "is not a plain sum or product of two tensors")
        mapper.add(node, type_name, {}, [mapper.ref(node, a) for a in operands])
    return rule


def _cat(mapper: Mapper, node: Node) -> None:
    parts = node.args[0] if node.args else node.kwargs["tensors"]
    dim = mapper.value(node, 1, "dim", 0)
    if len(parts) == 1:  # DenseNet's first layer joins its one input: the input itself
        mapper.alias(node, parts[0])
        return
    mapper.add(node, "Concat", {"dim": dim}, [mapper.ref(node, p) for p in parts])


def _flatten(mapper: Mapper, node: Node) -> None:
    start, end = mapper.value(node, 1, "start_dim", 0), mapper.value(node, 2, "end_dim", -1)
    rank = mapper.values[node.args[0]].dim()
    if start % rank == 0:
        raise mapper.refusal(node, "flattens the batch dimension into the features; "
                                   "flatten from dim 1 (torch.flatten(x, 1))")
    mapper.add(node, "Flatten", {"start_dim": start, "end_dim": end},
               [mapper.ref(node, node.args[0])])


def _reshape(mapper: Mapper, node: Node) -> None:
    before, after = mapper.values[node.args[0]], mapper.values[node]
    if after.dim() == 0 or after.shape[0] != before.shape[0]:
        raise mapper.refusal(node, f"reshapes {list(before.shape)} into {list(after.shape)}, "
                                   "mixing samples of the batch; keep dim 0 the batch")
    mapper.add(node, "Reshape", {"shape": list(after.shape[1:])},
               [mapper.ref(node, node.args[0])])


def _alias(mapper: Mapper, node: Node) -> None:
    mapper.alias(node, node.args[0])


def _adaptive_avg_pool(mapper: Mapper, node: Node) -> None:
    size = mapper.value(node, 1, "output_size")
    size = list(size) if isinstance(size, (list, tuple)) else size
    mapper.add(node, "AdaptiveAvgPool2d", {"output_size": size},
               [mapper.ref(node, node.args[0])])


def _pool(type_name: str, names: tuple[tuple[str, Any], ...]) -> Rule:
    """F.max_pool2d / F.avg_pool2d: the module's arguments by position after the input."""
    def rule(mapper: Mapper, node: Node) -> None:
        params = {}
        for i, (name, default) in enumerate(names, start=1):
            value = mapper.value(node, i, name, default)
            params[name] = list(value) if isinstance(value, tuple) else value
        if params.pop("return_indices", False) or params.pop("divisor_override", None):
            raise mapper.refusal(node, "asks for what a pooling layer does not give "
                                       "(indices or a divisor)")
        mapper.add(node, type_name, params, [mapper.ref(node, node.args[0])])
    return rule


def _dropout(mapper: Mapper, node: Node) -> None:
    p = mapper.value(node, 1, "p", 0.5)
    mapper.add(node, "Dropout", {"p": p}, [mapper.ref(node, node.args[0])])


def _mean(mapper: Mapper, node: Node) -> None:
    dim = mapper.value(node, 1, "dim")
    if dim is None:
        raise mapper.refusal(node, "averages over the whole batch; give the dims to average")
    dim = list(dim) if isinstance(dim, (list, tuple)) else dim
    keepdim = mapper.value(node, 2, "keepdim", False)
    mapper.add(node, "Mean", {"dim": dim, "keepdim": keepdim},
               [mapper.ref(node, node.args[0])])


def _getitem(mapper: Mapper, node: Node) -> None:
    source, index = node.args[0], node.args[1]
    if isinstance(source, Node) and source in mapper.tuples:
        if index != 0:
            raise mapper.refusal(node, f"reads output {index} of {source.target}; LayerLab "
                                       "layers give their main output only")
        mapper.refs[node] = mapper.tuples[source]
        return
    if isinstance(source, Node) and source in mapper.pieces:
        mapper.refs[node] = f"{mapper.pieces[source]}:{index}"  # output port `index`
        return
    _index(mapper, node, source, index if isinstance(index, tuple) else (index,))


def _index(mapper: Mapper, node: Node, source: Any, index: tuple[Any, ...]) -> None:
    """x[:, 0] → Select; x[:, 1:5] → Slice: one entry after the batch's `:` picks."""
    whole = slice(None)
    picks = [(dim, entry) for dim, entry in enumerate(index) if entry != whole]
    if len(picks) != 1 or picks[0][0] == 0 or not isinstance(picks[0][1], (int, slice)):
        raise mapper.refusal(node, "indexes a tensor other than along one dimension after "
                                   "the batch (x[:, 0], x[:, 1:5])")
    dim, entry = picks[0]
    if isinstance(entry, int):
        mapper.add(node, "Select", {"dim": dim, "index": entry}, [mapper.ref(node, source)])
        return
    params = {"dim": dim, "start": entry.start, "end": entry.stop, "step": entry.step or 1}
    mapper.add(node, "Slice", params, [mapper.ref(node, source)])


def _pieces(type_name: str) -> Rule:
    """x.chunk(n, dim), torch.split(x, sizes, dim): one output port per piece."""
    def rule(mapper: Mapper, node: Node) -> None:
        dim = mapper.value(node, 2, "dim", 0)
        pieces = mapper.values[node]
        if type_name == "Chunk":
            params = {"chunks": len(pieces), "dim": dim}
        else:
            params = {"sizes": [int(p.shape[dim]) for p in pieces], "dim": dim}
        mapper.add(node, type_name, params, [mapper.ref(node, node.args[0])])
        mapper.pieces[node] = mapper.refs.pop(node)
    return rule


def _dims(mapper: Mapper, node: Node) -> list[int]:
    """x.permute(0, 2, 3, 1) and torch.permute(x, (0, 2, 3, 1)) alike."""
    rest = [mapper._concrete(a) for a in node.args[1:]] or [node.kwargs.get("dims")]
    return list(rest[0]) if isinstance(rest[0], (list, tuple)) else list(rest)


def _permute(mapper: Mapper, node: Node) -> None:
    mapper.add(node, "Permute", {"dims": _dims(mapper, node)}, [mapper.ref(node, node.args[0])])


def _transpose(mapper: Mapper, node: Node) -> None:
    params = {"dim0": mapper.value(node, 1, "dim0"), "dim1": mapper.value(node, 2, "dim1")}
    mapper.add(node, "Transpose", params, [mapper.ref(node, node.args[0])])


def _expand(mapper: Mapper, node: Node) -> None:
    """A model's tensor expanded over the batch (ViT's class token) is a Parameter node's
    output as it is; a layer's output expanded is an Expand node."""
    source, after = node.args[0], mapper.values[node]
    if isinstance(source, Node) and source.op == "get_attr":
        tensor = mapper.values[source]
        if tensor.dim() == after.dim() and tensor.shape[1:] == after.shape[1:]:
            mapper.alias(node, source)
            return
    mapper.add(node, "Expand", {"sizes": list(after.shape[1:])}, [mapper.ref(node, source)])


def _stochastic_depth(mapper: Mapper, node: Node) -> None:
    """torchvision.ops.stochastic_depth(input, p, mode, training)."""
    params = {"p": mapper.value(node, 1, "p"), "mode": mapper.value(node, 2, "mode", "row")}
    mapper.add(node, "StochasticDepth", params, [mapper.ref(node, node.args[0])])


def _layer_norm(mapper: Mapper, node: Node) -> None:
    """F.layer_norm(x, normalized_shape, weight, bias, eps) with the module's own weight and
    bias (ConvNeXt's LayerNorm2d): a LayerNorm node named after the module holding them."""
    shape = mapper.value(node, 1, "normalized_shape")
    tensors = {name: node.args[i] if len(node.args) > i else node.kwargs.get(name)
               for i, name in ((2, "weight"), (3, "bias"))}
    owners = {str(t.target).rpartition(".")[0] for t in tensors.values()
              if isinstance(t, Node) and t.op == "get_attr"}
    if len(owners) != 1 or any(isinstance(t, Node) and t.op != "get_attr"
                               for t in tensors.values()):
        raise mapper.refusal(node, "normalises with weights that are not one module's own")
    weights = {name: mapper.values[t] for name, t in tensors.items() if t is not None}
    params = {"normalized_dims": len(shape), "eps": mapper.value(node, 4, "eps", 1e-5),
              "elementwise_affine": "weight" in weights, "bias": "bias" in weights}
    mapper.add(node, "LayerNorm", params, [mapper.ref(node, node.args[0])],
               path=owners.pop(), weights=weights)


def _owned(mapper: Mapper, node: Node, slots: tuple[tuple[int, str], ...]
           ) -> tuple[str, dict[str, torch.Tensor]]:
    """The module path and weights of an exported layer op (aten.conv2d(x, weight, bias)):
    its tensor arguments must be one module's own attributes."""
    found = {name: node.args[i] for i, name in slots if len(node.args) > i}
    tensors = {name: arg for name, arg in found.items() if isinstance(arg, Node)}
    owners = {str(arg.target).rpartition(".")[0] for arg in tensors.values()
              if arg.op == "get_attr"}
    if len(owners) != 1 or any(arg.op != "get_attr" for arg in tensors.values()):
        raise mapper.refusal(node, "computes with weights that are not one module's own")
    return owners.pop(), {name: mapper.values[arg] for name, arg in tensors.items()}


def _aten_conv(mapper: Mapper, node: Node) -> None:
    """aten.conv2d(x, weight, bias, stride, padding, dilation, groups)."""
    path, weights = _owned(mapper, node, ((1, "weight"), (2, "bias")))
    n = weights["weight"].dim() - 2
    params = {"out_channels": weights["weight"].shape[0],
              "kernel_size": list(weights["weight"].shape[2:]),
              "stride": list(mapper.value(node, 3, "stride", [1] * n)),
              "padding": _padding(mapper.value(node, 4, "padding", [0] * n)),
              "dilation": list(mapper.value(node, 5, "dilation", [1] * n)),
              "groups": mapper.value(node, 6, "groups", 1), "bias": "bias" in weights}
    mapper.add(node, f"Conv{n}d", params, [mapper.ref(node, node.args[0])], path, weights)


def _padding(value: Any) -> Any:
    return value if isinstance(value, str) else list(value)


def _aten_batch_norm(mapper: Mapper, node: Node) -> None:
    """aten.batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps)."""
    path, weights = _owned(mapper, node, ((1, "weight"), (2, "bias"), (3, "running_mean"),
                                          (4, "running_var")))
    module = mapper.traced.get_submodule(path)
    weights["num_batches_tracked"] = getattr(module, "num_batches_tracked", torch.tensor(0))
    rank = mapper.values[node.args[0]].dim()
    params = {"momentum": mapper.value(node, 6, "momentum", 0.1),
              "eps": mapper.value(node, 7, "eps", 1e-5)}
    mapper.add(node, "BatchNorm2d" if rank == 4 else "BatchNorm1d", params,
               [mapper.ref(node, node.args[0])], path, weights)


def _aten_linear(mapper: Mapper, node: Node) -> None:
    path, weights = _owned(mapper, node, ((1, "weight"), (2, "bias")))
    params = {"out_features": weights["weight"].shape[0], "bias": "bias" in weights}
    mapper.add(node, "Linear", params, [mapper.ref(node, node.args[0])], path, weights)


def _hardtanh(mapper: Mapper, node: Node) -> None:
    if (mapper.value(node, 1, "min_val", -1.0), mapper.value(node, 2, "max_val", 1.0)) != \
            (0.0, 6.0):
        raise mapper.refusal(node, "clips to a range other than [0, 6] (ReLU6)")
    mapper.add(node, "ReLU6", {}, [mapper.ref(node, node.args[0])])


def _select(mapper: Mapper, node: Node) -> None:
    """aten.select(x, dim, index): x[:, index] along dim."""
    index = [slice(None)] * (mapper.value(node, 1, "dim") + 1)
    index[-1] = mapper.value(node, 2, "index")
    _index(mapper, node, node.args[0], tuple(index))


def _slice(mapper: Mapper, node: Node) -> None:
    """aten.slice(x, dim, start, end, step); an end past any size means 'to the end'."""
    dim, end = mapper.value(node, 1, "dim", 0), mapper.value(node, 3, "end")
    end = None if end is not None and end >= 1 << 62 else end
    index: list[Any] = [slice(None)] * (dim + 1)
    index[-1] = slice(mapper.value(node, 2, "start"), end, mapper.value(node, 4, "step", 1))
    _index(mapper, node, node.args[0], tuple(index))


_MAX_POOL = (("kernel_size", None), ("stride", None), ("padding", 0), ("dilation", 1),
             ("ceil_mode", False), ("return_indices", False))
_AVG_POOL = (("kernel_size", None), ("stride", None), ("padding", 0), ("ceil_mode", False),
             ("count_include_pad", True), ("divisor_override", None))

FUNCTIONS: dict[str, Rule] = {
    **{key: _activation(key) for key in _ACTIVATIONS},
    "add": _binary("Add"), "mul": _binary("Multiply"),
    "cat": _cat, "concat": _cat, "concatenate": _cat,
    "flatten": _flatten, "view": _reshape, "reshape": _reshape,
    "contiguous": _alias, "clone": _alias,
    "adaptive_avg_pool2d": _adaptive_avg_pool,
    "max_pool2d": _pool("MaxPool2d", _MAX_POOL), "avg_pool2d": _pool("AvgPool2d", _AVG_POOL),
    "dropout": _dropout, "mean": _mean, "getitem": _getitem,
    "stochastic_depth": _stochastic_depth, "layer_norm": _layer_norm,
    "chunk": _pieces("Chunk"), "split": _pieces("Split"), "permute": _permute,
    "transpose": _transpose, "expand": _expand,
    # an exported program's (aten) ops that the names above do not cover
    "conv1d": _aten_conv, "conv2d": _aten_conv, "batch_norm": _aten_batch_norm,
    "linear": _aten_linear, "hardtanh": _hardtanh, "select": _select, "slice": _slice,
}
