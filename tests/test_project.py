"""The project file: load, validate, save atomically, keep what we do not know."""

import json
import os

import pytest

import layerlab
from layerlab.core.project import Project, dumps_readable

from conftest import EXAMPLES

MNIST = {
    "format": "layerlab-project", "version": 1, "name": "MNIST MLP",
    "graph": {"directed": True, "multigraph": False, "graph": {},
              "nodes": [
                  {"id": "input", "type": "Input", "params": {"shape": [784]}, "pos": [0, 0]},
                  {"id": "fc1", "type": "Linear",
                   "params": {"out_features": 500, "init": "kaiming_uniform"}, "pos": [220, 0]},
                  {"id": "relu", "type": "ReLU", "params": {}, "pos": [440, 0]},
                  {"id": "fc2", "type": "Linear", "params": {"out_features": 10},
                   "pos": [660, 0], "frozen": False},
                  {"id": "loss", "type": "CrossEntropyLoss", "params": {}, "pos": [880, 0]}],
              "edges": [{"source": "input", "target": "fc1"},
                        {"source": "fc1", "target": "relu"},
                        {"source": "relu", "target": "fc2"},
                        {"source": "fc2", "target": "loss"}]},
    "training": {"dataset": {"name": "mnist", "options": {}, "validation_split": 0.1},
                 "optimizer": {"name": "adam", "lr": 0.001},
                 "batch_size": 100, "epochs": 5, "l1": 0.0, "l2": 0.0, "seed": 0,
                 "device": "auto"},
}


def test_product_example_loads_and_round_trips_exactly(tmp_path):
    path = tmp_path / "mnist.layerlab.json"
    path.write_text(json.dumps(MNIST))
    project = layerlab.load_project(path)
    assert project.name == "MNIST MLP"
    assert list(project.graph.successors("relu")) == ["fc2"]
    assert project.graph.nodes["fc1"]["params"]["init"] == "kaiming_uniform"
    assert layerlab.infer_shapes(project.graph)["fc2"] == (10,)
    project.save(tmp_path / "again.layerlab.json")
    # a version 1 file is saved as version 3, drawn left to right as it always was
    assert json.loads((tmp_path / "again.layerlab.json").read_text()) == {
        **MNIST, "version": 3, "view": {"direction": "LR"}}


def test_unknown_keys_survive(tmp_path):
    data = json.loads(json.dumps(MNIST))
    data["author"] = {"name": "Ada"}
    data["graph"]["nodes"][1]["note"] = "hidden layer"
    data["graph"]["edges"][0]["colour"] = "red"
    data["graph"]["graph"]["layout"] = "manual"
    data["training"]["scheduler"] = {"name": "cosine"}
    path = tmp_path / "p.layerlab.json"
    data["version"], data["view"] = 2, {"direction": "TB", "grid": 20}
    path.write_text(json.dumps(data))
    layerlab.load_project(path).save()
    assert json.loads(path.read_text()) == {**data, "version": 3}


def test_missing_training_settings_take_defaults():
    data = {k: v for k, v in MNIST.items() if k != "training"}
    project = Project.from_dict(json.loads(json.dumps(data)))
    assert project.training["optimizer"]["name"] == "adam"
    assert project.training["batch_size"] == 32


def test_examples_are_valid_and_saved_in_canonical_form():
    for path in EXAMPLES.glob("*.layerlab.json"):
        project = layerlab.load_project(path)
        layerlab.infer_shapes(project.graph)
        assert project.to_json() == path.read_text(encoding="utf-8"), path.name


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "p.layerlab.json"
    path.write_text(json.dumps(MNIST))
    before = path.read_bytes()
    project = layerlab.load_project(path)
    project.name = "changed"

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)  # the final step of every atomic write
    with pytest.raises(OSError):
        project.save()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.layerlab.json"]


@pytest.mark.parametrize(("mutate", "location", "words"), [
    (lambda d: d["training"]["optimizer"].update(name="adamm"), "training.optimizer.name",
     "optimizer (--optimizer) must be one of sgd, momentum, adagrad, rmsprop, adam, adamw, "
     "not 'adamm'"),
    (lambda d: d["training"].update(batch_size=0), "training.batch_size",
     "batch size (--batch-size) must be a whole number at least 1 and at most 1,000,000, "
     "not 0"),
    (lambda d: d["training"]["optimizer"].update(lr=-1), "training.optimizer.lr", "above 0"),
    (lambda d: d["training"].update(device="tpu"), "training.device", "one of auto"),
    (lambda d: d["graph"]["nodes"].append({"id": "fc1", "type": "ReLU"}), "fc1",
     "duplicate id 'fc1' (graph.nodes[1] and graph.nodes[5])"),
    (lambda d: d["graph"]["nodes"][2].update(pos="left"), "relu", "pos of relu"),
    (lambda d: d["graph"]["edges"].append({"source": "relu"}), "graph.edges[4]",
     "text source and target"),
])
def test_structural_problems_name_their_location(mutate, location, words):
    data = json.loads(json.dumps(MNIST))
    mutate(data)
    with pytest.raises(layerlab.GraphError) as info:
        Project.from_dict(data)
    assert any(where == location and words in message for where, message in info.value.errors)


def test_readable_json_keeps_short_things_on_one_line():
    text = dumps_readable({"nodes": [{"id": "a", "pos": [0, 0]}], "long": list(range(60))})
    assert '{"nodes": [{"id": "a", "pos": [0, 0]}]' not in text  # whole thing too long
    assert '[{"id": "a", "pos": [0, 0]}]' in text
    assert json.loads(text)["long"] == list(range(60))
