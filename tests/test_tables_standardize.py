"""Standardize: statistics from the training rows only, kept when weights are loaded, and
carried by every export (raw features in, the same predictions out)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from layerlab.core.compiler import build_model
from layerlab.core.datasets import split_indices
from layerlab.core.export import export
from layerlab.core.project import Project
from layerlab.core.standardize import adapt, statistics
from layerlab.core.trainer import Trainer
from layerlab.core.weights import load_weights, save_weights

from helpers import chain_graph


def project_on(path, split: float = 0.25) -> Project:
    graph = chain_graph([3], ("Standardize", {}), ("Linear", {"out_features": 8}),
                        ("ReLU", {}), ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    project = Project(graph=graph)
    project.training.update({"dataset": {"name": "csv", "options": {"path": str(path)},
                                         "validation_split": split},
                             "epochs": 2, "batch_size": 8})
    return project


@pytest.fixture
def skewed(tmp_path):
    """40 rows; the validation rows hold values 1000 times larger, so a mean taken over
    them as well cannot pass for the training rows' mean."""
    train, val = split_indices(40, 0.25, seed=0)
    rows = np.random.default_rng(0).normal(2.0, 3.0, (40, 3))
    rows[val.numpy()] *= 1000
    text = "a,b,c,label\n" + "".join(f"{r[0]},{r[1]},{r[2]},{i % 2}\n"
                                     for i, r in enumerate(rows))
    path = tmp_path / "skewed.csv"
    path.write_text(text)
    return path, rows, train.numpy()


def test_statistics_come_from_the_training_rows_only(skewed):
    path, rows, train = skewed
    trainer = Trainer(project_on(path))
    assert statistics(trainer.model)["n0"].count == 0
    trainer.train_one_batch()
    stats = statistics(trainer.model)["n0"]
    expected = rows[train]
    np.testing.assert_allclose(stats.mean, expected.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, expected.std(0), rtol=1e-5)
    assert stats.count == len(train)
    scaled = trainer.model.n0(torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(scaled.mean(0), torch.zeros(3), atol=1e-4, rtol=0)


def test_loaded_statistics_are_kept_and_adapt_to_data_renews_them(skewed, tmp_path):
    path, rows, train = skewed
    first = Trainer(project_on(path))
    first.run()
    save_weights(first.model, tmp_path / "w.safetensors")
    second = Trainer(project_on(path))
    load_weights(second.model, str(tmp_path / "w.safetensors"))
    second.model.n0.mean.add_(5.0)  # as if the weights had been adapted elsewhere
    kept = statistics(second.model)["n0"].mean
    second.train_one_batch()
    assert statistics(second.model)["n0"].mean == kept  # continuing keeps the scale
    assert adapt(second.model, second.project.graph, second.x_train, only_fresh=False) == ["n0"]
    np.testing.assert_allclose(statistics(second.model)["n0"].mean, rows[train].mean(0),
                               rtol=1e-5)


def test_a_standardize_after_another_sees_the_first_ones_output():
    graph = chain_graph([2], ("Standardize", {}), ("Linear", {"out_features": 2}),
                        ("Standardize", {}))
    torch.manual_seed(0)
    model = build_model(graph)
    x = torch.randn(50, 2) * 4 + 7
    assert adapt(model, graph, x) == ["n0", "n2"]
    out = model(x)
    torch.testing.assert_close(out.mean(0), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(0, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)


def test_a_constant_feature_is_left_unscaled():
    graph = chain_graph([2], ("Standardize", {}))
    model = build_model(graph)
    x = torch.stack([torch.full((10,), 3.0), torch.arange(10.0)], 1)
    adapt(model, graph, x)
    assert model.n0.std[0].item() == 1.0 and torch.isfinite(model(x)).all()


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "python"])
def test_exports_carry_the_scaling(skewed, tmp_path, fmt):
    path, rows, _ = skewed
    project = project_on(path)
    trainer = Trainer(project)
    trainer.run()
    model = trainer.model.eval()
    raw = torch.tensor(rows[:7], dtype=torch.float32)  # raw features, as the file has them
    with torch.no_grad():
        expected = model(raw)
    out = tmp_path / f"model.{'py' if fmt == 'python' else fmt}"
    export(project, model, fmt, out)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"input": raw.numpy()})[0])
    elif fmt == "pt2":
        got = torch.export.load(out).module()(raw)
    else:
        save_weights(model, tmp_path / "w.safetensors")
        spec = importlib.util.spec_from_file_location("exported_model", out)
        module = importlib.util.module_from_spec(spec)
        sys.modules["exported_model"] = module
        try:
            spec.loader.exec_module(module)
            got = module.load_model(str(tmp_path / "w.safetensors"))(raw)
        finally:
            del sys.modules["exported_model"]
    torch.testing.assert_close(got.detach(), expected, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        unscaled = model.n3(model.n2(model.n1(raw)))  # the same model without its scaling
    assert not torch.allclose(unscaled, expected, atol=1e-2)  # so the export must scale


def test_the_python_export_defines_standardize_itself(skewed, tmp_path):
    path, _, _ = skewed
    project = project_on(path)
    model = build_model(project.graph)
    export(project, model, "python", tmp_path / "m.py")
    source = (tmp_path / "m.py").read_text()
    assert "class Standardize(nn.Module):" in source and "self.n0 = Standardize(3)" in source
    assert "import layerlab" not in source and "from layerlab" not in source
