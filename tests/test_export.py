"""Exports reproduce the model: ONNX in onnxruntime, pt2 through torch.export.load, and the
standalone Python file imported where LayerLab cannot be."""

import itertools
import os
import subprocess
import sys
import textwrap

import networkx as nx
import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

import layerlab
from layerlab.cli import main
from layerlab.core.catalogue import CATALOGUE
from layerlab.core.export import ExportError, export, sample_input
from layerlab.core.shapes import analyze
from test_catalogue_extra import extra_graph
from test_plumbing_layers import plumbing_graph

from conftest import EXAMPLES


def chain(g, names):
    for a, b in itertools.pairwise(names):
        g.add_edge(a, b)


def dense_graph():
    g = nx.DiGraph()
    nodes = [("x", "Input", {"shape": [12]}), ("std", "Standardize", {}),
             ("fc", "Linear", {"out_features": 12}),
             ("bn", "BatchNorm1d", {}), ("leaky", "LeakyReLU", {"negative_slope": 0.1}),
             ("sig", "Sigmoid", {}), ("tanh", "Tanh", {}), ("gelu", "GELU", {}),
             ("silu", "SiLU", {}), ("elu", "ELU", {}), ("relu", "ReLU", {}),
             ("drop", "Dropout", {"p": 0.2}), ("ident", "Identity", {}),
             ("ln", "LayerNorm", {}), ("shape", "Reshape", {"shape": [3, 4]}),
             ("flat", "Flatten", {}), ("add", "Add", {}), ("mul", "Multiply", {}),
             ("cat", "Concat", {"dim": 1}), ("head", "Linear", {"out_features": 5}),
             ("soft", "Softmax", {}), ("logsoft", "LogSoftmax", {}),
             ("out", "Concat", {"dim": 1}), ("loss", "MSELoss", {})]
    for node, typ, params in nodes:
        g.add_node(node, type=typ, params=params)
    chain(g, ["x", "std", "fc", "bn", "leaky", "sig", "tanh", "gelu", "silu", "elu", "relu", "drop",
              "ident", "ln", "shape", "flat"])
    g.add_edge("flat", "add", port=0)
    g.add_edge("x", "add", port=1)
    g.add_edge("add", "mul", port=0)
    g.add_edge("fc", "mul", port=1)
    g.add_edge("mul", "cat", port=0)
    g.add_edge("x", "cat", port=1)
    g.add_edge("cat", "head")
    g.add_edge("head", "soft")
    g.add_edge("head", "logsoft")
    g.add_edge("soft", "out", port=0)
    g.add_edge("logsoft", "out", port=1)
    g.add_edge("out", "loss")
    return g


def conv_graph():
    g = nx.DiGraph()
    nodes = [("x", "Input", {"shape": [2, 12, 12]}),
             ("conv", "Conv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1}),
             ("bn", "BatchNorm2d", {}), ("pool", "MaxPool2d", {"kernel_size": 2}),
             ("up", "ConvTranspose2d", {"out_channels": 3, "kernel_size": 2, "stride": 2}),
             ("avg", "AvgPool2d", {"kernel_size": 2}),
             ("adapt", "AdaptiveAvgPool2d", {"output_size": [2, 3]}), ("flat", "Flatten", {}),
             ("rows", "Reshape", {"shape": [2, 9]}),
             ("roll", "Op", {"fn": "torch.roll", "args": [1, -1]}),
             ("conv1d", "Conv1d", {"out_channels": 3, "kernel_size": 3, "padding": 1}),
             ("pool1d", "MaxPool1d", {"kernel_size": 3}), ("flat2", "Flatten", {}),
             ("head", "Linear", {"out_features": 4}), ("loss", "CrossEntropyLoss", {})]
    for node, typ, params in nodes:
        g.add_node(node, type=typ, params=params)
    chain(g, ["x", "conv", "bn", "pool", "up", "avg", "adapt", "flat", "rows"])
    g.add_edge("rows", "roll", port=0)  # an Op node: an allow-listed torch call
    chain(g, ["roll", "conv1d", "pool1d", "flat2", "head", "loss"])
    return g


def sequence_graph():
    g = nx.DiGraph()
    nodes = [("x", "Input", {"shape": [6], "dtype": "int64"}),
             ("emb", "Embedding", {"num_embeddings": 11, "embedding_dim": 8}),
             ("attn", "MultiheadAttention", {"num_heads": 2}), ("res", "Add", {}),
             ("enc", "TransformerEncoderLayer", {"nhead": 2, "dim_feedforward": 16}),
             ("lstm", "LSTM", {"hidden_size": 5, "bidirectional": True}),
             ("gru", "GRU", {"hidden_size": 4, "num_layers": 2}),
             ("mean", "Mean", {"dim": 1}), ("head", "Linear", {"out_features": 3}),
             ("loss", "NLLLoss", {}),
             ("pos", "TokenPositionEmbedding", {"num_embeddings": 11, "embedding_dim": 8,
                                                "max_len": 6}),
             ("causal", "CausalSelfAttention", {"num_heads": 2}),
             ("block", "GPTBlock", {"num_heads": 2, "dim_feedforward": 12})]
    for node, typ, params in nodes:
        g.add_node(node, type=typ, params=params)
    chain(g, ["x", "emb", "attn"])
    g.add_edge("emb", "res", port=0)
    g.add_edge("attn", "res", port=1)
    g.add_edge("pos", "res", port=2)
    chain(g, ["x", "pos"])
    chain(g, ["res", "causal", "block", "enc", "lstm", "gru", "mean", "head", "loss"])
    return g


def bce_graph():
    g = nx.DiGraph()
    for node, typ in (("x", "Input"), ("fc", "Linear"), ("loss", "BCEWithLogitsLoss")):
        g.add_node(node, type=typ, params={"shape": [3]} if typ == "Input" else
                   {"out_features": 1} if typ == "Linear" else {})
    chain(g, ["x", "fc", "loss"])
    return g


def l1_graph():
    g = bce_graph()
    g.nodes["loss"]["type"] = "L1Loss"
    return g


GRAPHS = {"dense": dense_graph, "conv": conv_graph, "sequence": sequence_graph,
          "bce": bce_graph, "l1": l1_graph, "extra": extra_graph,
          "plumbing": plumbing_graph}


def test_the_graphs_cover_every_layer_type():
    covered = {d["type"] for make in GRAPHS.values() for _, d in make().nodes(data=True)}
    assert covered == set(CATALOGUE)


def projects():
    out = {}
    for name, make in GRAPHS.items():
        out[name] = layerlab.Project(graph=make(), name=name)
    for path in sorted(EXAMPLES.glob("*.layerlab.json")):
        out[path.name.split(".")[0]] = layerlab.load_project(path)
    return out


PROJECTS = projects()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every project exported to every format once (with trained-looking random weights)."""
    folder = tmp_path_factory.mktemp("exports")
    made = {}
    for name, project in PROJECTS.items():
        torch.manual_seed(0)
        model = layerlab.build_model(project.graph).eval()
        files = {}
        for fmt, suffix in (("safetensors", ".safetensors"), ("onnx", ".onnx"),
                            ("pt2", ".pt2"), ("python", ".py")):
            files[fmt] = folder / f"{name}{suffix}"
            export(project, model, fmt, files[fmt])
        made[name] = (project, model, files)
    return made


def inputs(project, batch):
    return sample_input(analyze(project.graph), batch, seed=batch + 10)


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_onnx_matches_torch_in_onnxruntime(exported, name):
    project, model, files = exported[name]
    session = onnxruntime.InferenceSession(str(files["onnx"]),
                                           providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = inputs(project, batch)
        (got,) = session.run(None, {"input": x.numpy()})
        np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_pt2_reloads_with_torch_export(exported, name):
    project, model, files = exported[name]
    program = torch.export.load(files["pt2"]).module()
    for batch in (1, 7):
        x = inputs(project, batch)
        torch.testing.assert_close(program(x), model(x), atol=1e-5, rtol=0)


BLOCK_LAYERLAB = "import sys; sys.modules['layerlab'] = None  # LayerLab must not be needed\n"


@pytest.fixture(scope="module")
def python_outputs(exported, tmp_path_factory):
    """Every exported .py run as its own __main__ (weights, x.npy → y.npy) for batches 1
    and 7, all in ONE fresh interpreter where LayerLab cannot be imported: a process per
    run would spend a minute importing torch twenty times."""
    folder = tmp_path_factory.mktemp("python-runs")
    runs = []
    for name, (project, _model, files) in exported.items():
        for batch in (1, 7):
            x = folder / f"{name}-{batch}-x.npy"
            np.save(x, inputs(project, batch).numpy())
            runs.append([str(files["python"]), str(files["safetensors"]), str(x),
                         str(folder / f"{name}-{batch}-y.npy")])
    script = BLOCK_LAYERLAB + textwrap.dedent(f"""
        import runpy
        for script, *argv in {runs!r}:
            sys.argv = ["model", *argv]
            runpy.run_path(script, run_name="__main__")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=folder, check=False)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_python_export_runs_without_layerlab(exported, python_outputs, name):
    project, model, _files = exported[name]
    for batch in (1, 7):
        expected = model(inputs(project, batch)).detach().numpy()
        got = np.load(python_outputs / f"{name}-{batch}-y.npy")
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_python_export_reads_like_hand_written_code(exported):
    source = exported["resnet-block"][2]["python"].read_text()
    assert "class Model(nn.Module):" in source
    assert "self.conv1 = nn.Conv2d(1, out_channels=16, kernel_size=3, padding=1, bias=False)" \
        in source
    assert "add = relu1 + bn3" in source and "return fc" in source
    assert "import layerlab" not in source and "= None" not in source.split("class Model")[1]


def test_python_export_train_lowers_the_loss(exported, tmp_path):
    _project, _model, files = exported["digits-mlp"]
    script = BLOCK_LAYERLAB + textwrap.dedent(f"""
        import importlib.util, torch
        from sklearn.datasets import load_digits
        spec = importlib.util.spec_from_file_location("exported", {str(files["python"])!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.Model()
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16
        y = torch.tensor(digits.target)
        history = module.train(model, x, y, epochs=2)
        print(history)
        assert history[1] < history[0], history
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_export_command_checks_the_weights_fit(tmp_path, capsys, exported):
    _project, model, files = exported["spiral"]
    code = main(["export", str(EXAMPLES / "digits-mlp.layerlab.json"), "--weights",
                 str(files["safetensors"]), "--to", "onnx", "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 1 and "does not fit" in err and "fc1.weight (shape [16, 2]" in err
    assert not (tmp_path / "m.onnx").exists()
    code = main(["export", str(EXAMPLES / "spiral.layerlab.json"), "--weights",
                 str(files["safetensors"]), "--to", "onnx", "-o", str(tmp_path / "m.onnx")])
    out = capsys.readouterr().out
    assert code == 0 and "ONNX opset" in out and "onnxruntime matches torch within" in out
    code = main(["export", str(EXAMPLES / "spiral.layerlab.json"), "--weights",
                 str(files["safetensors"]), "--to", "safetensors", "-o",
                 str(tmp_path / "w.safetensors")])
    assert code == 0
    assert set(load_file(tmp_path / "w.safetensors")) == set(model.state_dict())
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_a_layer_a_format_cannot_express_is_refused_by_name(monkeypatch, tmp_path):
    project = PROJECTS["dense"]
    model = layerlab.build_model(project.graph)
    import layerlab.core.export as ex
    original = ex.export_onnx

    def failing(model, analysis, path):
        if any(isinstance(m, torch.nn.GELU) for m in model.modules()):
            raise RuntimeError("unsupported operator aten::gelu")
        return original(model, analysis, path)

    monkeypatch.setattr(ex, "export_onnx", failing)
    with pytest.raises(ExportError) as info:
        export(project, model, "onnx", tmp_path / "m.onnx")
    assert str(info.value) == ("onnx cannot express node gelu (GELU): unsupported operator "
                               "aten::gelu")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_an_unwritable_place_is_not_blamed_on_the_format(tmp_path, fmt):
    """A disk or folder problem while exporting is an OSError naming the path, not 'onnx
    cannot express the model' (the window shows it as such)."""
    project = PROJECTS["dense"]
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OSError) as info:
        export(project, layerlab.build_model(project.graph), fmt, blocker / f"m.{fmt}")
    assert not isinstance(info.value, ExportError)
    assert str(blocker) in str(info.value)
