"""Sharded (FSDP2) and pipelined training under torchrun, beside DistributedDataParallel.

`ParallelTrainer` is the trainer with the model spread over the processes:

- `fsdp`: torch's FSDP2 (`fully_shard` on each node's module that has weights, then on the
  whole model). Each process keeps 1/N of every parameter, gradient and optimizer state;
  a node's full weights are all-gathered just before its forward and backward, and the
  gradients are reduce-scattered, averaged, back to the shards. As under DDP, each process
  trains on its shard of the batch (`--batch-size` per process).
- `pipeline`: torch.distributed.pipelining. The graph is cut at node boundaries that carry a
  single tensor, into one stage per process, as the canvas shows them (core/stages.py:
  balanced by parameter count or FLOPs, with the cuts a person pinned); the whole batch
  flows through the stages as `--microbatches` micro-batches (GPipe schedule).

Either way the losses equal a single process's with the global batch, to floating-point
rounding, unless the model draws random numbers (Dropout): each process then draws its own
masks, as under DDP, and the runs agree only in distribution. Refused, in one sentence: a
mix of device kinds; under pipeline, BatchNorm with several micro-batches (it would
normalise each micro-batch alone), weights tied across stages, bfloat16. Gradient health
(the CLI's warnings) is not gathered under these strategies.

Rank 0 keeps a plain full copy of the model: at the end of each epoch (and when a run stops)
every process sends it its part of the weights and optimizer state, so rank 0 alone
evaluates and writes weights.safetensors and checkpoint.pt with the keys of a single-process
run (which any run, one process or several, can resume).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from layerlab.core.datasets import Dataset
from layerlab.core.idx import Progress
from layerlab.core.project import Project
from layerlab.core.records import Record, StateRecord, TrainingError
from layerlab.core.settings import TrainSettings, make_optimizer, make_scheduler
from layerlab.core.stages import pipeline_plan, stage_modules
from layerlab.core.standardize import adapt
from layerlab.core.trainer import Trainer

STRATEGIES = ("ddp", "fsdp", "pipeline")
Tensors = dict[str, torch.Tensor]


# -- the pipeline's stages --------------------------------------------------------------
def shared_parameters(model: nn.Module) -> dict[str, str]:
    """Nodes whose module shares a parameter with an earlier node's (weight tying)."""
    owner: dict[int, str] = {}
    shared = {}
    for name, module in model.named_children():
        for p in module.parameters():
            if id(p) in owner and owner[id(p)] != name:
                shared[name] = owner[id(p)]
            owner.setdefault(id(p), name)
    return shared


def micro_batches(batch: int, wanted: int) -> int:
    """The number of equal micro-batches a batch splits into: `wanted`, or the largest count
    below it that divides the batch (a pipeline stage expects one micro-batch shape)."""
    return next(d for d in range(min(wanted, batch), 0, -1) if batch % d == 0)


def refusal(strategy: str, model: nn.Module, graph: Any, settings: TrainSettings,
            microbatches: int | None, devices: list[str],
            plan: list[list[str]] | None = None) -> str | None:
    """One sentence for a set-up that `strategy` cannot run as a single process would
    (`plan`: the pipeline's stages, where tied weights must stay within one)."""
    name = f"--parallel {strategy}"
    if len(set(devices)) > 1:
        return (f"{name} needs every process on the same kind of device, but these run on "
                f"{', '.join(sorted(set(devices)))}")
    if strategy != "pipeline":
        return None
    if microbatches is not None and microbatches < 1:
        return "--microbatches must be 1 or more"
    batch_norm = next((n for n, m in model.named_children()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm)), None)
    if batch_norm and (microbatches or len(devices)) > 1:
        return (f"node {batch_norm} ({graph.nodes[batch_norm]['type']}) would normalise each "
                f"micro-batch on its own under {name}, so the run would not equal the whole "
                "batch's; use --microbatches 1 or LayerNorm")
    stage = {node: i for i, names in enumerate(plan or [list(graph)]) for node in names}
    for node, other in shared_parameters(model).items():
        if stage.get(node) != stage.get(other):
            return (f"node {node} shares its weights with node {other}, but they fall in "
                    f"pipeline stages {stage.get(other, 0) + 1} and {stage.get(node, 0) + 1}, "
                    f"which {name} cannot keep in step; clear {node}'s tie_weight or use "
                    "--parallel fsdp")
    if settings.precision == "bfloat16":
        return (f"{name} does not support bfloat16 precision yet; train in float32 or use "
                "--parallel fsdp")
    return None


# -- the trainer --------------------------------------------------------------------------
class ParallelTrainer(Trainer):
    """A Trainer under torchrun with the model sharded (fsdp) or cut into stages (pipeline);
    call distribute() once its starting weights are in place (after --init-weights or a
    resumed checkpoint), before run()."""

    def __init__(self, project: Project, settings: TrainSettings | None = None, *,
                 strategy: str, microbatches: int | None = None, data: Dataset | None = None,
                 progress: Progress | None = None) -> None:
        self.strategy = strategy
        self.microbatches = microbatches
        self._distributed = False
        self.plan: list[list[str]] | None = None  # the pipeline's stages: their layer nodes
        super().__init__(project, settings, data=data, progress=progress)
        self._refuse()
        self.full = self.model  # the whole model: rank 0's copy for evaluating and saving
        self.train_module: nn.Module = self.model
        self._full_optimizer: dict[str, Any] = self.optimizer.state_dict()
        self._schedules: dict[int, Any] = {}
        self._loss_weight = 1.0

    def _wrap_ddp(self) -> None:  # type: ignore[override]
        return None  # the model is spread in distribute(), once its weights are final

    def _refuse(self) -> None:
        """Every process gathers the others' devices and reaches the same verdict, so all
        stop together."""
        if self.world < 2:
            raise TrainingError(f"--parallel {self.strategy} needs several processes: start "
                                "it with torchrun --nproc_per_node=N layerlab train …")
        devices: list[Any] = [None] * self.world
        dist.all_gather_object(devices, str(self.device.type))
        if self.strategy == "pipeline":
            self.plan = self._plan()
        message = refusal(self.strategy, self.model, self.project.graph, self.settings,
                          self.microbatches, devices, self.plan)
        if message:
            raise TrainingError(message)

    def _plan(self) -> list[list[str]]:
        """The stages the canvas shows (core/stages.py): the project's stage count, which
        must be the number of processes, its balance and its pinned starts."""
        training = self.project.training
        planned = training.get("pipeline_stages")
        if planned is not None and planned != self.world:
            raise TrainingError(f"the project plans {planned} pipeline stages "
                                f"(training.pipeline_stages) but torchrun started {self.world} "
                                f"processes; start it with --nproc_per_node={planned}")
        return pipeline_plan(self.project.graph, self.world,
                             training.get("pipeline_balance", "parameters"))

    # -- spreading the model ----------------------------------------------------------
    def distribute(self) -> None:
        """Shard the model or keep this process's stage, with a new optimizer over the
        parameters this process now holds, carrying over any optimizer state loaded."""
        adapt(self.model, self.project.graph, self.x_train)  # Standardize: the full data's
        self._adapted = True
        full_state = self.optimizer.state_dict()
        names = self._trainable_names(self.model)
        if self.strategy == "fsdp":
            self.full = copy.deepcopy(self.model) if self.rank == 0 else self.model
            self.train_module = self._fully_shard(self.model)
            self.ddp = self.train_module
        else:
            assert self.plan is not None
            self.train_module = stage_modules(self.model, self.plan)[self.rank]
        if self.rank != 0:
            self.model = self.train_module  # no whole copy outside rank 0
        else:
            self.model = self.full
        scheduler = self.scheduler
        self.trainable = [p for p in self.train_module.parameters() if p.requires_grad]
        # a stage of frozen nodes only steps an empty tensor: torch refuses no parameters
        held = self.trainable or [nn.Parameter(torch.zeros(0, device=self.device))]
        # sharded (DTensor) parameters have fused kernels for Adam and AdamW only: torch
        # 2.13 refuses fused SGD on them ("no sharding strategy registered")
        fused = self.strategy != "fsdp" or self.settings.optimizer in ("adam", "adamw")
        self.optimizer = make_optimizer(self.settings, held, self.device if fused else None)
        self.scheduler = make_scheduler(self.settings, self.optimizer)
        if scheduler is not None and self.scheduler is not None:
            self.scheduler.load_state_dict(scheduler.state_dict())
        self.penalised = [p for p in self.trainable if p.dim() >= 2]
        self._load_optimizer(full_state, names)
        self._distributed = True

    def _fully_shard(self, model: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.world,))
        tied = shared_parameters(model)  # a tied pair is sharded together, by the root
        for name, module in model.named_children():
            if name not in tied and name not in tied.values() and any(
                    True for _ in module.parameters()):
                fully_shard(module, mesh=mesh)
        return fully_shard(model, mesh=mesh)

    def _trainable_names(self, model: nn.Module) -> list[str]:
        return [n for n, p in model.named_parameters() if p.requires_grad]

    def _load_optimizer(self, full: dict[str, Any], names: list[str]) -> None:
        """Give this process's optimizer its part of a single-process optimizer state."""
        index = {n: i for i, n in enumerate(names)}
        state = {}
        for name, param in self.train_module.named_parameters():
            saved = full["state"].get(index.get(name, -1))
            if saved:
                state[param] = {k: _like(v, param) for k, v in saved.items()}
        group = {k: v for k, v in full["param_groups"][0].items()
                 if k not in ("params", "fused", "foreach")}  # this optimizer's own kernels
        self.optimizer.state.update(state)
        self.optimizer.param_groups[0].update(group)

    # -- gathering on rank 0 ----------------------------------------------------------
    def gather(self) -> None:
        """Every process sends rank 0 its part of the weights and optimizer state; rank 0
        loads them into its whole copy (a collective call: every process makes it)."""
        if self.strategy == "fsdp":
            weights = {k: _full(v) for k, v in self.train_module.state_dict().items()}
            moments = {n: {k: _full(v) for k, v in self.optimizer.state.get(p, {}).items()}
                       for n, p in self.train_module.named_parameters()}
        else:
            parts: list[Any] = [None] * self.world if self.rank == 0 else []
            mine = ({k: v.detach().cpu() for k, v in self.train_module.state_dict().items()},
                    {n: {k: v.detach().cpu() for k, v in self.optimizer.state.get(p, {}).items()}
                     for n, p in self.train_module.named_parameters()})
            dist.gather_object(mine, parts if self.rank == 0 else None, dst=0)
            weights = {k: v for part in parts for k, v in part[0].items()}
            moments = {k: v for part in parts for k, v in part[1].items()}
        if self.rank != 0:
            return
        self.full.load_state_dict(weights)
        names = self._trainable_names(self.full)
        group = {k: v for k, v in self.optimizer.state_dict()["param_groups"][0].items()
                 if k != "params"}
        self._full_optimizer = {
            "state": {i: moments[n] for i, n in enumerate(names) if moments.get(n)},
            "param_groups": [{**group, "params": list(range(len(names)))}]}

    def checkpoint(self) -> dict[str, Any]:
        state = super().checkpoint()
        state["optimizer"] = self._full_optimizer
        return state

    def _finish_epoch(self) -> None:
        self.gather()
        super()._finish_epoch()

    def _emit(self, record: Record) -> None:
        if isinstance(record, StateRecord) and record.state == "stopped" and self._distributed:
            self.gather()  # a run stopped mid-epoch saves the weights it stopped with
        super()._emit(record)

    @property  # type: ignore[override]
    def health_every(self) -> int:
        """Gradient health needs every gradient in one process: off under these strategies."""
        return 0

    @health_every.setter
    def health_every(self, value: int) -> None:
        del value

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float | None, float | None]:
        return super().evaluate(x, y) if self.rank == 0 else (None, None)

    def regression_scores(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float] | None:
        return super().regression_scores(x, y) if self.rank == 0 else None

    def penalty(self) -> torch.Tensor | float:
        """Under FSDP each process adds λ·Σ over its own shards: their gradients are the
        whole penalty's for those shards (the loss's come averaged from the other ranks)."""
        if self.strategy != "fsdp":
            return super().penalty()
        from torch.distributed.tensor import DTensor

        s, total = self.settings, 0.0
        local = [p.to_local() if isinstance(p, DTensor) else p for p in self.penalised]
        if s.l1:
            total = total + s.l1 * sum(p.abs().sum() for p in local)
        if s.l2:
            total = total + s.l2 * sum(p.pow(2).sum() for p in local)
        return total

    def _nonfinite_message(self, xb: torch.Tensor, rng: torch.Tensor | None,
                           value: float) -> str:
        return (f"training stopped at epoch {self.epoch + 1}, step {self.step + 1}: the loss "
                f"became {value}; lower the learning rate (now {self.current_lr:g})")

    # -- the pipeline's step ----------------------------------------------------------
    @property
    def batches_per_epoch(self) -> int:
        if self.strategy != "pipeline":
            return super().batches_per_epoch
        return max(1, math.ceil(len(self.x_train) / self.settings.batch_size))

    def _shard(self, batch: int) -> torch.Tensor:
        """Under pipeline every process sees the whole batch (stage 0 feeds it in)."""
        if self.strategy != "pipeline":
            return super()._shard(batch)
        assert self._order is not None
        size = self.settings.batch_size
        return self._order[batch * size:(batch + 1) * size]

    def _train_step(self, xb: torch.Tensor, yb: torch.Tensor,
                    last: bool) -> tuple[float, int]:
        if self.strategy != "pipeline":
            return super()._train_step(xb, yb, last)
        s = self.settings
        share = self._group_share(len(xb)) if s.accumulate > 1 else 1.0
        self._loss_weight = share / len(xb)
        schedule = self._schedule(len(xb))
        target, losses = self.objective.target(yb), []
        if self.rank == 0:
            schedule.step(xb)
        elif self.rank == self.world - 1:
            schedule.step(target=target, losses=losses)
        else:
            schedule.step()
        mine = torch.stack(losses).sum() / share if losses else torch.zeros((), device=xb.device)
        value, samples = self._reduce(mine.detach(), len(xb) if losses else 0)
        if not math.isfinite(value):
            raise TrainingError(self._nonfinite_message(xb, None, value))
        if (s.l1 or s.l2) and self.penalised:  # a sum: each stage adds its part's gradient
            (self.penalty() * share).backward()
        if (self.batch + 1) % s.accumulate == 0 or last:
            if s.clip_grad_norm:
                self._clip_across_stages(s.clip_grad_norm)
            self._update(None)  # its clip, stage by stage, then finds nothing to clip
        return value, samples

    def _clip_across_stages(self, max_norm: float) -> None:
        """clip_grad_norm_ over gradients that several stages hold: the total norm from
        every stage's squared norms, and torch's coefficient max / (norm + 1e-6) ≤ 1."""
        grads = [p.grad for p in self.trainable if p.grad is not None]
        squares = (torch.stack([g.norm() for g in grads]).pow(2).sum() if grads
                   else torch.zeros((), device=self.device))
        dist.all_reduce(squares)
        if grads:
            torch._foreach_mul_(grads, (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0))

    def _schedule(self, batch: int) -> Any:
        """The GPipe schedule for batches of this size (a stage fixes its micro-batch
        shape on its first step, so a short last batch gets its own)."""
        from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

        if batch not in self._schedules:
            count = micro_batches(batch, self.microbatches or self.world)
            stage = PipelineStage(self.train_module, self.rank, self.world, self.device)
            self._schedules[batch] = ScheduleGPipe(stage, count, loss_fn=self._micro_loss,
                                                   scale_grads=False)
        return self._schedules[batch]

    def _micro_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """A micro-batch's mean loss weighted by its share of the batch: the micro-batches'
        sum is the whole batch's mean, whose gradient the stages then hold."""
        return self.objective.loss(output.float(), target) * (len(output) * self._loss_weight)


def _full(value: Any) -> Any:
    """A sharded (DTensor) value all-gathered whole; anything else as it is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor().cpu() if isinstance(value, DTensor) else value


def _like(value: Any, param: torch.Tensor) -> Any:
    """A whole optimizer-state tensor laid out as `param` is (sharded as it is under FSDP)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(value, torch.Tensor) or value.shape != param.shape:
        return value  # a step count
    if isinstance(param, DTensor):
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value.to(param.device)

