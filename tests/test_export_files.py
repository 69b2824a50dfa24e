"""export(): the files each format writes, the sample batches the checks use, and how a failing
exporter is turned into one sentence naming the node (exporters stubbed where the real one
would take seconds; tests/test_export.py runs the real ONNX and torch.export ones)."""

import pytest
import torch
from safetensors.torch import load_file

import layerlab.core.export as ex
from layerlab.core.compiler import build_model, checked
from layerlab.core.export import ExportError, export, sample_input
from layerlab.core.project import Project
from layerlab.core.pycode import python_source

from helpers import chain_graph


def mlp():
    g = chain_graph([3], ("Linear", {"out_features": 4}), ("GELU", {}),
                    ("Linear", {"out_features": 2}), loss="MSELoss")
    return Project(graph=g, name="tiny")


def test_a_float_sample_is_seeded_uniform_noise_of_the_input_shape():
    analysis = checked(chain_graph([2, 3], ("Flatten", {})))
    x = sample_input(analysis, batch=4, seed=5)
    assert x.shape == (4, 2, 3) and x.dtype == torch.float32
    assert torch.equal(x, torch.rand(4, 2, 3, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(sample_input(analysis), torch.rand(
        3, 2, 3, generator=torch.Generator().manual_seed(0)))


def test_token_ids_stay_below_the_smallest_vocabulary():
    g = chain_graph([6], ("Embedding", {"num_embeddings": 3, "embedding_dim": 2}),
                    dtype="int64")
    x = sample_input(checked(g), batch=200, seed=1)
    assert x.dtype == torch.int64 and x.shape == (200, 6)
    assert set(x.unique().tolist()) == {0, 1, 2}
    assert torch.equal(x, torch.randint(0, 3, (200, 6),
                                        generator=torch.Generator().manual_seed(1)))


def test_token_ids_without_an_embedding_are_zeros_and_ones():
    g = chain_graph([5], ("Identity", {}), dtype="int64")
    assert set(sample_input(checked(g), batch=100).unique().tolist()) == {0, 1}


def test_safetensors_holds_every_tensor_of_the_model(tmp_path):
    project = mlp()
    model = build_model(project.graph)
    report = export(project, model, "safetensors", tmp_path / "w.safetensors")
    assert (report.path, report.format, report.detail) == (tmp_path / "w.safetensors",
                                                           "safetensors", "4 tensors")
    saved = load_file(tmp_path / "w.safetensors")
    assert saved.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(saved[key], value)


def test_python_is_the_generated_source_in_evaluation_mode(tmp_path):
    project = mlp()
    model = build_model(project.graph).train()
    report = export(project, model, "python", tmp_path / "m.py")
    assert not model.training
    assert (report.path, report.format) == (tmp_path / "m.py", "python")
    assert report.detail == "standalone PyTorch module (torch, numpy, safetensors)"
    assert (tmp_path / "m.py").read_text() == python_source(project, model,
                                                            checked(project.graph))


def test_an_unknown_format_names_the_known_ones(tmp_path):
    with pytest.raises(ExportError) as info:
        export(mlp(), build_model(mlp().graph), "tflite", tmp_path / "m")
    assert str(info.value) == "unknown format 'tflite'; choose one of onnx, pt2, python, " \
                              "safetensors"


def test_the_largest_difference_is_over_every_element():
    assert ex._max_diff(torch.tensor([1.0, 2.0, -3.0]), torch.tensor([1.5, 0.0, -3.0])) == 2.0
    assert ex._max_diff(torch.tensor([[1]]), torch.tensor([[4]])) == 3.0


def refusing(kind):
    """An exporter that fails on any model holding a module of `kind`."""
    def exporter(model, analysis, path):
        if any(isinstance(m, kind) for m in model.modules()):
            raise RuntimeError(f"cannot export {kind.__name__}\nsecond line")
        return "fine"
    return exporter


def test_the_first_node_that_fails_alone_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(ex, "export_pt2", refusing(torch.nn.GELU))
    with pytest.raises(ExportError) as info:
        export(mlp(), build_model(mlp().graph), "pt2", tmp_path / "m.pt2")
    assert str(info.value) == "pt2 cannot express node n1 (GELU): cannot export GELU"
    monkeypatch.setattr(ex, "export_onnx", refusing(torch.nn.Linear))
    with pytest.raises(ExportError, match=r"^onnx cannot express node n0 \(Linear\): "):
        export(mlp(), build_model(mlp().graph), "onnx", tmp_path / "m.onnx")


def test_a_failure_no_single_node_shows_blames_the_model_by_the_errors_type(monkeypatch,
                                                                            tmp_path):
    def only_whole_models(model, analysis, path):
        if len([m for m in model.modules() if isinstance(m, torch.nn.Linear)]) > 1:
            raise ValueError("  ")
        return "fine"

    monkeypatch.setattr(ex, "export_pt2", only_whole_models)
    with pytest.raises(ExportError) as info:
        export(mlp(), build_model(mlp().graph), "pt2", tmp_path / "m.pt2")
    assert str(info.value) == "pt2 cannot express the model: ValueError"


def test_an_export_error_passes_through_as_it_is(monkeypatch, tmp_path):
    def missing(model, analysis, path):
        raise ExportError("ONNX export needs the onnx package")

    monkeypatch.setattr(ex, "export_onnx", missing)
    with pytest.raises(ExportError) as info:
        export(mlp(), build_model(mlp().graph), "onnx", tmp_path / "m.onnx")
    assert str(info.value) == "ONNX export needs the onnx package"


def test_the_exporter_runs_without_gradients_and_reports_its_detail(monkeypatch, tmp_path):
    seen = []

    def recording(model, analysis, path):
        seen.append((torch.is_grad_enabled(), model.training, analysis.input_node, path))
        return "checked"

    monkeypatch.setattr(ex, "export_pt2", recording)
    project = mlp()
    report = export(project, build_model(project.graph).train(), "pt2", tmp_path / "m.pt2")
    assert seen == [(False, False, "x", tmp_path / "m.pt2")]
    assert (report.format, report.detail) == ("pt2", "checked")


def test_a_pt2_file_reloads_and_matches_the_model(tmp_path):
    project = mlp()
    torch.manual_seed(0)
    model = build_model(project.graph)
    report = export(project, model, "pt2", tmp_path / "m.pt2")
    assert report.detail.startswith("torch.export program; reloaded, matches the model within")
    assert float(report.detail.rsplit(" ", 1)[1]) < 1e-6
    loaded = torch.export.load(tmp_path / "m.pt2").module()
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded(x), model(x))


def test_an_onnx_file_reports_its_opset_and_matches_the_model_in_onnxruntime(tmp_path,
                                                                              monkeypatch):
    import onnx
    import onnxruntime

    project = mlp()
    torch.manual_seed(0)
    model = build_model(project.graph)
    batches, run = [], onnxruntime.InferenceSession.run

    def recording(session, names, feed, *args, **kwargs):
        batches.append(len(feed["input"]))
        return run(session, names, feed, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", recording)
    report = export(project, model, "onnx", tmp_path / "m.onnx")
    monkeypatch.undo()
    assert batches == [1, 7]  # the batches the report names: batch 1 is where a dynamic
    # batch dimension most often breaks
    opset = next(o.version for o in onnx.load(str(tmp_path / "m.onnx")).opset_import
                 if o.domain in ("", "ai.onnx"))
    assert report.detail.startswith(f"ONNX opset {opset}; onnxruntime matches torch within ")
    assert report.detail.endswith(" (batch 1 and 7)") and opset >= 17
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                           providers=["CPUExecutionProvider"])
    x = torch.rand(4, 3)
    (got,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), model(x).detach(), rtol=0, atol=1e-5)
