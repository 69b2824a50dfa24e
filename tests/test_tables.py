"""The csv dataset as a person's own table: header or not, sniffed delimiter, text columns
one-hot with fixed categories, task detection, missing values, and refusals that name the
file, the row and the column."""

from __future__ import annotations

import json

import pytest
import torch

from layerlab.cli import main
from layerlab.core.datasets import DatasetError, load_dataset, prepare_split, split_indices


def table(tmp_path, text: str, name: str = "t.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_header_is_optional_and_the_delimiter_is_sniffed(tmp_path):
    named = load_dataset("csv", {"path": table(tmp_path, "a;b;kind\n1,5;2;x\n3;4;y\n")})
    assert named.features == ("a", "b") and named.classes == ("x", "y")
    assert named.x.tolist() == [[1.5, 2], [3, 4]]  # a decimal comma, as Excel writes it
    tabbed = load_dataset("csv", {"path": table(tmp_path, "1\t2\tx\n3\t4\ty\n5\t6\tx\n")})
    assert tabbed.features == ("1", "2") and tabbed.x.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert tabbed.y.tolist() == [0, 1, 0]
    numbers = load_dataset("csv", {"path": table(tmp_path, "1,2,0\n3,4,1\n")})
    assert len(numbers) == 2 and numbers.features == ("1", "2")  # first row is data
    forced = load_dataset("csv", {"path": table(tmp_path, "p,q,r\n1,2,0\n"), "header": "no"})
    assert len(forced) == 2 and forced.categories["1"] == ["1", "p"]  # the names are data


def test_text_features_are_one_hot_in_the_projects_order(tmp_path):
    path = table(tmp_path, "size,colour,label\n1,red,a\n2,blue,b\n3,red,a\n4,green,b\n")
    d = load_dataset("csv", {"path": path})
    assert d.features == ("size", "colour=blue", "colour=green", "colour=red")
    assert d.x.tolist() == [[1, 0, 0, 1], [2, 1, 0, 0], [3, 0, 0, 1], [4, 0, 1, 0]]
    assert d.categories == {"colour": ["blue", "green", "red"], "label": ["a", "b"]}
    fixed = load_dataset("csv", {"path": path, "categories": {
        "colour": ["red", "green", "blue", "violet"], "label": ["b", "a"]}})
    assert fixed.features[1:] == ("colour=red", "colour=green", "colour=blue", "colour=violet")
    assert fixed.x[1].tolist() == [2, 0, 0, 1, 0] and fixed.classes == ("b", "a")
    assert fixed.y.tolist() == [1, 0, 1, 0]
    with pytest.raises(DatasetError) as info:
        load_dataset("csv", {"path": path, "categories": {"colour": ["red", "blue"]}})
    assert str(info.value) == (f"{path} row 5, column colour: 'green' is not one of the "
                               "column's categories (red, blue)")


def test_a_text_column_of_ids_is_refused_rather_than_one_hot(tmp_path):
    path = table(tmp_path, "name,a,label\n" + "".join(f"p{i},{i},{i % 2}\n" for i in range(150)))
    with pytest.raises(DatasetError) as info:
        load_dataset("csv", {"path": path})
    assert str(info.value) == (f"{path} column name holds 150 different texts (names or "
                               "ids?), too many to one-hot encode; remove the column, or list "
                               "its categories in option categories")


@pytest.mark.parametrize(("values", "task"), [
    (["setosa", "virginica"] * 20, "classification"),
    ([str(i % 20) for i in range(60)], "classification"),
    ([str(i % 21) for i in range(63)], "regression"),
    ([f"{151 + i}.0" for i in range(300)], "regression"),
    ([f"{i / 4}" for i in range(8)], "regression"),
])
def test_the_task_is_detected_from_the_target(tmp_path, values, task):
    text = "x,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values))
    assert load_dataset("csv", {"path": table(tmp_path, text)}).task == task


def test_several_numeric_targets_are_a_regression(tmp_path):
    path = table(tmp_path, "a,b,u,v\n1,2,0.5,7\n3,4,1.5,8\n5,6,2.5,9\n")
    d = load_dataset("csv", {"path": path, "target": "u, v"})
    assert d.task == "regression" and d.targets == ("u", "v")
    assert d.x.tolist() == [[1, 2], [3, 4], [5, 6]] and d.y.tolist()[1] == [1.5, 8.0]


def test_missing_values_are_refused_by_row_and_column(tmp_path):
    path = table(tmp_path, "a,b,label\n1,2,x\n3,,y\n5,NA,x\n")
    with pytest.raises(DatasetError) as info:
        load_dataset("csv", {"path": path})
    assert str(info.value) == (f"{path} row 3, column b: the value is missing; fill it in, "
                               "drop the row, or set option missing to fill")
    path = table(tmp_path, "a,label\n1,x\n3,\n", "target.csv")
    with pytest.raises(DatasetError, match=r"target\.csv row 3, column label: the target is "
                                           "missing"):
        load_dataset("csv", {"path": path, "missing": "fill"})


def test_filled_values_come_from_the_training_rows_only(tmp_path):
    train, _ = split_indices(20, 0.25, seed=0)
    hole = int(train[3])
    rows = [f"{i},{'red' if i % 3 else 'blue'},{i % 2}" for i in range(20)]
    rows[hole] = "?,,0"  # both features missing
    path = table(tmp_path, "a,colour,label\n" + "\n".join(rows) + "\n")
    d = load_dataset("csv", {"path": path, "missing": "fill"})
    filled = prepare_split(d, train)
    known = [i for i in train.tolist() if i != hole]
    assert filled.x[hole, 0].item() == pytest.approx(sum(known) / len(known))
    reds = sum(1 for i in known if i % 3)
    assert reds > len(known) - reds and filled.x[hole, 1:].tolist() == [0, 1]  # most frequent
    everything = [i for i in range(20) if i != hole]
    assert filled.x[hole, 0].item() != pytest.approx(sum(everything) / len(everything))


@pytest.mark.parametrize(("content", "words"), [
    (b"a,b,label\n1,2,x\n3,4\n", "row 3 has 2 values where the header has 3: column label "
                                 "is missing"),
    (b"a,b,label\n1,2,x\n3,4,y,9\n", "row 3 has 4 values where the header has 3: value '9' "
                                     "is beyond the last column (label)"),
    (b"a,b,label\n1,2,x\n3,,y\n", "row 3, column b: the value is missing"),
    (b"a,b,label\n" + b"1,2,x\n" * 10 + b"3,four,y\n", "row 12, column b: 'four' is not a "
                                                        "number"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a UTF-8 text file"),
])
def test_a_bad_table_is_one_sentence_naming_file_row_and_column(tmp_path, capsys, content,
                                                                 words):
    data = tmp_path / "own.csv"
    data.write_bytes(content)
    code = main(["new", "--data", str(data), "-o", str(tmp_path / "p.layerlab.json")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(str(data)) and words in lines[0]
    assert not (tmp_path / "p.layerlab.json").exists()


def test_an_unknown_target_column_names_the_columns(tmp_path, capsys):
    data = table(tmp_path, "a,b,label\n1,2,x\n")
    code = main(["new", "--data", data, "--target", "species", "-o",
                 str(tmp_path / "p.layerlab.json")])
    assert code == 1
    assert capsys.readouterr().err == (f"{data} has no column 'species'; its columns are a, "
                                       "b, label\n")


def test_a_relative_path_is_read_from_the_project_folder(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    rows = "".join(f"{i},{-i},{i % 2}\n" for i in range(30))
    (folder / "data.csv").write_text("a,b,label\n" + rows)
    assert main(["new", "--data", str(folder / "data.csv"), "-o",
                 str(folder / "p.layerlab.json")]) == 0
    saved = json.loads((folder / "p.layerlab.json").read_text())
    assert saved["training"]["dataset"]["options"]["path"] == "data.csv"
    monkeypatch.chdir(tmp_path)  # elsewhere: the path still means the project's folder
    capsys.readouterr()
    assert main(["check", str(folder / "p.layerlab.json")]) == 0
    out = main(["train", str(folder / "p.layerlab.json"), "--epochs", "1", "--out",
                str(tmp_path / "run")])
    assert out == 0
    snapshot = json.loads((tmp_path / "run" / "project.layerlab.json").read_text())
    assert snapshot["training"]["dataset"]["options"]["path"] == str(folder / "data.csv")


def test_iris_with_text_labels_keeps_its_class_names(tmp_path):
    from sklearn.datasets import load_iris

    bunch = load_iris()
    rows = "".join(",".join(map(str, r)) + f",{bunch.target_names[t]}\n"
                   for r, t in zip(bunch.data, bunch.target, strict=True))
    d = load_dataset("csv", {"path": table(tmp_path, "a,b,c,d,species\n" + rows)})
    assert d.classes == ("setosa", "versicolor", "virginica")
    assert torch.equal(d.y, torch.from_numpy(bunch.target))
