"""Per-op rules of the PyTorch importer: which catalogue layer each traced op becomes.

A leaf module whose class is a catalogue type (nn.Conv2d → Conv2d) becomes that layer with
its constructor arguments read back from the module, and its state dict as the weights.
Functions and tensor methods (`torch.cat`, `x.flatten(1)`, `a + b`) go through FUNCTIONS,
keyed by their name. Anything else is refused, naming the op and its source line.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
import torch.fx
from torch import nn

from layerlab.core import ops
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.import_calls import FUNCTIONS
from layerlab.core.import_fx import custom_function_caller, new_layer, place_of
from layerlab.core.importer import INPUT_ID, ImportRefused, Layer

Node = torch.fx.Node
Handler = Callable[["Mapper", Node], None]
# how a bool constructor argument is read back from a module: the tensor exists or not
_PRESENT = {"bias": ("bias", "in_proj_bias"), "affine": ("weight",)}
_OPERATORS = {operator.add: "add", operator.iadd: "add", operator.mul: "mul",
              operator.imul: "mul", operator.getitem: "getitem"}
_TRUSTED = ("torch", "_operator", "torchvision.ops")  # where a function's name can be trusted
_SKIPPED = {"_assert", "size", "dim", "numel", "getattr"}
_SUGGEST = {
    "scalar": "give the constant to a layer (a Linear's bias, a BatchNorm's shift), or "
              "leave it out of the model",
}


def op_name(node: Node) -> str:
    """The op as a person reads it: `torch.fft.rfft`, `Tensor.relu_`, `operator.add`."""
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        return str(node.target)
    target = node.target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    if module.startswith("torch._C._") and name.startswith(module[10:] + "_"):
        return f"torch.{module[10:]}.{name[len(module) - 9:]}"  # torch._C._fft.fft_rfft
    module = {"_operator": "operator", "torch._C._nn": "torch.nn.functional",
              "torch._C._VariableFunctions": "torch"}.get(module, module)
    return f"{module}.{name}" if module else name


def function_key(node: Node) -> str | None:
    """The name FUNCTIONS knows an op by, or None for a function we do not trust by name."""
    if node.op == "call_method":
        return str(node.target)
    target = node.target
    if target in _OPERATORS:
        return _OPERATORS[target]  # type: ignore[index]
    if isinstance(target, torch._ops.OpOverload):  # an exported program's aten.conv2d
        return target.overloadpacket.__name__
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None)
    if name is None or not (module.startswith(_TRUSTED) or module == ""):
        return None
    return name


class Mapper:
    """Walks a traced graph once, turning each op into layers."""

    def __init__(self, traced: torch.fx.GraphModule, values: dict[Node, Any]) -> None:
        self.traced = traced
        self.values = values
        self.layers: list[Layer] = []
        self.refs: dict[Node, str] = {}  # tensor value → the layer (or input) that makes it
        self.tuples: dict[Node, str] = {}  # a module's (output, state) → the layer
        self.taken: set[str] = {INPUT_ID}
        self.called: dict[str, Node] = {}  # module path → its first call (shared weights)
        self.made: dict[tuple[str, tuple[int, ...]], str] = {}  # Parameter nodes made
        self.pieces: dict[Node, str] = {}  # a Split's or Chunk's tuple → the layer

    # ---- walking ---------------------------------------------------------------------
    def map_all(self) -> str:
        output = None
        for node in self.traced.graph.nodes:
            caller = custom_function_caller(node)
            if caller is not None:
                raise ImportRefused(
                    f"{caller} calls a custom torch.autograd.Function, whose hand-written "
                    "backward a graph of layers cannot keep; write its forward with torch "
                    "operations so autograd differentiates it")
            if node.op == "output":
                output = self._output(node)
            else:
                self._map(node)
        assert output is not None
        return output

    def _map(self, node: Node) -> None:
        if node.op == "placeholder":
            self._placeholder(node)
        elif node.op == "get_attr":
            return  # a parameter or buffer read by the op that uses it
        elif not any(isinstance(v, torch.Tensor) for v in _flat(self.values.get(node))):
            return  # sizes, shapes, asserts: the graph computes these itself
        elif node.op == "call_module":
            self._module(node)
        else:
            self._function(node)

    def _placeholder(self, node: Node) -> None:
        if INPUT_ID in self.refs.values():
            if node.args:  # an argument with a default: a constant
                return
            raise ImportRefused(f"the model's forward takes a second input ({node.target}); "
                                "LayerLab graphs have one Input")
        self.refs[node] = INPUT_ID

    def _output(self, node: Node) -> str:
        value = node.args[0]
        if isinstance(value, (tuple, list)) and len(value) == 1:  # an exported program's
            value = value[0]
        if isinstance(value, Node) and value in self.refs:
            return self.refs[value]
        raise ImportRefused("the model returns several values (or not a tensor); LayerLab "
                            "graphs have one output: return only the tensor a loss reads")

    # ---- helpers for the rules -----------------------------------------------------
    def ref(self, node: Node, arg: Any) -> str:
        """The layer id making tensor argument `arg` of `node`."""
        if isinstance(arg, Node) and arg in self.refs:
            return self.refs[arg]
        if isinstance(arg, Node) and arg.op == "get_attr":
            return self.parameter(node, arg)
        raise self.refusal(node, "combines a tensor with a constant", "scalar")

    def parameter(self, node: Node, attr: Node) -> str:
        """The model's own tensor read as an operand (a class token, a positional embedding,
        a layer scale) as a Parameter node, whose output is θ expanded over the batch: a
        leading size 1 that stood for the batch in the original's broadcasting is dropped."""
        tensor = self.values[attr]
        peers = [self.values[a] for a in _flat(node.args) if isinstance(a, Node)
                 and a in self.refs and isinstance(self.values.get(a), torch.Tensor)]
        rank = max((t.dim() for t in peers), default=tensor.dim())
        if tensor.dim() == rank and tensor.dim() > 1 and tensor.shape[0] == 1:
            shape = tuple(tensor.shape[1:])
        elif 0 < tensor.dim() < rank:
            shape = tuple(tensor.shape)
        else:
            raise self.refusal(node, f"broadcasts the model's tensor {attr.target} "
                                     f"{list(tensor.shape)} over the batch in a way a "
                                     "Parameter node (θ for every sample) cannot")
        key = (str(attr.target), shape)
        if key not in self.made:
            layer = new_layer(self.taken, node, "Parameter", {"shape": list(shape)}, [],
                              path=str(attr.target),
                              weights={"param": tensor.detach().reshape(shape)})
            self.layers.append(layer)
            self.made[key] = layer.id
        return self.made[key]

    def value(self, node: Node, index: int, name: str, default: Any = None) -> Any:
        """Argument `index` (or keyword `name`) of a call, as the traced run saw it."""
        arg = node.args[index] if len(node.args) > index else node.kwargs.get(name, default)
        return self._concrete(arg)

    def _concrete(self, arg: Any) -> Any:
        if isinstance(arg, Node):
            return self.values[arg]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self._concrete(a) for a in arg)
        return arg

    def add(self, node: Node, type_name: str, params: dict[str, Any], inputs: list[str],
            path: str | None = None, weights: dict[str, torch.Tensor] | None = None) -> Layer:
        if type_name not in CATALOGUE:
            raise self.refusal(node, f"needs a {type_name} layer, which this LayerLab's "
                                     "catalogue does not have")
        layer = new_layer(self.taken, node, type_name, params, inputs, path, weights)
        self.layers.append(layer)
        self.refs[node] = layer.id
        return layer

    def alias(self, node: Node, source: Any) -> None:
        self.refs[node] = self.ref(node, source)

    def refusal(self, node: Node, what: str, suggest: str | None = None) -> ImportRefused:
        place = place_of(node)
        at = f" at {place}" if place else ""
        hint = f"; {_SUGGEST[suggest]}" if suggest in _SUGGEST else ""
        return ImportRefused(f"{op_name(node)}{at} {what}{hint}")

    # ---- modules and functions -------------------------------------------------------
    def _module(self, node: Node) -> None:
        path = str(node.target)
        module = self.traced.get_submodule(path)
        type_name = type(module).__name__
        spec = CATALOGUE.get(type_name)
        if spec is None or not type(module).__module__.startswith("torch.nn") or \
                spec.build is None:
            raise self.refusal(node, f"is a {type(module).__name__}, which LayerLab's "
                                     "catalogue does not have")
        if path in self.called and any(True for _ in module.parameters()):
            raise self.refusal(node, f"is called a second time (first at "
                                     f"{place_of(self.called[path])}): a layer's weights "
                                     "cannot be shared in a graph of layers")
        self.called.setdefault(path, node)
        self._check_inplace(node, getattr(module, "inplace", False))
        rule = MODULES.get(type_name, _module_params)
        params, inputs = rule(self, node, module)
        self.add(node, type_name, params, inputs, path=path, weights=module.state_dict())
        if isinstance(self.values[node], tuple):
            self.tuples[node] = self.refs.pop(node)

    def _function(self, node: Node) -> None:
        key = function_key(node)
        inplace = key is not None and key.endswith("_") and not key.startswith("_")
        if inplace:
            key = key[:-1]
        self._check_inplace(node, inplace or bool(node.kwargs.get("inplace")))
        if key in _SKIPPED:
            return
        rule = FUNCTIONS.get(key) if key is not None else None
        try:
            if rule is None:
                raise self.refusal(node, "is neither in LayerLab's catalogue of layers nor on "
                                         "its list of allowed operations")
            rule(self, node)
        except ImportRefused:
            if not self._op_node(node):
                raise

    def _op_node(self, node: Node) -> bool:
        """An allow-listed call the catalogue has no layer for, as an Op node (its sizes
        as the traced run computed them); False when the call is not allowed."""
        if "Op" not in CATALOGUE or ops.allowed_name(node.target) is None:
            return False
        stand_in = SimpleNamespace(op=node.op, target=node.target,
                                   args=self._literal(node.args),
                                   kwargs=self._literal(node.kwargs))
        try:
            params, sources = ops.from_fx(stand_in)  # type: ignore[arg-type]
        except ops.OpError as exc:
            raise self.refusal(node, f"cannot be an Op node: {exc}") from None
        self.add(node, "Op", params, [self.ref(node, s) for s in sources])
        return True

    def _literal(self, value: Any) -> Any:
        """Arguments with every value that is not a layer's tensor replaced by what the
        traced run computed (sizes, shapes)."""
        if isinstance(value, Node):
            return value if value in self.refs or value.op == "get_attr" else \
                self.values[value]
        if isinstance(value, (list, tuple)):
            return type(value)(self._literal(v) for v in value)
        if isinstance(value, dict):
            return {k: self._literal(v) for k, v in value.items()}
        return value

    def _check_inplace(self, node: Node, inplace: bool) -> None:
        first = node.args[0] if node.args else None
        if inplace and isinstance(first, Node) and self.refs.get(first) == INPUT_ID:
            raise self.refusal(node, "changes the model's input in place, which would change "
                                     "the caller's tensor; use the out-of-place form "
                                     "(x = x.relu() for x.relu_())")


def _module_params(mapper: Mapper, node: Node, module: nn.Module
                   ) -> tuple[dict[str, Any], list[str]]:
    """Constructor arguments read back from the module's attributes, by their torch names."""
    spec = CATALOGUE[type(module).__name__]
    params: dict[str, Any] = {}
    for param in spec.params:
        if param.name == "init":
            continue
        if param.name in _PRESENT and not isinstance(getattr(module, param.name, None),
                                                       (bool, int, float)):
            params[param.name] = any(getattr(module, a, None) is not None
                                     for a in _PRESENT[param.name])
        elif hasattr(module, param.name):
            params[param.name] = _plain(getattr(module, param.name))
    tensors = [a for a in node.args if isinstance(a, Node)]
    return params, [mapper.ref(node, a) for a in tensors]


def _flat(values: Any) -> list[Any]:
    """Arguments with lists and tuples opened (torch.cat's list of tensors)."""
    if isinstance(values, (list, tuple)):
        return [v for value in values for v in _flat(value)]
    return [values]


def _plain(value: Any) -> Any:
    """A constructor argument as the project file holds it (tuples as lists)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _layer_norm(mapper: Mapper, node: Node, module: nn.Module
                ) -> tuple[dict[str, Any], list[str]]:
    assert isinstance(module, nn.LayerNorm)
    params, inputs = _module_params(mapper, node, module)
    params["normalized_dims"] = len(module.normalized_shape)
    return params, inputs


def _attention(mapper: Mapper, node: Node, module: nn.Module
               ) -> tuple[dict[str, Any], list[str]]:
    assert isinstance(module, nn.MultiheadAttention)
    query = node.args[0] if node.args else node.kwargs.get("query")
    others = list(node.args[1:3]) + [node.kwargs.get(k) for k in ("key", "value")
                                     if k in node.kwargs]
    if not module.batch_first or any(o is not query for o in others) or \
            module.bias_k is not None or not module._qkv_same_embed_dim:
        raise mapper.refusal(node, "is not plain batch-first self-attention (query, key and "
                                   "value the same tensor), the one LayerLab's "
                                   "MultiheadAttention layer computes")
    params = {"num_heads": module.num_heads, "dropout": module.dropout,
              "bias": module.in_proj_bias is not None}
    return params, [mapper.ref(node, query)]


MODULES: dict[str, Callable[[Mapper, Node, Any], tuple[dict[str, Any], list[str]]]] = {
    "LayerNorm": _layer_norm,
    "MultiheadAttention": _attention,
}
