"""The ONNX path of `layerlab import`: a file torch exported from a torchvision model comes
back as catalogue layers named by module path, with the file's initializers as weights, and
computes what onnxruntime computes from the same file."""

from __future__ import annotations

import warnings

import onnxruntime
import torch
from safetensors.torch import load_file

from layerlab.cli import main
from layerlab.core.compiler import build_model
from layerlab.core.project import load_project
from torchvision_models import FAMILIES, randomized


def test_onnx_file_of_mobilenet_v3_imports_and_equals_onnxruntime(tmp_path, capsys):
    build, shape = FAMILIES["mobilenet_v3"]
    original = randomized(build())
    onnx_path = tmp_path / "mobilenet.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter: fast, and deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(original, (torch.randn(2, *shape),), str(onnx_path), dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    out, weights = tmp_path / "m.layerlab.json", tmp_path / "m.safetensors"
    assert main(["import", str(onnx_path), "-o", str(out), "--weights-out", str(weights)]) == 0
    assert "equal within 1e-05" in capsys.readouterr().out
    project = load_project(out)
    graph = project.graph
    assert graph.nodes["x"]["params"]["shape"] == list(shape)
    assert graph.nodes["features_0_0"]["type"] == "Conv2d"  # batch norm folded in by torch
    assert graph.nodes["classifier_3"]["params"]["out_features"] == 10
    assert {d["name"] for d in project.groups.values()} == {"features", "classifier"}
    types = {data["type"] for _, data in graph.nodes(data=True)}
    assert {"Hardswish", "Hardsigmoid", "Multiply", "AdaptiveAvgPool2d", "Linear"} <= types
    model = build_model(graph).eval()
    model.load_state_dict(load_file(weights))
    x = torch.randn(5, *shape)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        got = model(x)
    assert (torch.from_numpy(want) - got).abs().max() <= 1e-5 * abs(want).max()
    with torch.no_grad():
        assert (original(x) - got).abs().max() <= 1e-5 * abs(want).max()


class _Plumbing(torch.nn.Module):
    """Split, transpose (ShuffleNet's channel shuffle), channels-last LayerNorm (ConvNeXt).
    (torch's TorchScript exporter writes x.chunk as shape arithmetic, which is not read.)"""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 1)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x):
        a, b = self.conv(x).split([4, 4], dim=1)
        x = torch.cat((a, b * torch.sigmoid(a)), dim=1)
        x = self.norm(x.permute(0, 2, 3, 1))
        return torch.flatten(x.transpose(1, 2), 1)


def test_onnx_split_transpose_and_layer_norm_import(tmp_path):
    from layerlab.core.importer import import_model

    torch.manual_seed(0)
    model = _Plumbing().eval()
    path = tmp_path / "plumbing.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 4, 3, 5),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["output"])
    result = import_model(str(path))  # a batch fixed at 2: compared at 2, imported for any
    assert result.comparison.batch_size == 2 and result.comparison.equal
    types = {data["type"] for _, data in result.project.graph.nodes(data=True)}
    assert {"Split", "Permute", "LayerNorm", "Multiply", "Concat"} <= types
    x = torch.randn(6, 4, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-5)
