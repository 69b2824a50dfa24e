"""Starter projects from `layerlab new` against scikit-learn, on scikit-learn's own tables.

For each table (wine, breast cancer, iris with text labels; diabetes as regression), the
starter project trains with its default settings on the split LayerLab makes, and
scikit-learn's MLPClassifier / MLPRegressor trains on the same training rows after a
StandardScaler fitted on them. Prints accuracy (or R²) per seed and the mean; issue 14 asks
for LayerLab within 2 points of accuracy (0.05 of R²) of scikit-learn.

    python benchmarks/bench_own_data.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch


def write_tables(folder: Path) -> dict[str, Path]:
    """scikit-learn's bundled tables as CSV files (iris with its species names)."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine

    paths = {}
    for name, loader in (("wine", load_wine), ("breast_cancer", load_breast_cancer),
                         ("iris", load_iris), ("diabetes", load_diabetes)):
        bunch = loader()
        path = paths[name] = folder / f"{name}.csv"
        names = getattr(bunch, "target_names", None)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([*bunch.feature_names, "target"])
            for row, t in zip(bunch.data, bunch.target, strict=True):
                label = names[t] if name == "iris" else t
                writer.writerow([*(repr(float(v)) for v in row), label])
    return paths


def layerlab_score(table: Path, seed: int) -> tuple[float, np.ndarray, np.ndarray]:
    """The starter project's validation score, and its (train, validation) indices."""
    from layerlab.core.starter import new_project
    from layerlab.core.trainer import Trainer

    project = new_project(table, table.with_suffix(".layerlab.json"))
    project.path = table.with_suffix(".layerlab.json")
    project.training["seed"] = seed
    trainer = Trainer(project)
    trainer.run()
    last = trainer.history[-1]
    from layerlab.core.datasets import split_indices

    train, val = split_indices(len(trainer.data), trainer.settings.validation_split, seed)
    score = last.val_accuracy if last.val_accuracy is not None else last.val_r2
    assert score is not None
    return float(score), train.numpy(), val.numpy()


def sklearn_score(table: Path, train: np.ndarray, val: np.ndarray, seed: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from layerlab.core.datasets import load_dataset

    data = load_dataset("csv", {"path": str(table)})
    x, y = data.x.numpy(), data.y.numpy()
    regress = data.task == "regression"
    model = MLPRegressor(max_iter=2000, random_state=seed) if regress else \
        MLPClassifier(max_iter=2000, random_state=seed)
    pipe = make_pipeline(StandardScaler(), model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(x[train], y[train].ravel() if regress else y[train])
    return float(pipe.score(x[val], y[val].ravel() if regress else y[val]))


def compare(seeds: int) -> dict[str, tuple[float, float]]:
    """Mean (LayerLab, scikit-learn) score per table over `seeds` splits."""
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, table in write_tables(Path(folder)).items():
            ours, theirs = [], []
            for seed in range(seeds):
                score, train, val = layerlab_score(table, seed)
                ours.append(score)
                theirs.append(sklearn_score(table, train, val, seed))
                print(f"{name:14s} seed {seed}: LayerLab {score:.4f}  scikit-learn "
                      f"{theirs[-1]:.4f}", flush=True)
            results[name] = (float(np.mean(ours)), float(np.mean(theirs)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    results = compare(args.seeds)
    print("\ntable           LayerLab  scikit-learn  difference (accuracy points, or R²)")
    for name, (ours, theirs) in results.items():
        scale = 1 if name == "diabetes" else 100
        print(f"{name:14s}  {ours * scale:8.3f}  {theirs * scale:12.3f}  "
              f"{(ours - theirs) * scale:+8.3f}")


if __name__ == "__main__":
    main()
