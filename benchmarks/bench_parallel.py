"""What each `--parallel` strategy holds per process and what a step costs, on 2 CPU processes.

    .venv/bin/python benchmarks/bench_parallel.py [--steps 15] [--width 2048]

Trains a 2-W-W-W-W-2 MLP (Adam, 128 samples a global batch) on the spiral, once in one
process, then under `torchrun --nproc_per_node=2` with ddp, fsdp and pipeline (2 stages, 2
micro-batches), each process taking one torch thread. Per process it prints the seconds a
step (median after 3 warm-up steps), the bytes of model state it holds (parameters, their
gradients and Adam's two moments; rank 0's whole copy for writing counted apart), the peak
resident memory grown since start-up, and the bytes each step sends, counted from the
strategy's collectives (ring all-reduce 2(N-1)/N of the gradients; FSDP all-gathers the
weights for the forward and again for the backward and reduce-scatters the gradients,
3(N-1)/N; pipeline sends each micro-batch's activation forward and its gradient back).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed.fsdp
import torch.distributed.pipelining  # every run loads the same modules before measuring

WORKER = "--worker"


def project(width: int, batch: int):
    from layerlab.core.project import FORMAT, VERSION, Project

    nodes = [{"id": "input", "type": "Input", "params": {"shape": [2]}}]
    sizes = [width] * 4 + [2]
    for i, size in enumerate(sizes):
        nodes.append({"id": f"fc{i}", "type": "Linear", "params": {"out_features": size}})
        if i < len(sizes) - 1:
            nodes.append({"id": f"act{i}", "type": "Tanh", "params": {}})
    nodes.append({"id": "loss", "type": "CrossEntropyLoss", "params": {}})
    edges = [{"source": a["id"], "target": b["id"]} for a, b in itertools.pairwise(nodes)]
    graph = {"directed": True, "multigraph": False, "graph": {}, "nodes": nodes,
             "edges": edges}
    training = {"dataset": {"name": "spiral", "options": {"n_samples": 4096},
                            "validation_split": 0.0},
                "optimizer": {"name": "adam", "lr": 0.001}, "batch_size": batch,
                "epochs": 1, "seed": 0, "device": "cpu"}
    return Project.from_dict({"format": FORMAT, "version": VERSION, "name": "bench",
                              "graph": graph, "training": training})


def held_bytes(trainer) -> int:
    """Parameters, gradients (as large as the trainable parameters) and optimizer state
    this process keeps for training (its shards under fsdp, its stage under pipeline)."""
    from torch.distributed.tensor import DTensor

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if isinstance(t, DTensor) else t

    module = getattr(trainer, "train_module", trainer.model)
    params = sum(local(p).numel() * 4 for p in module.parameters())
    grads = sum(local(p).numel() * 4 for p in trainer.trainable)
    moments = sum(local(v).numel() * v.element_size() for s in trainer.optimizer.state.values()
                  for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
    return params + grads + moments


def worker(strategy: str, steps: int, width: int) -> None:
    from layerlab.core.parallel import ParallelTrainer
    from layerlab.core.settings import settings_from
    from layerlab.core.trainer import Trainer

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    batch = 128 // world if strategy in ("ddp", "fsdp") else 128
    p = project(width, batch)
    settings = settings_from(p.training)
    if strategy in ("fsdp", "pipeline"):
        trainer = ParallelTrainer(p, settings, strategy=strategy)
        trainer.distribute()
    else:
        trainer = Trainer(p, settings)
    sent = count_sent(trainer, world)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_one_batch()
        times.append(time.perf_counter() - start)
    whole = getattr(trainer, "full", None)
    copy = (sum(t.numel() * 4 for t in whole.state_dict().values())
            if whole is not None and trainer.rank == 0 and strategy == "fsdp" else 0)
    params = sum(p.numel() for p in trainer.full.parameters()) if whole is not None else sum(
        p.numel() for p in trainer.model.parameters())
    report = {"strategy": strategy, "rank": trainer.rank, "world": world,
              "step_ms": 1000 * statistics.median(times[3:]),
              "held_mb": held_bytes(trainer) / 2**20, "copy_mb": copy / 2**20,
              "peak_rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                     - base_rss) / 1024,
              "sent_mb": sent[0] / steps / 2**20,
              "formula_mb": sent_bytes(strategy, params, world, width) / 2**20}
    out = Path(os.environ["BENCH_OUT"]) / f"{strategy}-{trainer.rank}.json"
    out.write_text(json.dumps(report))
    if world > 1:
        torch.distributed.destroy_process_group()


def count_sent(trainer, world: int) -> list[float]:
    """Bytes this process sends, counted at the collectives the strategy calls: DDP's
    gradient buckets (a comm hook), FSDP2's all-gathers and reduce-scatters, the
    pipeline's point-to-point sends; a ring collective sends (N-1)/N of its data per
    pass, an all-reduce two passes."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    total = [0.0]
    if world == 1:
        return total
    share = (world - 1) / world

    def size(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    def wrap(name: str, measure) -> None:
        original = getattr(dist, name)

        def counted(*args, **kwargs):
            total[0] += measure(*args, **kwargs)
            return original(*args, **kwargs)
        setattr(dist, name, counted)
        setattr(c10d, name, counted)  # P2POp checks its op against c10d's own names

    wrap("all_gather_single", lambda out, inp, **_: share * size(out))
    wrap("reduce_scatter_single", lambda output, input, **_: share * size(input))
    wrap("isend", lambda tensor, *_, **__: size(tensor))
    if trainer.ddp is not None and hasattr(trainer.ddp, "register_comm_hook"):
        def hook(state, bucket):
            total[0] += 2 * share * size(bucket.buffer())
            return default_hooks.allreduce_hook(state, bucket)
        trainer.ddp.register_comm_hook(None, hook)
    return total


def sent_bytes(strategy: str, params: int, world: int, width: int) -> float:
    """Bytes one process should send a step by the strategy's collectives (float32)."""
    if world == 1:
        return 0.0
    share = (world - 1) / world
    if strategy == "ddp":
        return 2 * share * params * 4
    if strategy == "fsdp":
        return 3 * share * params * 4
    return 128 * width * 4  # one activation [128, W] each way, over all micro-batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--width", type=int, default=2048)
    args, rest = parser.parse_known_args()
    if rest[:1] == [WORKER]:
        worker(rest[1], args.steps, args.width)
        return
    here = Path(__file__).resolve()
    torchrun = Path(sys.executable).parent / "torchrun"
    common = ["--steps", str(args.steps), "--width", str(args.width), WORKER]
    runs = [[sys.executable, str(here), *common, "single"]]
    runs += [[str(torchrun), "--standalone", "--nproc_per_node=2", str(here), *common, s]
             for s in ("ddp", "fsdp", "pipeline")]
    print(f"{'strategy':<10}{'rank':>5}{'ms/step':>9}{'held MB':>9}{'+copy MB':>9}"
          f"{'peak RSS +MB':>13}{'sent MB/step':>13}{'formula':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for cmd in runs:
            subprocess.run(cmd, capture_output=True, check=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "BENCH_OUT": folder})
            for result in sorted(Path(folder).glob(f"{cmd[-1]}-*.json")):
                show(json.loads(result.read_text()))


def show(r: dict) -> None:
    print(f"{r['strategy']:<10}{r['rank']:>5}{r['step_ms']:>9.1f}{r['held_mb']:>9.1f}"
          f"{r['copy_mb']:>9.1f}{r['peak_rss_growth_mb']:>13.1f}{r['sent_mb']:>13.2f}"
          f"{r['formula_mb']:>9.2f}")


if __name__ == "__main__":
    main()
