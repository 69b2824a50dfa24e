"""What the window shows about a model, computed in core and checked against plain torch:
the decision boundary and each node's output over the plane, the validation results and
their confusion matrix, the dataset preview, and one chosen sample traced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from layerlab.core.compiler import build_model
from layerlab.core.datasets import Dataset, DatasetError, load_dataset, split_indices
from layerlab.core.insight import (
    GRID,
    confusion_matrix,
    decision_boundary,
    preview_dataset,
    preview_training,
    trace_sample,
    validation_results,
    weight_histograms,
)
from layerlab.core.objective import Objective
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.trainer import Trainer

from helpers import chain_graph

CPU = torch.device("cpu")


def points(n: int = 60, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=gen) * torch.tensor([3.0, 0.5]) + torch.tensor([1, -2])


def plane_by_hand(x: torch.Tensor, size: int = GRID) -> tuple[torch.Tensor, list[float]]:
    """The plane the boundary should cover: the data's range plus 10% on each side, with
    rows running along y and columns along x (as an image is drawn)."""
    lo, hi = x.min(0).values, x.max(0).values
    margin = 0.1 * (hi - lo)
    xs = torch.linspace(float(lo[0] - margin[0]), float(hi[0] + margin[0]), size)
    ys = torch.linspace(float(lo[1] - margin[1]), float(hi[1] + margin[1]), size)
    grid = torch.tensor([[float(xv), float(yv)] for yv in ys for xv in xs])
    return grid, [float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])]


def mlp(outputs: int, *extra: tuple[str, dict], seed: int = 0) -> torch.fx.GraphModule:
    torch.manual_seed(seed)
    return build_model(chain_graph([2], ("Linear", {"out_features": 8}), ("Tanh", {}), *extra,
                                   ("Linear", {"out_features": outputs})))


# -- decision boundary ------------------------------------------------------------------
def test_two_class_boundary_is_the_softmax_of_class_1_over_the_plane():
    x = points()
    model = mlp(2)
    record = decision_boundary(model, x, CPU, step=7)
    grid, extent = plane_by_hand(x)
    with torch.no_grad():
        expected = torch.softmax(model(grid), 1)[:, 1].reshape(GRID, GRID)
    assert record.step == 7
    np.testing.assert_allclose(record.extent, extent, rtol=1e-6)
    np.testing.assert_allclose(record.image, expected.numpy(), rtol=1e-5, atol=1e-6)
    # row i is y = ys[i]: the top-left and the bottom-right corners are not swapped
    with torch.no_grad():
        corner = torch.softmax(model(torch.tensor([[extent[1], extent[2]]])), 1)[0, 1]
    assert record.image[0, -1] == pytest.approx(float(corner), abs=1e-6)


def test_each_nodes_thumbnail_is_the_mean_of_its_real_output_over_the_plane():
    x = points()
    model = mlp(2)
    record = decision_boundary(model, x, CPU)
    grid, _ = plane_by_hand(x)
    with torch.no_grad():
        h0 = model.get_submodule("n0")(grid)
        h1 = torch.tanh(h0)
        h2 = model.get_submodule("n2")(h1)
    for node, value in {"n0": h0, "n1": h1, "n2": h2}.items():
        np.testing.assert_allclose(record.nodes[node], value.mean(1).reshape(GRID, GRID),
                                   rtol=1e-5, atol=1e-6, err_msg=node)


def test_more_classes_show_the_predicted_class_and_one_output_its_probability():
    x = points()
    grid, _ = plane_by_hand(x)
    three = mlp(3)
    with torch.no_grad():
        predicted = three(grid).argmax(1).float() / 2
    np.testing.assert_array_equal(decision_boundary(three, x, CPU).image,
                                  predicted.reshape(GRID, GRID).numpy())
    one = mlp(1)
    with torch.no_grad():
        logit = one(grid)[:, 0]
    logits = Objective(nn.BCEWithLogitsLoss(), "BCEWithLogitsLoss", "binary", 2)
    np.testing.assert_allclose(decision_boundary(one, x, CPU, objective=logits).image,
                               torch.sigmoid(logit).reshape(GRID, GRID).numpy(), rtol=1e-5)
    # an MSE model regresses the 0/1 target itself: its output is the probability
    mse = Objective(nn.MSELoss(), "MSELoss", "binary", 2)
    np.testing.assert_allclose(decision_boundary(one, x, CPU, objective=mse).image,
                               logit.clamp(0, 1).reshape(GRID, GRID).numpy(), rtol=1e-5)


def test_the_boundary_is_drawn_in_evaluation_mode_and_leaves_the_mode_as_it_was():
    x = points()
    model = mlp(2, ("Dropout", {"p": 0.9}))
    model.train()
    first = decision_boundary(model, x, CPU).image
    second = decision_boundary(model, x, CPU).image
    np.testing.assert_array_equal(first, second)  # no dropout noise
    assert model.training
    assert decision_boundary(model, torch.randn(5, 3), CPU) is None  # not a plane


# -- results ----------------------------------------------------------------------------
def test_the_confusion_matrix_is_a_count_of_true_and_predicted_pairs():
    targets = np.array([0, 0, 1, 2, 2, 2, 1, 0])
    predicted = np.array([0, 1, 1, 2, 0, 2, 3, 0])  # 3: an output beyond the classes
    confusion, outside = confusion_matrix(targets, predicted, 3)
    np.testing.assert_array_equal(confusion, [[2, 1, 0],
                                              [0, 1, 0],
                                              [1, 0, 2]])
    assert outside == 1


def test_validation_results_count_the_models_predictions_on_the_held_out_samples():
    model = build_model(chain_graph([2], ("Linear", {"out_features": 4})))
    with torch.no_grad():  # outputs ±x, ±y: each wins somewhere, output 3 (-y) often
        model.get_submodule("n0").weight.copy_(torch.tensor([[1.0, 0], [-1, 0], [0, 1],
                                                             [0, -1]]))
    x_val = points(40, seed=2)
    y_val = torch.arange(40) % 3
    data = Dataset("tiny", x_val, y_val, "classification", ("a", "b", "c"))
    objective = Objective(nn.CrossEntropyLoss(), "CrossEntropyLoss", "index", 3)
    record = validation_results(model, objective, data, x_val, y_val)
    with torch.no_grad():
        predicted = model(x_val).argmax(1)
    expected = np.zeros((3, 3), dtype=np.int64)
    for t, p in zip(y_val.tolist(), predicted.tolist(), strict=True):
        if p < 3:
            expected[t, p] += 1
    assert int((predicted == 3).sum()) > 0, "the case of an output beyond the classes"
    np.testing.assert_array_equal(record.confusion, expected)
    assert record.outside == int((predicted == 3).sum())
    np.testing.assert_array_equal(record.predicted, predicted.numpy())
    assert record.samples is None and record.classes == ("a", "b", "c")
    regression = Dataset("r", x_val, torch.randn(40, 1), "regression")
    assert validation_results(model, objective, regression, x_val, y_val) is None
    assert validation_results(model, objective, data, x_val[:0], y_val[:0]) is None


def test_weight_histograms_cover_each_weight_matrix_and_no_bias():
    model = mlp(2)
    histograms = weight_histograms(model)
    assert sorted(histograms) == ["n0.weight", "n2.weight"]
    counts, edges = histograms["n2.weight"]
    weight = model.get_submodule("n2").weight.detach()
    assert counts.sum() == weight.numel() == 16
    assert edges[0] == pytest.approx(float(weight.min())) and \
        edges[-1] == pytest.approx(float(weight.max()))


def test_an_mse_binary_model_below_one_half_predicts_class_0_in_accuracy_and_the_matrix():
    """MSE regresses the 0/1 target: 0.3 means class 0, although a logit of 0.3 would mean
    class 1. Accuracy and the confusion matrix must agree on it."""
    objective = Objective(nn.MSELoss(), "MSELoss", "binary", 2)
    output = torch.tensor([[0.1], [0.3], [0.49], [0.7], [-0.2]])
    y = torch.tensor([0, 1, 0, 1, 1])
    assert objective.predict(output).tolist() == [0, 0, 0, 1, 0]
    assert objective.correct(output, y) == 3
    logits = Objective(nn.BCEWithLogitsLoss(), "BCEWithLogitsLoss", "binary", 2)
    assert logits.predict(output).tolist() == [1, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="regression"):
        Objective(nn.MSELoss(), "MSELoss", "values", 0).predict(output)

    g = chain_graph([2], ("Linear", {"out_features": 1}), ("Sigmoid", {}), loss="MSELoss")
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(200, 2, generator=gen)
    data = Dataset("halves", x, (x[:, 0] > 0).long(), "classification", ("left", "right"))
    project = Project(graph=g)
    project.training.update({"dataset": {"name": "spiral", "options": {},
                                         "validation_split": 0.5},
                             "optimizer": {"name": "sgd", "lr": 0.5},
                             "batch_size": 20, "epochs": 1, "device": "cpu"})
    trainer = Trainer(project, settings_from(project.training), data=data)
    trainer.run()
    with torch.no_grad():
        out = trainer.model(trainer.x_val)[:, 0]
    assert int(((out > 0) & (out < 0.5)).sum()) > 10, "outputs where the thresholds differ"
    record = validation_results(trainer.model, trainer.objective, trainer.data,
                                trainer.x_val, trainer.y_val)
    expected = np.zeros((2, 2), dtype=np.int64)
    np.add.at(expected, (trainer.y_val.numpy(), (out > 0.5).long().numpy()), 1)
    np.testing.assert_array_equal(record.confusion, expected)
    accuracy = trainer.history[-1].val_accuracy
    assert accuracy == np.trace(record.confusion) / record.confusion.sum()


# -- dataset preview --------------------------------------------------------------------
def test_a_plane_dataset_previews_as_points_with_its_validation_samples():
    training = {"dataset": {"name": "moons", "options": {}, "validation_split": 0.25},
                "seed": 3}
    record = preview_training(training)
    data = load_dataset("moons", {})
    assert record.kind == "points"
    np.testing.assert_array_equal(record.x, data.x.numpy())
    np.testing.assert_array_equal(record.y, data.y.numpy())
    np.testing.assert_array_equal(record.val, split_indices(len(data), 0.25, 3)[1].numpy())


def test_images_preview_as_the_first_images_and_other_data_as_the_first_rows():
    digits = load_dataset("digits", {})
    record = preview_dataset(digits, 0.1, 0)
    assert record.kind == "images" and record.x.shape == (64, 8, 8)
    np.testing.assert_array_equal(record.x[5], digits.x[5].reshape(8, 8).numpy())
    np.testing.assert_array_equal(record.y, digits.y[:64].numpy())
    x = torch.arange(300, dtype=torch.float32).reshape(100, 3)
    table = preview_dataset(Dataset("rows", x, x.sum(1, keepdim=True), "regression"), 0.1, 0)
    assert table.kind == "table" and table.header == ("x0", "x1", "x2", "target")
    assert table.x.shape == (50, 4)
    np.testing.assert_array_equal(table.x[7], [21, 22, 23, 66])


def test_a_dataset_that_cannot_load_previews_as_its_message():
    record = preview_training({"dataset": {"name": "nope", "options": {}}})
    assert record.kind == "message"
    assert record.message.startswith("unknown dataset 'nope'; choose one of spiral")


def test_a_preview_never_downloads(tmp_path, monkeypatch):
    """Only a run downloads MNIST: a preview of a dataset not on this machine says so at
    once, without trying the network."""
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("a preview tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    record = preview_training({"dataset": {"name": "mnist",
                                           "options": {"root": str(tmp_path)}}})
    assert record.kind == "message"
    assert record.message.startswith(f"mnist needs train-images-idx3-ubyte.gz, "
                                     f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                                     f"t10k-labels-idx1-ubyte.gz in {tmp_path}")


# -- one chosen sample ------------------------------------------------------------------
def bn_trainer() -> Trainer:
    g = chain_graph([2], ("Linear", {"out_features": 6}), ("BatchNorm1d", {}), ("ReLU", {}),
                    ("Linear", {"out_features": 2}), loss="CrossEntropyLoss")
    project = Project(graph=g)
    project.training.update({"dataset": {"name": "moons", "options": {},
                                         "validation_split": 0.2},
                             "optimizer": {"name": "sgd", "lr": 0.1},
                             "batch_size": 32, "epochs": 1, "device": "cpu"})
    return Trainer(project, settings_from(project.training))


def test_a_chosen_sample_is_traced_in_evaluation_mode_without_changing_the_model():
    trainer = bn_trainer()
    trainer.run()  # BatchNorm's running statistics are no longer the initial ones
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trace = trace_sample(trainer.project.graph, trainer.model, trainer.objective,
                         trainer.data, 17, CPU)
    x, y = trainer.data.x[17:18], trainer.data.y[17:18]
    with torch.no_grad():
        out = trainer.model.eval()(x)
    trainer.model.train()
    forward = dict(trace.forward)
    torch.testing.assert_close(forward["n3"], out)
    assert float(trace.loss) == pytest.approx(float(nn.functional.cross_entropy(out, y)))
    assert trainer.model.training
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    assert all(p.grad is None for p in trainer.model.parameters())


def test_a_sample_beyond_the_dataset_is_named():
    trainer = bn_trainer()
    with pytest.raises(DatasetError, match="sample 5000 is not in dataset moons, which has "):
        trace_sample(trainer.project.graph, trainer.model, trainer.objective, trainer.data,
                     5000, CPU)
