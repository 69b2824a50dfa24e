"""Built-in and file datasets, held in memory as tensors and batched by index.

Every dataset knows its sample shape, its task (class ids or values) and its class names.
Image pixels are scaled to [0, 1] and nothing else, so an exported model sees the same
numbers in any other program. Batching is `randperm` + index slicing, not a per-sample
DataLoader: 4.75× faster for the data (shared/measurements.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerlab.core import imagefolder, tables, text_data
from layerlab.core.idx import IdxError, Progress, ensure_files, read_idx
from layerlab.core.imagefolder import ImageFolderError
from layerlab.core.spec import Param, Shape, fmt_shape
from layerlab.core.tables import TableError, encode, fill_missing, read_table
from layerlab.core.text_data import TextData, TextDataError


class DatasetError(Exception):
    """A dataset that cannot be loaded or does not fit; one sentence for a person."""


@dataclass
class Dataset:
    name: str
    x: torch.Tensor  # (N, *sample_shape), float32 (or int64 token ids)
    y: torch.Tensor  # (N,) int64 class ids, or (N, k) float32 values
    task: str  # "classification" or "regression"
    classes: tuple[str, ...] = ()
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    shapes: tuple[Shape, ...] = field(default=())  # other sample shapes it can be seen as
    features: tuple[str, ...] = ()  # a table's feature names, one-hot columns as `col=value`
    categories: dict[str, list[str]] = field(default_factory=dict)  # a table's text columns
    targets: tuple[str, ...] = ()  # a table's target columns
    missing: torch.Tensor | None = None  # (N, F) bool: cells filled from the training rows
    blocks: tuple[tuple[int, int], ...] = ()  # a table's one-hot column ranges
    vocab: tuple[str, ...] = ()  # text: the character of each token id

    @property
    def sample_shape(self) -> Shape:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    sample_shape: str
    classes: str
    options: tuple[Param, ...]
    load: Callable[[dict[str, Any], Progress | None], Dataset]


def _generated(name: str, noise: float, make: Callable[[np.random.Generator, int, float],
               tuple[np.ndarray, np.ndarray]], classes: tuple[str, ...]):
    def load(opts: dict[str, Any], progress: Progress | None) -> Dataset:
        rng = np.random.default_rng(opts["seed"])
        x, y = make(rng, opts["n_samples"], opts["noise"])
        order = rng.permutation(len(x))
        return Dataset(name, torch.tensor(x[order], dtype=torch.float32),
                       torch.tensor(y[order], dtype=torch.int64), "classification", classes)
    return load


def _spiral(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved arms of 1.75 turns, radius 0 to 1."""
    parts, labels = [], []
    for k, count in enumerate((n // 2, n - n // 2)):
        radius = np.sqrt(rng.uniform(0, 1, count))  # even density along the arm
        angle = 1.75 * 2 * math.pi * radius + k * math.pi
        pts = np.stack([radius * np.sin(angle), radius * np.cos(angle)], 1)
        parts.append(pts + rng.normal(0, noise, pts.shape))
        labels.append(np.full(count, k))
    return np.concatenate(parts), np.concatenate(labels)


def _circles(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """An outer ring (class 0, radius 1) around an inner one (class 1, radius 0.5)."""
    y = np.arange(n) % 2
    angle = rng.uniform(0, 2 * math.pi, n)
    radius = np.where(y == 0, 1.0, 0.5)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    return x + rng.normal(0, noise, x.shape), y


def _xor(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Points in [-1, 1]²; class 1 where x and y have the same sign."""
    x = rng.uniform(-1, 1, (n, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    return x + rng.normal(0, noise, x.shape), y


def _gaussian(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Two round clouds centred at (0.5, 0.5) and (-0.5, -0.5), spread `noise`."""
    y = np.arange(n) % 2
    centres = np.where(y[:, None] == 1, 0.5, -0.5)
    return centres + rng.normal(0, noise, (n, 2)), y


def _moons(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles, as scikit-learn's make_moons."""
    y = np.arange(n) % 2
    angle = rng.uniform(0, math.pi, n)
    x = np.where(y[:, None] == 0, np.stack([np.cos(angle), np.sin(angle)], 1),
                 np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], 1))
    return x + rng.normal(0, noise, x.shape), y


def _digits(opts: dict[str, Any], progress: Progress | None) -> Dataset:
    """scikit-learn's digits, read from the file it ships: what load_digits() reads, in
    35 ms instead of the second or more that importing scikit-learn takes."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    assert spec is not None and spec.submodule_search_locations
    table = np.loadtxt(Path(spec.submodule_search_locations[0]) / "datasets" / "data" /
                       "digits.csv.gz", delimiter=",")  # 64 pixel levels 0–16, then the digit
    levels = torch.tensor(table[:, :-1], dtype=torch.float32)
    return Dataset("digits", levels / 16.0, torch.tensor(table[:, -1], dtype=torch.int64),
                   "classification", tuple(str(d) for d in range(10)), shapes=((1, 8, 8),))


MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def cache_root(name: str, root: str | None) -> Path:
    """Where a downloaded dataset's files live: option `root`, else the user's cache."""
    return Path(root or Path.home() / ".cache" / "layerlab" / name).expanduser()


def _idx_loader(name: str, classes: tuple[str, ...]):
    def load(opts: dict[str, Any], progress: Progress | None) -> Dataset:
        root = cache_root(name, opts["root"])
        mirrors = [m.strip() for m in opts["mirrors"].split(",") if m.strip()] or None
        try:
            files = ensure_files(name, root, opts["download"], mirrors, progress=progress)
            arrays = {stem: read_idx(path) for stem, path in files.items()}
        except IdxError as exc:
            raise DatasetError(str(exc)) from None

        def images(stem: str) -> torch.Tensor:
            pixels = torch.from_numpy(arrays[stem].copy())
            return (pixels.to(torch.float32) / 255.0).unsqueeze(1)

        def labels(stem: str) -> torch.Tensor:
            return torch.from_numpy(arrays[stem].astype(np.int64))

        x, y = images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte")
        tx, ty = images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte")
        if len(x) != len(y) or len(tx) != len(ty):
            raise DatasetError(f"{name} in {root}: the image and label files hold different "
                               "numbers of samples")
        flat = (math.prod(x.shape[1:]),)
        return Dataset(name, x, y, "classification", classes, tx, ty, shapes=(flat,))
    return load


def _csv(opts: dict[str, Any], progress: Progress | None) -> Dataset:
    if not opts["path"]:
        raise DatasetError("the csv dataset needs option path (the CSV file to read)")
    try:
        table = read_table(Path(opts["path"]).expanduser(), opts["header"])
        enc = encode(table, opts)
    except TableError as exc:
        raise DatasetError(str(exc)) from None
    return Dataset("csv", enc.x, enc.y, enc.task, enc.classes, features=enc.features,
                   categories=enc.categories, targets=enc.targets, missing=enc.missing,
                   blocks=enc.blocks)


def _imagefolder(opts: dict[str, Any], progress: Progress | None) -> Dataset:
    try:
        x, y, classes = imagefolder.load(opts, None)
    except ImageFolderError as exc:
        raise DatasetError(str(exc)) from None
    return Dataset("imagefolder", x, y, "classification", classes,
                   shapes=((x[0].numel(),),))


def _text(name: str, make: Callable[[dict[str, Any]], TextData]):
    def load(opts: dict[str, Any], progress: Progress | None) -> Dataset:
        try:
            made = make(opts)
        except TextDataError as exc:
            raise DatasetError(str(exc)) from None
        return Dataset(name, made.x, made.y, "classification", made.classes,
                       vocab=made.vocab)
    return load


def _generated_options(noise: float, n_samples: int = 1000) -> tuple[Param, ...]:
    return (
        Param("n_samples", "int", n_samples, minimum=4, maximum=10_000_000,
              help="Number of points."),
        Param("noise", "float", noise, minimum=0.0, help="Standard deviation of the "
              "Gaussian jitter added to each point."),
        Param("seed", "int", 0, minimum=0, help="Seed of the generator."),
    )


IDX_OPTIONS = (
    Param("root", "text", "", help="Folder of the four IDX files; empty means "
          "~/.cache/layerlab/<name>."),
    Param("download", "bool", True, help="Download missing files (checked by SHA-256)."),
    Param("mirrors", "text", "", help="Comma-separated base URLs to download from instead "
          "of the usual mirrors."),
)

TWO = ("0", "1")
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("spiral", "two interleaved spiral arms", "[2]", "2 (arms)",
                _generated_options(0.05), _generated("spiral", 0.05, _spiral, TWO)),
    DatasetInfo("circles", "a ring around a smaller ring", "[2]", "2 (outer, inner)",
                _generated_options(0.1), _generated("circles", 0.1, _circles, TWO)),
    DatasetInfo("xor", "four quadrants, same sign vs opposite sign", "[2]", "2",
                _generated_options(0.05), _generated("xor", 0.05, _xor, TWO)),
    DatasetInfo("gaussian", "two Gaussian clouds", "[2]", "2",
                _generated_options(0.3), _generated("gaussian", 0.3, _gaussian, TWO)),
    DatasetInfo("moons", "two interleaving half moons", "[2]", "2",
                _generated_options(0.1), _generated("moons", 0.1, _moons, TWO)),
    DatasetInfo("digits", "8×8 handwritten digits (scikit-learn, offline), 1,797 samples",
                "[64] or [1, 8, 8]", "10 (0–9)", (), _digits),
    DatasetInfo("mnist", "28×28 handwritten digits, 60,000 + 10,000 test",
                "[1, 28, 28] or [784]", "10 (0–9)", IDX_OPTIONS,
                _idx_loader("mnist", MNIST_CLASSES)),
    DatasetInfo("fashion-mnist", "28×28 clothing images, 60,000 + 10,000 test",
                "[1, 28, 28] or [784]", "10 (T-shirt/top … Ankle boot)", IDX_OPTIONS,
                _idx_loader("fashion-mnist", FASHION_CLASSES)),
    DatasetInfo("csv", "a table (CSV, TSV, …): number and text feature columns and a "
                "target", "[features; a text column counts once per category]",
                "from the target column (or regression)", tables.OPTIONS, _csv),
    DatasetInfo("imagefolder", "a folder with one sub-folder of PNG/JPEG images per class",
                "[1 or 3, height, width] or flat", "the sub-folders' names",
                imagefolder.OPTIONS, _imagefolder),
    DatasetInfo("addition", "sums written as text, '07+25=032', character tokens",
                "[3·digits + 2] token ids ([3·digits + 3] to classify)",
                "12 characters (next-token) or right/wrong",
                text_data.ADDITION_OPTIONS, _text("addition", text_data.addition)),
    DatasetInfo("reverse", "words and their reverse, 'abca>acba', character tokens",
                "[2·length] token ids ([2·length + 1] to classify)",
                "letters + '>' (next-token) or right/wrong",
                text_data.REVERSE_OPTIONS, _text("reverse", text_data.reverse)),
    DatasetInfo("text", "windows of a UTF-8 text file, character tokens", "[context] token "
                "ids", "the file's characters", text_data.TEXT_OPTIONS,
                _text("text", text_data.text_file)),
)}


def resolve_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options with defaults filled in; DatasetError names any bad one."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    info = DATASETS[name]
    valid = {p.name: p for p in info.options}
    for key, value in options.items():
        if key not in valid:
            choices = ", ".join(valid) or "none"
            raise DatasetError(f"dataset {name} has no option {key!r} (its options: "
                               f"{choices})")
        problem = valid[key].check(value)
        if problem:
            raise DatasetError(f"dataset {name}: option {key} {problem}")
    return {**{p.name: p.default for p in info.options}, **options}


def load_dataset(name: str, options: dict[str, Any] | None = None,
                 progress: Progress | None = None, base: Path | None = None) -> Dataset:
    """Dataset `name` with `options`; a relative option `path` is read from folder `base`
    (the project file's), else from the working folder."""
    opts = resolve_options(name, options or {})
    opts = {**opts, "path": str(data_path(opts["path"], base))} if opts.get("path") else opts
    return DATASETS[name].load(opts, progress)


def data_path(path: str, base: Path | None) -> Path:
    """Option `path` as a place on this machine: relative to `base` when given."""
    p = Path(path).expanduser()
    return base / p if base is not None and not p.is_absolute() else p


def project_folder(path: Path | None) -> Path | None:
    """The folder a project's relative data paths start from: its file's (None: unsaved)."""
    return None if path is None else Path(path).resolve().parent


FILE_DATASETS = ("csv", "imagefolder", "text")


def with_data(training: dict[str, Any], path: str | None, target: str | None = None,
              task: str | None = None) -> dict[str, Any]:
    """A copy of a training section reading the user's data at `path` (a folder: the
    imagefolder dataset; a file: csv, or text where the project reads text), with the csv
    target column and task if given. The same dataset keeps its other options; another
    starts from its defaults."""
    dataset = dict(training["dataset"])
    options = dict(dataset.get("options", {}))
    if path is not None:
        name = "imagefolder" if Path(path).expanduser().is_dir() else \
            "text" if dataset.get("name") == "text" else "csv"
        if name != dataset.get("name"):
            options = {}
        dataset["name"] = name
        options["path"] = str(path)
    if target is not None:
        options["target"] = target
    if task is not None:
        options["task"] = task
    dataset["options"] = options
    return {**training, "dataset": dataset}


def absolute_data(training: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """A copy whose relative data path is made absolute from `base`: for a copy of the
    project saved elsewhere (a run's snapshot), which must still find the data."""
    options = training["dataset"].get("options", {})
    if training["dataset"].get("name") not in FILE_DATASETS or not options.get("path"):
        return training
    path = data_path(options["path"], base).resolve()
    return {**training, "dataset": {**training["dataset"],
                                    "options": {**options, "path": str(path)}}}


def prepare_split(data: Dataset, train_idx: torch.Tensor) -> Dataset:
    """The dataset once its training rows are known: missing cells filled from them."""
    if data.missing is None:
        return data
    return _replace(data, x=fill_missing(data.x, data.missing, data.blocks, train_idx),
                    missing=None)


def fit_to_input(data: Dataset, node: str, shape: Shape, dtype: str) -> Dataset:
    """The dataset seen with the sample shape and dtype the Input node asks for."""
    if dtype == "int64" and data.x.dtype != torch.int64:
        if data.name != "digits":
            raise DatasetError(f"Input node {node} asks for int64 token ids, but dataset "
                               f"{data.name} gives real values")
        data = _replace(data, x=torch.round(data.x * 16).to(torch.int64))  # levels 0–16
    elif dtype != "int64" and data.x.dtype == torch.int64:
        raise DatasetError(f"dataset {data.name} gives token ids, but Input node {node} "
                           "asks for real values; set its dtype to int64")
    if data.sample_shape == shape:
        return data
    if shape in data.shapes:
        new = data.x.reshape(len(data.x), *shape)
        test = None if data.test_x is None else data.test_x.reshape(len(data.test_x), *shape)
        return _replace(data, x=new, test_x=test)
    shown = " or ".join(fmt_shape(s) for s in (data.sample_shape, *data.shapes))
    raise DatasetError(f"dataset {data.name} gives samples of shape {shown}, but Input node "
                       f"{node} expects {fmt_shape(shape)}")


def _replace(data: Dataset, **changes: Any) -> Dataset:
    return Dataset(**{**data.__dict__, **changes})


def split_indices(n: int, validation_split: float, seed: int) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """Deterministic (train, validation) index tensors for a dataset of n samples."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_val = round(n * validation_split)
    if validation_split > 0 and n_val == 0:
        n_val = 1
    return order[n_val:].sort().values, order[:n_val].sort().values
