"""`layerlab train` against a hand-written PyTorch loop doing the same work on the same data,
whole process against whole process: the MNIST MLP (784-500-10, Adam, lr 0.001, batch 100),
one epoch over 60,000 MNIST-format images (10% held out for validation, evaluated once).

Prints plain/layerlab wall-clock ratios (bar ≥ 0.9), the effect of the allocator setting
on the trainer, and the achieved training FLOP/s against this machine's matmul FLOP/s.
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

PLAIN = textwrap.dedent('''
    import gzip, sys, time
    import numpy as np, torch
    from torch import nn
    start = time.perf_counter()
    root = sys.argv[1]
    def idx(name, offset):
        with gzip.open(f"{root}/{name}.gz", "rb") as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)
    x = torch.from_numpy(idx("train-images-idx3-ubyte", 16).copy()).float().div(255)
    x = x.reshape(-1, 784)
    y = torch.from_numpy(idx("train-labels-idx1-ubyte", 8).astype(np.int64))
    torch.manual_seed(0)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    val, train = order[:6000], order[6000:]
    xt, yt, xv, yv = x[train], y[train], x[val], y[val]
    model = nn.Sequential(nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(1))
    for b in range(0, len(xt), 100):
        idx_b = perm[b:b + 100]
        loss = loss_fn(model(xt[idx_b]), yt[idx_b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    with torch.no_grad():
        model.eval()
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    print(f"plain: {time.perf_counter() - start:.2f}s in-process, val acc {acc:.3f}")
''')


def write_mnist(root: Path) -> None:
    rng = np.random.default_rng(0)
    for stem, shape in (("train-images-idx3-ubyte", (60000, 28, 28)),
                        ("t10k-images-idx3-ubyte", (10000, 28, 28)),
                        ("train-labels-idx1-ubyte", (60000,)),
                        ("t10k-labels-idx1-ubyte", (10000,))):
        high = 10 if "labels" in stem else 256
        array = rng.integers(0, high, shape, dtype=np.uint8)
        header = struct.pack(">BBBB", 0, 0, 8, len(shape)) + struct.pack(f">{len(shape)}I",
                                                                         *shape)
        (root / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes(), 1))


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - start


EPOCH = textwrap.dedent('''
    import sys
    import layerlab
    from layerlab.core.trainer import Trainer
    trainer = Trainer(layerlab.load_project(sys.argv[1]))
    trainer.run()
    print(trainer.history[-1].seconds)
''')


def epoch_seconds(project: Path, tuned: bool) -> float:
    env = {**os.environ, "LAYERLAB_MALLOC_TUNING": "1" if tuned else "0"}
    out = subprocess.run([sys.executable, "-c", EPOCH, str(project)], check=True, env=env,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def machine_matmul_flops() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        runs.append(10 * 2 * 1024**3 / (time.perf_counter() - start))
    return max(runs)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_mnist(tmp)
        project = json.loads((ROOT / "assets/examples/mnist-mlp.layerlab.json").read_text())
        project["training"]["dataset"]["options"] = {"root": str(tmp), "download": False}
        project["training"]["epochs"] = 1
        (tmp / "mnist.layerlab.json").write_text(json.dumps(project))
        (tmp / "plain.py").write_text(PLAIN)
        layerlab = [sys.executable, "-m", "layerlab", "train", str(tmp / "mnist.layerlab.json"),
                    "--out", str(tmp / "run")]
        plain = [sys.executable, str(tmp / "plain.py"), str(tmp)]
        timed(plain)
        ratios = []
        for i in range(5):
            if i % 2:
                t_layerlab, t_plain = timed(layerlab), timed(plain)
            else:
                t_plain, t_layerlab = timed(plain), timed(layerlab)
            ratios.append(t_plain / t_layerlab)
            print(f"round {i + 1}: plain {t_plain:.2f}s, layerlab train {t_layerlab:.2f}s")
        print(f"plain/layerlab whole-process time: {statistics.median(ratios):.3f} "
              f"(median of 5; bar ≥ 0.9)")
        pairs = [(epoch_seconds(tmp / "mnist.layerlab.json", True),
                  epoch_seconds(tmp / "mnist.layerlab.json", False)) for _ in range(5)]
        tuned = statistics.median(p[0] for p in pairs)
        default = statistics.median(p[1] for p in pairs)
        print(f"one training epoch in the trainer: {tuned:.2f}s with the allocator setting, "
              f"{default:.2f}s with glibc's defaults (×{default / tuned:.2f})")
        flops = 3 * 2 * (784 * 500 + 500 * 10) * 54000  # forward + backward ≈ 3× forward
        peak = machine_matmul_flops()
        print(f"training FLOP/s in the epoch: {flops / tuned / 1e9:.1f} GFLOP/s; this "
              f"machine's float32 1024² matmul: {peak / 1e9:.1f} GFLOP/s "
              f"({100 * flops / tuned / peak:.0f}% of it)")


if __name__ == "__main__":
    main()
