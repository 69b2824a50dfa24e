"""`layerlab import` from the command line: a file:Class source with --args, the weights
file it writes, and the refusals, each one sentence naming the op and its source line."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from layerlab.cli import main
from layerlab.core.compiler import build_model
from layerlab.core.project import load_project

NET = '''
import torch
from torch import nn


class Boom(nn.Module):
    def __init__(self):
        raise RuntimeError("kaboom in init")


class Net(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.body(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.head(x)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class Clamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return Clamp.apply(self.fc(x))


class Fourier(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.fft.rfft(self.fc(x)).abs()


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        x.relu_()
        return self.fc(x)


class ShapeCheck(nn.Module):
    """fx cannot trace a branch on a size; torch.export can (sizes are fixed there)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.shape[1] != 4:
            raise ValueError("four features expected")
        return torch.relu(self.fc(x))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(x))
'''


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(textwrap.dedent(NET))
    return path


def _line(path, text):
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_file_class_with_args_imports_with_its_weights(model_file, tmp_path, capsys):
    out, weights = tmp_path / "net.layerlab.json", tmp_path / "net.safetensors"
    code = main(["import", f"{model_file}:Net", "--args", '{"num_classes": 10}',
                 "--input-shape", "3,16,16", "-o", str(out), "--weights-out", str(weights)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "equal within 1e-05" in printed and "largest difference" in printed
    project = load_project(out)
    graph = project.graph
    assert graph.nodes["head"]["params"]["out_features"] == 10
    assert graph.nodes["body_0"]["type"] == "Conv2d"
    assert graph.nodes["x"]["params"]["shape"] == [3, 16, 16]
    assert [d["name"] for d in project.groups.values()] == ["body"]
    model = build_model(graph)
    model.load_state_dict(load_file(weights))
    import importlib.util

    spec = importlib.util.spec_from_file_location("imported_net", model_file)
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    torch.manual_seed(3)
    original = source.Net(num_classes=10).eval()
    original.load_state_dict({k.replace("body_", "body."): v
                              for k, v in load_file(weights).items()})
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model.eval()(x), original(x))


@pytest.mark.parametrize(("name", "marker", "words"), [
    ("Branchy", "if x.sum() > 0", ["branches or loops on a tensor's value", "torch.where"]),
    ("Custom", "Clamp.apply", ["custom torch.autograd.Function"]),
    ("Fourier", "torch.fft.rfft", ["torch.fft.rfft", "neither in LayerLab's catalogue"]),
    ("InPlace", "x.relu_()", ["Tensor.relu_", "in place", "x = x.relu()"]),
    ("Shared", "self.fc(self.fc(x))", ["fc", "second time", "shared"]),
])
def test_refusals_name_the_op_and_its_line(model_file, tmp_path, capsys, name, marker, words):
    out = tmp_path / "out.layerlab.json"
    code = main(["import", f"{model_file}:{name}", "--input-shape", "4", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"model.py:{_line(model_file, marker)}" in err
    for word in words:
        assert word in err
    assert not out.exists()


@pytest.mark.parametrize(("argv", "words"), [
    (["nowhere.py:Net"], ["nowhere.py", "no such file"]),
    (["{model}:Missing"], ["no class or function named Missing"]),
    (["{model}"], ["file.py:Name"]),
    (["{model}:Net", "--args", "[1]"], ["must be a JSON object", "--args"]),
    (["{model}:Net", "--input-shape", "3,x"], ["--input-shape"]),
    (["{model}:Boom"], ["building Boom", "RuntimeError: kaboom in init"]),
    (["{model}:Net", "--args", '{"num_classes": -1}'], ["building Net", "negative"]),
    (["{model}:Net", "--input-shape", "1,8,8"], ["cannot run on the input shape [1, 8, 8]",
                                                  "--input-shape"]),
])
def test_bad_sources_are_refused_in_one_sentence(model_file, tmp_path, capsys, argv, words):
    out = tmp_path / "o.layerlab.json"
    argv = [a.replace("{model}", str(model_file)) for a in argv]
    code = main(["import", *argv, "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and len(err.splitlines()) == 1
    for word in words:
        assert word in err
    assert not out.exists()


def test_existing_output_is_kept_without_force(model_file, tmp_path, capsys):
    out = tmp_path / "net.layerlab.json"
    out.write_text("{}")
    assert main(["import", f"{model_file}:Net", "--input-shape", "3,8,8", "-o", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["import", f"{model_file}:Net", "--input-shape", "3,8,8", "-o", str(out),
                 "--force"]) == 0
    assert json.loads(out.read_text())["format"] == "layerlab-project"


def test_a_model_fx_cannot_trace_is_exported_with_torch_export(model_file, tmp_path, capsys):
    out, weights = tmp_path / "s.layerlab.json", tmp_path / "s.safetensors"
    assert main(["import", f"{model_file}:ShapeCheck", "--input-shape", "4", "-o", str(out),
                 "--weights-out", str(weights)]) == 0
    assert "equal within 1e-05" in capsys.readouterr().out
    graph = load_project(out).graph
    assert [graph.nodes[n]["type"] for n in ("x", "fc", "relu")] == ["Input", "Linear", "ReLU"]
    assert set(load_file(weights)) == {"fc.weight", "fc.bias"}


def test_pt2_program_imports_with_its_weights(tmp_path, capsys):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.ReLU6(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5)).eval()
    model[1].running_mean.uniform_(-1, 1)
    program = torch.export.export(model, (torch.randn(2, 3, 8, 8),))
    path = tmp_path / "model.pt2"
    torch.export.save(program, str(path))
    out, weights = tmp_path / "p.layerlab.json", tmp_path / "p.safetensors"
    assert main(["import", str(path), "-o", str(out), "--weights-out", str(weights)]) == 0
    assert "random batches of 2" in capsys.readouterr().out  # the program's own batch
    graph = load_project(out).graph
    assert [graph.nodes[n]["type"] for n in ("m0", "m1", "m2", "m3", "m4")] == \
        ["Conv2d", "BatchNorm2d", "ReLU6", "Flatten", "Linear"]
    compiled = build_model(graph).eval()
    compiled.load_state_dict(load_file(weights))
    x = torch.randn(7, 3, 8, 8)
    torch.testing.assert_close(compiled(x), model(x))
