"""Datasets: generated, bundled, IDX files (gzipped or plain, downloaded and checked), CSV."""

import gzip
import hashlib
import http.server
import os
import struct
import threading
from functools import partial

import numpy as np
import pytest
import torch

from layerlab.core.datasets import (
    DATASETS,
    DatasetError,
    fit_to_input,
    load_dataset,
    split_indices,
)
from layerlab.core.idx import IdxError, ensure_files

GENERATED = ["spiral", "circles", "xor", "gaussian", "moons"]


@pytest.mark.parametrize("name", GENERATED)
def test_generated_datasets_are_deterministic_two_class_points(name):
    a = load_dataset(name, {"n_samples": 200, "noise": 0.1, "seed": 3})
    b = load_dataset(name, {"n_samples": 200, "noise": 0.1, "seed": 3})
    c = load_dataset(name, {"n_samples": 200, "noise": 0.1, "seed": 4})
    assert a.x.shape == (200, 2) and a.y.shape == (200,)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert set(a.y.tolist()) == {0, 1} and a.task == "classification"
    assert len(a.classes) == 2


def test_digits_pixels_are_scaled_to_unit_range_and_nothing_else():
    from sklearn.datasets import load_digits
    d = load_dataset("digits")
    raw = load_digits()
    assert d.x.shape == (1797, 64)
    torch.testing.assert_close(d.x, torch.tensor(raw.data, dtype=torch.float32) / 16)
    assert d.x.min() == 0 and d.x.max() == 1
    image = fit_to_input(d, "input", (1, 8, 8), "float32")
    assert image.x.shape == (1797, 1, 8, 8)
    tokens = fit_to_input(d, "input", (64,), "int64")
    assert tokens.x.dtype == torch.int64 and tokens.x.max() == 16
    torch.testing.assert_close(tokens.x, torch.tensor(raw.data, dtype=torch.int64))


def test_a_dataset_that_does_not_fit_the_input_names_both_shapes_and_the_node():
    with pytest.raises(DatasetError) as info:
        fit_to_input(load_dataset("digits"), "inp", (2,), "float32")
    assert str(info.value) == ("dataset digits gives samples of shape [64] or [1, 8, 8], but "
                               "Input node inp expects [2]")


def test_unknown_dataset_and_option_name_the_valid_ones():
    with pytest.raises(DatasetError, match="unknown dataset 'mnsit'; choose one of spiral"):
        load_dataset("mnsit")
    with pytest.raises(DatasetError, match=r"spiral has no option 'nois' \(its options: "
                                           r"n_samples, noise, seed\)"):
        load_dataset("spiral", {"nois": 1})
    with pytest.raises(DatasetError, match="option noise must be at least 0"):
        load_dataset("spiral", {"noise": -1})


def test_split_is_deterministic_and_disjoint():
    train, val = split_indices(100, 0.2, seed=5)
    again = split_indices(100, 0.2, seed=5)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])
    assert len(val) == 20 and len(train) == 80
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert not torch.equal(val, split_indices(100, 0.2, seed=6)[1])


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root, n_train=30, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    root.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (root / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (root / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx_files_gzipped_or_plain(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    d = load_dataset("mnist", {"root": str(tmp_path), "download": False})
    assert d.x.shape == (30, 1, 28, 28) and d.test_x.shape == (10, 1, 28, 28)
    expected = torch.tensor(arrays["train-images-idx3-ubyte"], dtype=torch.float32) / 255
    torch.testing.assert_close(d.x[:, 0], expected)
    assert d.y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    flat = fit_to_input(d, "input", (784,), "float32")
    assert flat.x.shape == (30, 784) and flat.test_x.shape == (10, 784)


def test_mnist_missing_offline_says_which_files_to_put_where(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", {"root": str(tmp_path / "none"), "download": False})
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert str(tmp_path / "none") in message


def test_corrupt_idx_file_is_reported(tmp_path):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("fashion-mnist", {"root": str(tmp_path), "download": False})


@pytest.fixture
def served(tmp_path):
    """A local HTTP server on 127.0.0.1 serving a folder; stops by itself after the test."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join(5)


def test_download_checks_sha256_and_falls_back_to_the_next_mirror(tmp_path, served):
    folder, url = served
    source = tmp_path / "source"
    write_mnist(source)
    good = folder / "good"
    bad = folder / "bad"
    good.mkdir()
    bad.mkdir()
    checksums = {}
    for path in source.iterdir():
        (good / path.name).write_bytes(path.read_bytes())
        (bad / path.name).write_bytes(path.read_bytes() + b"tampered")
        checksums[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    root = tmp_path / "cache"
    seen = []
    mask = os.umask(0o022)
    try:
        files = ensure_files("mnist", root, True, [url + "bad/", url + "good/"], checksums,
                             progress=lambda name, done, total: seen.append((name, done,
                                                                             total)))
    finally:
        os.umask(mask)
    assert {oct(p.stat().st_mode & 0o777) for p in files.values()} == {"0o644"}
    assert sorted(p.name for p in files.values()) == sorted(checksums)
    for path in files.values():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == checksums[path.name]
    assert seen and seen[-1][1] == seen[-1][2]
    assert sorted(p.name for p in root.iterdir()) == sorted(checksums)  # no temp files left


def test_download_with_only_wrong_checksums_fails_and_keeps_nothing(tmp_path, served):
    folder, url = served
    write_mnist(folder)
    root = tmp_path / "cache"
    with pytest.raises(IdxError) as info:
        ensure_files("mnist", root, True, [url], {f"{s}.gz": "0" * 64 for s in (
            "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte")})
    assert "expected " + "0" * 64 in str(info.value)
    assert list(root.iterdir()) == []


def test_mnist_downloads_through_its_mirrors_option(tmp_path, served, monkeypatch):
    folder, url = served
    write_mnist(folder)
    from layerlab.core import idx
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    monkeypatch.setitem(idx.SOURCES["mnist"], "sha256", sums)
    d = load_dataset("mnist", {"root": str(tmp_path / "m"), "mirrors": url})
    assert len(d) == 30


def test_csv_numeric_features_with_text_or_number_targets(tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text("a,b,species\n1,2,setosa\n3,4.5,virginica\n\n5,6,setosa\n")
    d = load_dataset("csv", {"path": str(path)})
    assert d.task == "classification" and d.classes == ("setosa", "virginica")
    assert d.y.tolist() == [0, 1, 0] and d.x.tolist() == [[1, 2], [3, 4.5], [5, 6]]
    path.write_text("x,y\n1,0.5\n2,1.5\n3,2.25\n")
    d = load_dataset("csv", {"path": str(path), "target": "y"})
    assert d.task == "regression" and d.y.shape == (3, 1)


def test_csv_bad_rows_are_reported_by_row_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,label\n" + "1,2,0\n" * 10 + "3,abc,1\n")
    with pytest.raises(DatasetError, match=r"bad.csv row 12, column b: 'abc' is not a "
                                           "number"):
        load_dataset("csv", {"path": str(path)})
    path.write_text("a,b,label\n1,2\n")
    with pytest.raises(DatasetError, match="row 2 has 2 values where the header has 3: "
                                           "column label is missing"):
        load_dataset("csv", {"path": str(path)})
    path.write_text("a,b,label\n1,2,0\n")
    with pytest.raises(DatasetError, match="has no column 'z'; its columns are a, b, label"):
        load_dataset("csv", {"path": str(path), "target": "z"})


def test_every_dataset_is_listed_with_shapes_and_classes():
    assert list(DATASETS) == ["spiral", "circles", "xor", "gaussian", "moons", "digits",
                              "mnist", "fashion-mnist", "csv", "imagefolder", "addition",
                              "reverse", "text"]
    for info in DATASETS.values():
        assert info.sample_shape and info.classes and info.description


def test_the_datasets_command_explains_every_option(capsys):
    from layerlab.cli import main

    assert main(["datasets"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # as one line, wrapping aside
    for info in DATASETS.values():
        for option in info.options:
            assert f"{option.name} (default " in out and " ".join(option.help.split()) in out
    assert "layerlab new --data FILE.csv --target COLUMN -o FILE" in out
