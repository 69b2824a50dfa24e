"""`layerlab check` checks what `train` would refuse: the training section and the dataset's
fit with the network (sample shape against the Input node, classes against the output and
the loss). A dataset that is not on this machine is a note, not a problem."""

import json

import pytest

from layerlab.cli import main
from layerlab.core.fit import dataset_fit
from layerlab.core.project import load_project

from conftest import EXAMPLES


def project_file(tmp_path, example="digits-mlp", dataset=None, **node_params):
    data = json.loads((EXAMPLES / f"{example}.layerlab.json").read_text())
    if dataset is not None:
        data["training"]["dataset"] = {"validation_split": 0.1, "options": {}, **dataset}
    for node in data["graph"]["nodes"]:
        for key, value in node_params.get(node["id"], {}).items():
            if key == "type":
                node["type"] = value
            else:
                node.setdefault("params", {})[key] = value
    path = tmp_path / "p.layerlab.json"
    path.write_text(json.dumps(data))
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_csv(path, rows):
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


MISFITS = {
    "sample shape": (dict(dataset={"name": "spiral"}),
                     "input", "dataset spiral gives samples of shape [2], but Input node input "
                              "expects [64]"),
    "too few scores": (dict(fc2={"out_features": 5}),
                       "loss", "CrossEntropyLoss needs one score per class: dataset digits has "
                               "10 classes, but fc2 gives [5]"),
    "one-hot width": (dict(fc2={"out_features": 3}, loss={"type": "MSELoss"}),
                      "loss", "MSELoss on the 10 classes of dataset digits needs an output of "
                              "[10] (one-hot) or [1] (two classes), but fc2 gives [3]"),
    "token ids": (dict(example="tiny-transformer", dataset={"name": "spiral"}),
                  "input", "Input node input asks for int64 token ids, but dataset spiral "
                            "gives real values"),
    "embedding too small": (dict(example="tiny-transformer", embed={"num_embeddings": 16}),
                            "input", "Embedding embed has num_embeddings=16, but dataset digits "
                                     "has token ids up to 16; set it to at least 17"),
}


@pytest.mark.parametrize("case", sorted(MISFITS))
def test_check_refuses_what_train_refuses(tmp_path, capsys, case):
    changes, node, words = MISFITS[case]
    path = project_file(tmp_path, **changes)
    code, out, err = run(capsys, "check", path)
    assert code == 1
    assert out.splitlines()[0].split()[:2] == ["node", "type"]  # the table still prints
    assert err.splitlines() == [f"{path}: {node}: {words}"]
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "run", "--epochs", "1")
    assert code == 1 and err.splitlines() == [f"{path}: {words}"]


def test_regression_targets_for_a_classification_loss(tmp_path, capsys):
    csv = write_csv(tmp_path / "r.csv", [["a", "b", "y"]] + [[i, i + 1, i * 0.37]
                                                             for i in range(80)])
    path = project_file(tmp_path, example="spiral",
                        dataset={"name": "csv", "options": {"path": str(csv)}})
    code, _, err = run(capsys, "check", path)
    assert code == 1
    assert err.strip().endswith("CrossEntropyLoss needs class labels, but dataset csv has "
                                "real-valued targets; use MSELoss or L1Loss")


def test_a_dataset_that_is_not_here_is_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = project_file(tmp_path, example="lenet5")
    code, out, err = run(capsys, "check", path)
    assert code == 0 and err == ""
    assert out.splitlines()[-1].startswith("note: dataset mnist is not on this machine")
    missing = tmp_path / "nowhere.csv"
    path = project_file(tmp_path, example="spiral",
                        dataset={"name": "csv", "options": {"path": str(missing)}})
    code, out, err = run(capsys, "check", path)
    assert code == 0 and err == ""
    assert out.splitlines()[-1] == (f"note: dataset csv: {missing} is not on this machine, so "
                                    "its fit with the network was not checked")


def test_an_idx_dataset_without_downloads_says_so(tmp_path, capsys):
    path = project_file(tmp_path, example="lenet5", dataset={
        "name": "mnist", "options": {"root": str(tmp_path / "m"), "download": False}})
    code, out, _ = run(capsys, "check", path)
    assert code == 0
    assert out.splitlines()[-1] == (f"note: dataset mnist is not on this machine (its files "
                                    f"are not in {tmp_path / 'm'}; its downloads are off), so "
                                    "its fit with the network was not checked")


def test_a_dataset_file_that_is_here_but_broken_is_a_problem(tmp_path, capsys):
    broken = tmp_path / "b.csv"
    broken.write_bytes(bytes(range(256)))
    path = project_file(tmp_path, example="spiral",
                        dataset={"name": "csv", "options": {"path": str(broken)}})
    code, _, err = run(capsys, "check", path)
    assert code == 1 and err.strip() == (f"{path}: training.dataset: {broken} is not a "
                                         "UTF-8 text file")


def test_a_csv_that_fits_passes(tmp_path, capsys):
    csv = write_csv(tmp_path / "ok.csv", [["a", "b", "label"]] + [[i, -i, i % 2]
                                                                  for i in range(40)])
    path = project_file(tmp_path, example="spiral",
                        dataset={"name": "csv", "options": {"path": str(csv)}})
    code, out, err = run(capsys, "check", path)
    assert code == 0 and err == "" and "note" not in out


def test_the_training_section_is_checked(tmp_path, capsys):
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    data["training"]["optimizer"]["lr"] = 0
    data["training"]["batch_size"] = -5
    path = tmp_path / "t.layerlab.json"
    path.write_text(json.dumps(data))
    code, _, err = run(capsys, "check", path)
    assert code == 1
    locations = [line.split(": ")[1] for line in err.splitlines()]
    assert locations == ["training.optimizer.lr", "training.batch_size"]
    assert "(--lr)" in err.splitlines()[0] and "(--batch-size)" in err.splitlines()[1]


def test_choice_names_in_the_file_are_case_insensitive(tmp_path, capsys):
    data = json.loads((EXAMPLES / "digits-mlp.layerlab.json").read_text())
    data["training"]["optimizer"]["name"] = "Adam"
    data["training"]["dataset"]["name"] = "DIGITS"
    data["training"]["device"] = "CPU"
    path = tmp_path / "c.layerlab.json"
    path.write_text(json.dumps(data))
    code, _, err = run(capsys, "check", path)
    assert code == 0 and err == ""


def test_fit_reports_nothing_for_a_graph_with_problems_of_its_own(tmp_path):
    project = load_project(project_file(tmp_path, fc1={"out_features": 0},
                                        dataset={"name": "spiral"}))
    assert dataset_fit(project).problems == ()  # the graph's own error is reported instead
    project = load_project(project_file(tmp_path, dataset={"name": "spiral"}))
    assert dataset_fit(project).problems == (
        ("input", "dataset spiral gives samples of shape [2], but Input node input expects "
                  "[64]"),)


def test_fit_without_a_loss_node_checks_the_shape_only(tmp_path):
    project = load_project(project_file(tmp_path, fc2={"out_features": 3}))
    project.graph.remove_node("loss")
    assert dataset_fit(project).problems == ()
    project = load_project(project_file(tmp_path, dataset={"name": "moons"}))
    project.graph.remove_node("loss")
    assert [node for node, _ in dataset_fit(project).problems] == ["input"]
