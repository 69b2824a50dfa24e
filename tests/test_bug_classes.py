"""Realistic bugs in what the trainer is fed and what it reports: MNIST pixels not scaled in
one split, the wrong threshold for a single binary output, and the exported Python `train()`
stepping differently from LayerLab's own trainer."""

from __future__ import annotations

import gzip
import struct
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from layerlab.core.compiler import build_model, checked
from layerlab.core.datasets import Dataset, load_dataset
from layerlab.core.insight import validation_results
from layerlab.core.project import Project
from layerlab.core.pycode import python_source
from layerlab.core.settings import settings_from
from layerlab.core.trainer import Trainer

from helpers import chain_graph

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


# -- MNIST scaling --------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    data = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_idx_set(root: Path, gz: bool) -> dict[str, np.ndarray]:
    """Train and test images that span every pixel value, 0 and 255 included."""
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (6, 28, 28))
    test = rng.integers(0, 256, (4, 28, 28))
    train[0, 0, 0], train[1, 5, 5], test[0, 3, 3], test[3, 27, 27] = 255, 0, 255, 0
    arrays = dict(zip(IDX_STEMS, (train, rng.integers(0, 10, 6), test,
                                  rng.integers(0, 10, 4)), strict=True))
    for stem, array in arrays.items():
        write_idx(root / stem, array, gz)
    return arrays


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_every_mnist_split_is_scaled_to_the_unit_interval(tmp_path, name, gz):
    arrays = write_idx_set(tmp_path, gz)
    data = load_dataset(name, {"root": str(tmp_path), "download": False})
    assert data.test_x is not None and data.test_y is not None
    for x, stem in ((data.x, IDX_STEMS[0]), (data.test_x, IDX_STEMS[2])):
        assert x.dtype == torch.float32
        assert float(x.max()) == 1.0 and float(x.min()) == 0.0, stem
        expected = torch.from_numpy(arrays[stem].astype(np.float32) / 255.0).unsqueeze(1)
        assert torch.equal(x, expected), stem
    assert data.test_y.tolist() == arrays[IDX_STEMS[3]].tolist()


def test_the_trainer_sees_mnist_scaled_in_the_shape_its_input_asks_for(tmp_path):
    write_idx_set(tmp_path, gz=True)
    g = chain_graph([784], ("Linear", {"out_features": 10}), loss="CrossEntropyLoss")
    project = Project(graph=g)
    project.training.update({"dataset": {"name": "mnist", "validation_split": 0.5, "options": {
        "root": str(tmp_path), "download": False}}, "device": "cpu", "epochs": 1})
    trainer = Trainer(project)
    test_x = trainer.data.test_x
    assert test_x is not None and test_x.shape == (4, 784)
    for x in (trainer.x_train, trainer.x_val, test_x):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(torch.cat([trainer.x_train, trainer.x_val]).max()) == 1.0
    assert float(test_x.max()) == 1.0


# -- the binary threshold -------------------------------------------------------------------
def binary_trainer(loss: str, x: list[float], y: list[int]) -> Trainer:
    """A model whose single output is its input (Linear 1→1 with w = 1, b = 0), all data held
    out, so the accuracy is exactly what the threshold makes of the given outputs."""
    g = chain_graph([1], ("Linear", {"out_features": 1}), loss=loss)
    project = Project(graph=g)
    project.training.update({"dataset": {"name": "spiral", "validation_split": 0.9},
                             "device": "cpu", "epochs": 1})
    data = Dataset("binary", torch.tensor(x).unsqueeze(1), torch.tensor(y), "classification",
                   ("no", "yes"))
    trainer = Trainer(project, settings_from(project.training), data=data)
    with torch.no_grad():
        trainer.model.n0.weight.fill_(1.0)
        trainer.model.n0.bias.zero_()
    return trainer


OUTPUTS = [-2.0, -0.1, 0.1, 0.3, 0.45, 0.55, 0.9, 3.0, -0.4, 0.2]


@pytest.mark.parametrize(("loss", "threshold"), [("BCEWithLogitsLoss", 0.0), ("MSELoss", 0.5),
                                                 ("L1Loss", 0.5)])
def test_a_single_binary_output_is_thresholded_as_its_loss_reads_it(loss, threshold):
    labels = [int(v > threshold) for v in OUTPUTS]  # right under this threshold only
    trainer = binary_trainer(loss, OUTPUTS, labels)
    objective = trainer.objective
    assert objective.encoding == "binary"
    out = torch.tensor(OUTPUTS).unsqueeze(1)
    assert objective.predict(out).tolist() == labels
    assert objective.correct(out, torch.tensor(labels)) == len(OUTPUTS)
    other = 0.5 - threshold  # the other threshold gets 0.1, 0.2, 0.3 and 0.45 wrong
    wrong = sum(int(v > other) != lab for v, lab in zip(OUTPUTS, labels, strict=True))
    assert wrong == 4
    assert objective.correct(out, torch.tensor([int(v > other) for v in OUTPUTS])) == \
        len(OUTPUTS) - wrong

    _, accuracy = trainer.evaluate(trainer.x_val, trainer.y_val)
    assert accuracy == 1.0 and len(trainer.x_val) == 9
    results = validation_results(trainer.model, objective, trainer.data, trainer.x_val,
                                 trainer.y_val)
    assert results is not None and int(np.trace(results.confusion)) == 9  # the same notion


# -- the exported train() ---------------------------------------------------------------------
def exported_module(project: Project) -> types.ModuleType:
    analysis = checked(project.graph)
    source = python_source(project, build_model(project.graph), analysis)
    module = types.ModuleType("exported")
    exec(compile(source, "exported.py", "exec"), module.__dict__)
    return module


OPTIMIZER_CASES = [
    {"name": "adam", "lr": 0.02, "betas": [0.8, 0.95], "eps": 1e-4, "weight_decay": 0.01,
     "amsgrad": True},
    {"name": "momentum", "lr": 0.05, "momentum": 0.6, "nesterov": True, "weight_decay": 0.02},
    {"name": "rmsprop", "lr": 0.01, "alpha": 0.9, "eps": 1e-3, "momentum": 0.3,
     "centered": True},
    {"name": "adagrad", "lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
]


@pytest.mark.parametrize("optimizer", OPTIMIZER_CASES, ids=lambda o: o["name"])
@pytest.mark.parametrize("frozen", [False, True])
def test_exported_train_steps_exactly_like_the_trainer(optimizer: dict[str, Any], frozen):
    g = chain_graph([5], ("Linear", {"out_features": 7}), ("ReLU", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    g.nodes["n0"]["frozen"] = frozen
    project = Project(graph=g)
    project.training.update({"dataset": {"name": "spiral", "validation_split": 0.0},
                             "optimizer": optimizer, "batch_size": 40, "epochs": 2,
                             "l1": 0.003, "l2": 0.01, "seed": 4, "device": "cpu"})
    gen = torch.Generator().manual_seed(2)
    data = Dataset("tiny", torch.randn(40, 5, generator=gen),
                   torch.randint(0, 3, (40,), generator=gen), "classification", tuple("abc"))
    trainer = Trainer(project, settings_from(project.training), data=data)
    module = exported_module(project)
    model = module.Model()
    model.load_state_dict(trainer.model.state_dict())
    start = {k: v.clone() for k, v in model.state_dict().items()}

    trainer.run()  # two steps, each on the whole set
    history = module.train(model, data.x, data.y)  # the project's own defaults
    assert len(history) == 2 and history[1] < history[0]
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
        moved = not torch.equal(value, start[key])
        assert moved != (frozen and key.startswith("n0.")), key
