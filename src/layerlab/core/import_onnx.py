"""The ONNX front end of `layerlab import`: ONNX nodes straight onto catalogue layers.

The weights are the file's initializers; node ids come from the exporter's node names,
which hold the module path (`/layer1/layer1.0/conv1/Conv` → `layer1_0_conv1`). The
original for the comparison is the file itself, run in onnxruntime. Only constant shapes
are read (a Reshape whose shape the graph computes at run time is refused, naming it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerlab.core.importer import INPUT_ID, Imported, ImportRefused, Layer, node_id

Rule = Callable[["_Reader", Any], None]
_ACTIVATIONS = {"Relu": "ReLU", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "HardSwish": "Hardswish",
                "Elu": "ELU", "LeakyRelu": "LeakyReLU", "Softmax": "Softmax"}


def read(path: Path, input_shape: Sequence[int] | None) -> Imported:
    try:
        import onnx
        import onnx.numpy_helper
        import onnxruntime
    except ImportError:
        raise ImportRefused("importing ONNX needs the onnx and onnxruntime packages: pip "
                            "install onnx onnxruntime") from None
    if not path.is_file():
        raise ImportRefused(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ImportRefused(f"{path}: not an ONNX file ({exc})") from None
    reader = _Reader(model, path)
    shape = tuple(input_shape) if input_shape else reader.input_shape()
    reader.map_all()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = model.graph.input[0].name

    def original(x: torch.Tensor) -> torch.Tensor:
        (out, *_) = session.run(None, {name: x.numpy()})
        return torch.from_numpy(np.asarray(out))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value  # 0: any batch
    return Imported(reader.layers, shape, reader.output(), original, path.stem,
                    batch_size=batch or 3)


class _Reader:
    def __init__(self, model: Any, path: Path) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.path = path
        self.constants: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.refs: dict[str, str] = {}
        self.layers: list[Layer] = []
        self.taken: set[str] = {INPUT_ID}
        inputs = [i for i in self.graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            raise ImportRefused(f"{path.name} has {len(inputs)} inputs; LayerLab graphs "
                                "have one Input")
        self.refs[inputs[0].name] = INPUT_ID

    def input_shape(self) -> tuple[int, ...]:
        dims = self.graph.input[0].type.tensor_type.shape.dim
        shape = tuple(d.dim_value for d in dims[1:])
        if not shape or any(d <= 0 for d in shape):
            raise ImportRefused(f"{self.path.name} does not fix its input's shape; give "
                                "--input-shape")
        return shape

    def output(self) -> str:
        name = self.graph.output[0].name
        if len(self.graph.output) != 1 or name not in self.refs:
            raise ImportRefused(f"{self.path.name} has several outputs; LayerLab graphs "
                                "have one")
        return self.refs[name]

    def map_all(self) -> None:
        for node in self.graph.node:
            if node.op_type == "Constant":
                from onnx import numpy_helper

                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
                continue
            rule = RULES.get(node.op_type)
            if rule is None:
                raise self.refusal(node, "has no catalogue layer LayerLab maps it to")
            rule(self, node)

    # ---- helpers ---------------------------------------------------------------------
    def refusal(self, node: Any, what: str) -> ImportRefused:
        return ImportRefused(f"ONNX node {node.name or node.op_type} ({node.op_type}) in "
                             f"{self.path.name} {what}")

    def attr(self, node: Any, name: str, default: Any = None) -> Any:
        from onnx import helper

        for attribute in node.attribute:
            if attribute.name == name:
                value = helper.get_attribute_value(attribute)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def tensor(self, node: Any, index: int) -> torch.Tensor | None:
        if len(node.input) <= index or not node.input[index]:
            return None
        if node.input[index] not in self.constants:
            raise self.refusal(node, f"takes input {index} from the graph, where LayerLab "
                                     "needs a constant")
        return torch.from_numpy(np.array(self.constants[node.input[index]]))

    def ref(self, node: Any, index: int = 0) -> str:
        name = node.input[index]
        if name not in self.refs:
            raise self.refusal(node, f"reads {name}, which is not a layer's output")
        return self.refs[name]

    def add(self, node: Any, type_name: str, params: dict[str, Any], inputs: list[str],
            weights: dict[str, torch.Tensor] | None = None) -> None:
        path, scope = _path(node)
        layer = Layer(node_id(path, self.taken), type_name, params, inputs, scope,
                      weights or {}, node.name)
        self.layers.append(layer)
        self.refs[node.output[0]] = layer.id


def _path(node: Any) -> tuple[str, tuple[str, ...]]:
    """The module path in an exporter's node name: `/layer1/layer1.0/conv1/Conv` →
    `layer1.0.conv1` (a Sequential's children are named `downsample.0` under `downsample`);
    an op of the module itself gets the op's name (`layer1.0.add`)."""
    parts = [p for p in node.name.split("/") if p]
    op = node.op_type.lower()
    base, path, last = "", "", None
    for part in parts[:-1]:
        if last is not None and part.startswith(last + "."):
            path = f"{base}.{part}" if base else part
        else:
            base, path = path, f"{path}.{part}" if path else part
        last = part
    leaf = path.rsplit(".", 1)[-1]
    if not path or (op not in leaf.lower() and
                    node.op_type not in ("Conv", "Gemm", "BatchNormalization")):
        path = f"{path}.{op}" if path else op
    return path, tuple(path.split(".")[:-1])


def _conv(reader: _Reader, node: Any) -> None:
    weight, bias = reader.tensor(node, 1), reader.tensor(node, 2)
    assert weight is not None
    n = weight.dim() - 2
    pads = list(reader.attr(node, "pads", [0] * 2 * n))
    if pads[:n] != pads[n:] or reader.attr(node, "auto_pad", "NOTSET") != "NOTSET":
        raise reader.refusal(node, "pads its sides unequally, which Conv layers cannot")
    params = {"out_channels": weight.shape[0], "kernel_size": list(weight.shape[2:]),
              "stride": list(reader.attr(node, "strides", [1] * n)), "padding": pads[:n],
              "dilation": list(reader.attr(node, "dilations", [1] * n)),
              "groups": reader.attr(node, "group", 1), "bias": bias is not None}
    weights = {"weight": weight, **({"bias": bias} if bias is not None else {})}
    reader.add(node, f"Conv{n}d", params, [reader.ref(node)], weights)


def _batch_norm(reader: _Reader, node: Any) -> None:
    names = ("weight", "bias", "running_mean", "running_var")
    weights = {name: reader.tensor(node, i + 1) for i, name in enumerate(names)}
    weights["num_batches_tracked"] = torch.tensor(0)
    params = {"eps": reader.attr(node, "epsilon", 1e-5),
              "momentum": round(1 - reader.attr(node, "momentum", 0.9), 6)}
    reader.add(node, "BatchNorm2d", params, [reader.ref(node)], weights)  # type: ignore[arg-type]


def _gemm(reader: _Reader, node: Any) -> None:
    weight, bias = reader.tensor(node, 1), reader.tensor(node, 2)
    assert weight is not None
    if reader.attr(node, "transA", 0) or reader.attr(node, "alpha", 1.0) != 1.0 or \
            reader.attr(node, "beta", 1.0) != 1.0:
        raise reader.refusal(node, "scales or transposes its input, which Linear does not")
    if not reader.attr(node, "transB", 0):
        weight = weight.T.contiguous()
    params = {"out_features": weight.shape[0], "bias": bias is not None}
    weights = {"weight": weight, **({"bias": bias.reshape(-1)} if bias is not None else {})}
    reader.add(node, "Linear", params, [reader.ref(node)], weights)


def _pool(type_name: str) -> Rule:
    def rule(reader: _Reader, node: Any) -> None:
        kernel = list(reader.attr(node, "kernel_shape"))
        pads = list(reader.attr(node, "pads", [0] * 2 * len(kernel)))
        if pads[:len(kernel)] != pads[len(kernel):]:
            raise reader.refusal(node, "pads its sides unequally, which pooling layers cannot")
        params = {"kernel_size": kernel, "stride": list(reader.attr(node, "strides", kernel)),
                  "padding": pads[:len(kernel)],
                  "ceil_mode": bool(reader.attr(node, "ceil_mode", 0))}
        if type_name == "AvgPool2d":
            params["count_include_pad"] = bool(reader.attr(node, "count_include_pad", 0))
        else:
            params["dilation"] = list(reader.attr(node, "dilations", [1] * len(kernel)))
        reader.add(node, type_name, params, [reader.ref(node)])
    return rule


def _activation(reader: _Reader, node: Any) -> None:
    type_name = _ACTIVATIONS[node.op_type]
    params: dict[str, Any] = {}
    if node.op_type == "LeakyRelu":
        params["negative_slope"] = reader.attr(node, "alpha", 0.01)
    elif node.op_type == "Elu":
        params["alpha"] = reader.attr(node, "alpha", 1.0)
    elif node.op_type == "Softmax":
        params["dim"] = reader.attr(node, "axis", -1)
    reader.add(node, type_name, params, [reader.ref(node)])


def _hard_sigmoid(reader: _Reader, node: Any) -> None:
    if abs(reader.attr(node, "alpha", 0.2) - 1 / 6) > 1e-6 or reader.attr(node, "beta", 0.5) != 0.5:
        raise reader.refusal(node, "is not torch's Hardsigmoid (alpha 1/6, beta 0.5)")
    reader.add(node, "Hardsigmoid", {}, [reader.ref(node)])


def _clip(reader: _Reader, node: Any) -> None:
    low, high = reader.tensor(node, 1), reader.tensor(node, 2)
    if low is None or high is None or float(low) != 0.0 or float(high) != 6.0:
        raise reader.refusal(node, "clips to a range other than [0, 6] (ReLU6)")
    reader.add(node, "ReLU6", {}, [reader.ref(node)])


def _binary(type_name: str) -> Rule:
    def rule(reader: _Reader, node: Any) -> None:
        reader.add(node, type_name, {}, [reader.ref(node, 0), reader.ref(node, 1)])
    return rule


def _flatten(reader: _Reader, node: Any) -> None:
    if reader.attr(node, "axis", 1) != 1:
        raise reader.refusal(node, "flattens from an axis other than 1")
    reader.add(node, "Flatten", {"start_dim": 1, "end_dim": -1}, [reader.ref(node)])


def _reshape(reader: _Reader, node: Any) -> None:
    shape = reader.tensor(node, 1)
    assert shape is not None
    if shape[0] not in (-1, 0):
        raise reader.refusal(node, "fixes the batch size in its shape")
    reader.add(node, "Reshape", {"shape": [int(d) for d in shape[1:]]}, [reader.ref(node)])


def _global_pool(reader: _Reader, node: Any) -> None:
    reader.add(node, "AdaptiveAvgPool2d", {"output_size": 1}, [reader.ref(node)])


def _concat(reader: _Reader, node: Any) -> None:
    if len(node.input) == 1:  # DenseNet's first layer joins its one input
        _alias(reader, node)
        return
    reader.add(node, "Concat", {"dim": reader.attr(node, "axis")},
               [reader.ref(node, i) for i in range(len(node.input))])


def _alias(reader: _Reader, node: Any) -> None:
    reader.refs[node.output[0]] = reader.ref(node)


def _reduce_mean(reader: _Reader, node: Any) -> None:
    axes = reader.attr(node, "axes")
    if axes is None:
        tensor = reader.tensor(node, 1)
        axes = [int(a) for a in tensor] if tensor is not None else None
    if not axes:
        raise reader.refusal(node, "averages over every dimension, the batch included")
    reader.add(node, "Mean", {"dim": list(axes), "keepdim": bool(reader.attr(
        node, "keepdims", 1))}, [reader.ref(node)])


def _transpose(reader: _Reader, node: Any) -> None:
    perm = list(reader.attr(node, "perm"))
    if perm[0] != 0:
        raise reader.refusal(node, "moves the batch dimension")
    reader.add(node, "Permute", {"dims": perm}, [reader.ref(node)])


def _split(reader: _Reader, node: Any) -> None:
    """One output port per piece: the file's constant sizes, or equal pieces."""
    sizes, dim = reader.tensor(node, 1), reader.attr(node, "axis", 0)
    if sizes is not None:
        reader.add(node, "Split", {"sizes": [int(v) for v in sizes], "dim": dim},
                   [reader.ref(node)])
    else:  # opset 18: num_outputs equal pieces, the last smaller, as torch.chunk cuts
        reader.add(node, "Chunk", {"chunks": len(node.output), "dim": dim},
                   [reader.ref(node)])
    layer = reader.refs.pop(node.output[0])
    for port, name in enumerate(node.output):
        reader.refs[name] = f"{layer}:{port}"


def _layer_norm(reader: _Reader, node: Any) -> None:
    weight, bias = reader.tensor(node, 1), reader.tensor(node, 2)
    axis = reader.attr(node, "axis", -1)
    if axis >= 0:
        raise reader.refusal(node, "gives its axis from the front; LayerLab counts the "
                                   "normalised dimensions from the back")
    params = {"normalized_dims": -axis, "eps": reader.attr(node, "epsilon", 1e-5),
              "elementwise_affine": weight is not None, "bias": bias is not None}
    weights = {k: v for k, v in (("weight", weight), ("bias", bias)) if v is not None}
    reader.add(node, "LayerNorm", params, [reader.ref(node)], weights)


RULES: dict[str, Rule] = {
    "Conv": _conv, "BatchNormalization": _batch_norm, "Gemm": _gemm,
    "MaxPool": _pool("MaxPool2d"), "AveragePool": _pool("AvgPool2d"),
    "GlobalAveragePool": _global_pool, "Flatten": _flatten, "Reshape": _reshape,
    **{op: _activation for op in _ACTIVATIONS}, "HardSigmoid": _hard_sigmoid, "Clip": _clip,
    "Add": _binary("Add"), "Mul": _binary("Multiply"), "Concat": _concat,
    "Identity": _alias, "Dropout": _alias, "ReduceMean": _reduce_mean,
    "Transpose": _transpose, "Split": _split, "LayerNormalization": _layer_norm,
}
