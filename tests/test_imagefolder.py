"""The imagefolder dataset: class sub-folders of PNG/JPEG files, resized, grayscale or RGB,
scaled to [0, 1]; and `layerlab new --data DIR`, whose small CNN learns them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from layerlab.cli import main
from layerlab.core.datasets import DatasetError, load_dataset
from layerlab.core.project import load_project
from layerlab.core.trainer import Trainer

SHAPES = ("bars", "columns", "square")


def picture(kind: str, rng: np.random.Generator, side: int = 20) -> np.ndarray:
    """A noisy RGB picture of horizontal bars, vertical bars or a filled square."""
    img = rng.uniform(0, 60, (side, side, 3))
    if kind == "bars":
        img[::4] += 180
    elif kind == "columns":
        img[:, ::4] += 180
    else:
        img[5:15, 5:15] += 180
    return img.clip(0, 255).astype(np.uint8)


def write_folder(root, per_class: int = 12, side: int = 20):
    rng = np.random.default_rng(0)
    for kind in SHAPES:
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            suffix = "png" if i % 2 else "jpg"
            Image.fromarray(picture(kind, rng, side)).save(root / kind / f"{i}.{suffix}")
    (root / "notes.txt").write_text("not a class")
    return root


def test_images_are_resized_scaled_and_named_by_folder(tmp_path):
    root = write_folder(tmp_path / "shapes", per_class=2)
    gray = load_dataset("imagefolder", {"path": str(root), "size": [8, 10]})
    assert gray.classes == SHAPES and gray.x.shape == (6, 1, 8, 10)
    assert gray.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert float(gray.x.min()) >= 0.0 and float(gray.x.max()) <= 1.0
    rgb = load_dataset("imagefolder", {"path": str(root), "size": [20, 20], "color": "rgb"})
    first = sorted((root / "bars").iterdir())[0]
    expected = np.asarray(Image.open(first).convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(rgb.x[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_a_folder_that_cannot_be_learned_is_named(tmp_path):
    root = write_folder(tmp_path / "shapes", per_class=1)
    for f in (root / "square").iterdir():
        f.unlink()
    with pytest.raises(DatasetError) as info:
        load_dataset("imagefolder", {"path": str(root)})
    assert str(info.value) == (f"{root} cannot be read as an image folder: class folder "
                               f"{root / 'square'} holds no PNG or JPEG images")
    (root / "square" / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(DatasetError, match=r"square/bad\.png cannot be read as an image"):
        load_dataset("imagefolder", {"path": str(root)})


def test_new_from_an_image_folder_writes_a_cnn_that_learns_it(tmp_path, capsys):
    root = write_folder(tmp_path / "shapes")
    out = tmp_path / "shapes.layerlab.json"
    assert main(["new", "--data", str(root), "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    options = data["training"]["dataset"]["options"]
    assert data["training"]["dataset"]["name"] == "imagefolder"
    assert options == {"path": "shapes", "size": [20, 20], "color": "rgb"}
    types = [n["type"] for n in data["graph"]["nodes"]]
    assert types[0] == "Input" and "Conv2d" in types and types[-1] == "CrossEntropyLoss"
    assert data["graph"]["nodes"][0]["params"]["shape"] == [3, 20, 20]
    project = load_project(out)
    project.training["epochs"] = 8
    torch.manual_seed(0)
    trainer = Trainer(project)
    trainer.run()
    assert trainer.history[-1].val_accuracy == 1.0
