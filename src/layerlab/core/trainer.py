"""The training loop: compiles the project, adds the loss node, and trains.

It is the engine behind `layerlab train` and the window. It reports progress as plain,
immutable records to any number of listeners, and obeys pause / resume / single-step /
stop requests from another thread at batch boundaries, so a stopped model is always one
that finished its last step. The same seed gives the same metrics, bit for bit, on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from layerlab.core.atomic import atomic_path
from layerlab.core.compiler import build_loss, build_model, checked, param_counts
from layerlab.core.control import Control
from layerlab.core.datasets import (
    Dataset,
    fit_to_input,
    load_dataset,
    prepare_split,
    project_folder,
    split_indices,
)
from layerlab.core.diagnostics import first_nonfinite_node, layer_grad_norms
from layerlab.core.errors import GraphError
from layerlab.core.fit import check_token_ids
from layerlab.core.idx import Progress
from layerlab.core.memory import machine_memory, memory_problems
from layerlab.core.objective import make_objective
from layerlab.core.optimizer_state import Regularisation
from layerlab.core.project import Project
from layerlab.core.records import (
    EpochRecord,
    HealthRecord,
    Listener,
    Record,
    StateRecord,
    StepRecord,
    TraceRecord,
    TrainingError,
)
from layerlab.core.runtime import pick_device, tune_allocator
from layerlab.core.settings import (
    TrainSettings,
    make_optimizer,
    make_scheduler,
    settings_from,
    with_kernels,
)
from layerlab.core.standardize import adapt
from layerlab.core.tracer import DEFAULT_KEEP, StepRecorder, StepTrace
from layerlab.core.tying import frozen_with
from layerlab.core.weights import WeightsError, match_state, read_torch_file

EVAL_CHUNK = 2048


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of the process group torchrun set up, or (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def draws_random(model: torch.nn.Module) -> bool:
    """Whether training `model` draws random numbers (Dropout and its kin, RReLU, the dropout
    of a recurrent or attention layer): only then is a step's random state kept, to replay a
    failed step exactly."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd | torch.nn.RReLU):
            return True
        p = getattr(module, "dropout", 0.0)
        if isinstance(p, float) and p > 0:
            return True
    return False


class Trainer:
    """One training run of a project; build it, add listeners, call run()."""

    def __init__(self, project: Project, settings: TrainSettings | None = None, *,
                 data: Dataset | None = None, progress: Progress | None = None) -> None:
        self.project = project
        self.settings = s = settings or settings_from(project.training)
        graph = project.graph
        analysis = checked(graph)
        if analysis.loss_node is None:
            raise TrainingError("the graph has no loss node; add one (e.g. CrossEntropyLoss) "
                                "after the output to train it")
        too_large = memory_problems(param_counts(graph, analysis), machine_memory())
        if too_large:
            raise GraphError(too_large)
        try:
            self.device = pick_device(s.device)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        if self.device.type == "cpu":
            tune_allocator()
        input_node = analysis.input_node
        assert input_node is not None and analysis.output_node is not None
        data = data or load_dataset(s.dataset, s.dataset_options, progress,
                                    project_folder(project.path))
        self.data = fit_to_input(data, input_node, analysis.shapes[input_node],
                                 analysis.dtypes[input_node])
        check_token_ids(graph, input_node, self.data)
        loss_type = graph.nodes[analysis.loss_node]["type"]
        loss_module = build_loss(graph)
        assert loss_module is not None
        self.objective = make_objective(loss_type, loss_module.to(self.device),
                                        analysis.output_node,
                                        analysis.shapes[analysis.output_node], self.data)
        self.rank, self.world = distributed_rank()
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        torch.manual_seed(s.seed)
        self.model = build_model(graph).to(self.device)
        self._rng = torch.get_rng_state()  # this run's own random stream (Dropout)
        self._rng_live = False  # the stream is the process's while the loop runs
        self._draws_random = draws_random(self.model)
        self.trainable = self._apply_frozen()
        self.ddp = self._wrap_ddp() if self.world > 1 else None
        self.optimizer = make_optimizer(s, self.trainable, self.device)
        self.scheduler = make_scheduler(s, self.optimizer)
        self.penalised = [p for p in self.trainable if p.dim() >= 2]
        train_idx, val_idx = split_indices(len(self.data), s.validation_split, s.seed)
        if len(train_idx) < self.world:
            raise TrainingError(f"dataset {self.data.name} has {len(self.data)} samples; a "
                                f"validation split of {s.validation_split:g} leaves "
                                f"{len(train_idx)} to train on"
                                + (f" in {self.world} processes" if self.world > 1 else "")
                                + "; lower the validation split or add samples")
        self.data = prepare_split(self.data, train_idx)  # missing cells from training rows
        self.x_train, self.y_train = self._to_device(train_idx)
        self._adapted = False  # Standardize nodes get their statistics at the first step
        self.x_val, self.y_val = self._to_device(val_idx)
        self.shuffle = torch.Generator().manual_seed(s.seed + 1)
        self.control = Control()
        self.listeners: list[Listener] = []
        self.history: list[EpochRecord] = []
        self.epoch = 0  # completed epochs
        self.batch = 0  # completed batches in the current epoch
        self.step = 0
        self._epoch_shuffle_state = self.shuffle.get_state()
        self._order: torch.Tensor | None = None
        self._epoch_seconds = 0.0  # training time so far in this epoch
        self._mark = time.perf_counter()  # since when training time is being counted
        self._epoch_loss = 0.0
        self._epoch_samples = 0
        self._last_time = 0.0
        self._rate = 0.0
        self._trace_requested = False
        self.trace_keep = DEFAULT_KEEP
        self.health_every = 0  # steps between HealthRecords; 0: never

    # -- set-up -----------------------------------------------------------------------
    def _apply_frozen(self) -> list[torch.nn.Parameter]:
        """The parameters to train; an optimizer with none is refused here in words, as
        torch would refuse it with "optimizer got an empty parameter list". A layer may
        freeze parameters of its own (a LoRA Linear's W and b): they stay frozen."""
        trainable, frozen_nodes = [], []
        graph = self.project.graph
        tied = frozen_with(graph)  # a tied table is also the weight of these nodes
        for name, param in self.model.named_parameters():  # a shared Parameter once
            node = name.split(".", 1)[0]
            users = tied.get(name, [node])
            frozen = any(graph.nodes[n].get("frozen") for n in users) or not param.requires_grad
            param.requires_grad_(not frozen)
            if not frozen:
                trainable.append(param)
            elif node not in frozen_nodes:
                frozen_nodes.append(node)
        if not trainable:
            raise TrainingError(
                f"every layer with weights is frozen ({', '.join(frozen_nodes)}): unfreeze one "
                "to train" if frozen_nodes else "the network has no weights to train: add a "
                "layer with weights, such as Linear or Conv2d")
        return trainable

    def _wrap_ddp(self) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    def _to_device(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.x[idx].to(self.device), self.data.y[idx].to(self.device)

    @property
    def batches_per_epoch(self) -> int:
        """Global batches: under DDP each of `world` processes takes a shard of each, and a
        last batch too small to give every process a sample is dropped."""
        n, per_batch = len(self.x_train), self.settings.batch_size * self.world
        full, rest = divmod(n, per_batch)
        return max(1, full + (1 if rest >= self.world else 0))

    def _shard(self, batch: int) -> torch.Tensor:
        assert self._order is not None
        per_batch = self.settings.batch_size * self.world
        chunk = self._order[batch * per_batch:(batch + 1) * per_batch]
        return chunk if self.world == 1 else chunk.tensor_split(self.world)[self.rank]

    def request_trace(self, keep: int = DEFAULT_KEEP) -> None:
        """Record the next step node by node; it trains exactly as an untraced step would."""
        self.trace_keep = keep
        self._trace_requested = True

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def _emit(self, record: Record) -> None:
        for listener in self.listeners:
            listener(record)

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> str:
        """Train until the last epoch or a stop; returns 'finished' or 'stopped'.
        Raises TrainingError (after a 'failed' record) when the run cannot go on."""
        self._emit(StateRecord("running"))
        self._last_time = self._mark = time.perf_counter()
        try:
            with self._own_rng():
                while self.epoch < self.settings.epochs:
                    if not self.control.wait_turn(lambda: self._emit(StateRecord("paused")),
                                                  self._resumed):
                        self._emit(StateRecord("stopped"))
                        return "stopped"
                    if self.control.paused:  # one step while paused: the wait is no training
                        self._mark = time.perf_counter()
                    self._next_batch()
        except TrainingError as exc:
            self._emit(StateRecord("failed", str(exc)))
            raise
        self._emit(StateRecord("finished"))
        return "finished"

    def _resumed(self) -> None:
        self._mark = time.perf_counter()
        self._emit(StateRecord("running"))

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        """This run's random stream is the process's while the loop runs: other runs in
        this process must not shift ours (swapped once per run, not per step)."""
        if self._rng_live:
            yield
            return
        torch.set_rng_state(self._rng)
        self._rng_live = True
        try:
            yield
        finally:
            self._rng_live = False
            self._rng = torch.get_rng_state()

    @property
    def rng_state(self) -> torch.Tensor:
        """The run's random stream where it stands now."""
        return torch.get_rng_state() if self._rng_live else self._rng

    def train_one_batch(self) -> None:
        """Take the next batch of the epoch and train on it (finishing the epoch after its
        last batch). run() is this in a loop; step-through calls it directly."""
        self._mark = time.perf_counter()
        with self._own_rng():
            self._next_batch()

    def _next_batch(self) -> None:
        if not self._adapted:  # after any weights were loaded: only fresh nodes adapt
            adapt(self.model, self.project.graph, self.x_train)
            self._adapted = True
        if not self.model.training:
            self.model.train()
        if self.batch == 0:
            self._epoch_shuffle_state = self.shuffle.get_state()
            self._order = None
        if self._order is None:  # a new epoch, or resumed mid-epoch from a checkpoint
            self.shuffle.set_state(self._epoch_shuffle_state)
            self._order = torch.randperm(len(self.x_train), generator=self.shuffle).to(
                self.device)
        batches = self.batches_per_epoch
        idx = self._shard(self.batch)
        loss, samples = self._train_step(self.x_train[idx], self.y_train[idx],
                                         last=self.batch == batches - 1)
        self.batch += 1
        self.step += 1
        self._epoch_loss += loss * samples
        self._epoch_samples += samples
        now = time.perf_counter()
        if self.listeners:
            self._emit(StepRecord(self.epoch + 1, self.step, self.batch, batches, loss,
                                  self._throughput(samples, now), self.current_lr))
        self._epoch_seconds += now - self._mark
        self._mark = now
        if self.batch == batches:
            self._finish_epoch()
            self._mark = time.perf_counter()  # evaluation and saving are not training

    def trace_next_batch(self, keep: int = DEFAULT_KEEP) -> StepTrace:
        """Train on the next batch and return that step recorded node by node."""
        traces: list[StepTrace] = []

        def catch(record: Record) -> None:
            if isinstance(record, TraceRecord):
                traces.append(record.trace)

        self.listeners.append(catch)
        try:
            self.request_trace(keep)
            self.train_one_batch()
        finally:
            self.listeners.remove(catch)
        return traces[0]

    def _throughput(self, samples: int, now: float) -> float:
        if not self._last_time:  # a batch outside run(): no earlier step to measure from
            self._last_time = now - 1e-3
        rate = samples / max(now - self._last_time, 1e-9)
        self._last_time = now
        self._rate = rate if self._rate == 0 else 0.9 * self._rate + 0.1 * rate
        return self._rate

    @property
    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _train_step(self, xb: torch.Tensor, yb: torch.Tensor,
                    last: bool) -> tuple[float, int]:
        """One step; returns the batch's mean loss and sample count (over all processes)."""
        s = self.settings
        rng = torch.get_rng_state() if self._draws_random else None
        recorder = None
        if self._trace_requested:
            self._trace_requested = False
            recorder = StepRecorder(self.model, self.project.graph, keep=self.trace_keep,
                                    optimizer=self.optimizer,
                                    regularisation=Regularisation(s.l1, s.l2, s.clip_grad_norm))
            recorder.trace.vocab = self.data.vocab  # labels of attention maps' positions
        if s.precision == "bfloat16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                output = recorder.forward(xb) if recorder else (self.ddp or self.model)(xb)
        else:
            output = recorder.forward(xb) if recorder else (self.ddp or self.model)(xb)
        loss = self.objective.loss(output.float(), self.objective.target(yb))
        value, samples = self._reduce(loss.detach(), len(xb))
        if not math.isfinite(value):
            raise TrainingError(self._nonfinite_message(xb, rng, value))
        if recorder:
            recorder.watch(loss, yb, self.objective.target(yb))
        total = loss + self.penalty() if s.l1 or s.l2 else loss
        (total * self._group_share(len(xb)) if s.accumulate > 1 else total).backward()
        if recorder:
            recorder.after_backward()
        if (self.batch + 1) % s.accumulate == 0 or last:
            self._update(recorder)
        if recorder:
            self._emit(TraceRecord(self.epoch + 1, self.step + 1, recorder.finish(len(xb))))
        return value, samples

    def _group_share(self, samples: int) -> float:
        """This batch's share of the samples of its accumulation group, so that the group
        makes exactly the step one batch of all its samples would (a short last group or
        batch of the epoch included)."""
        k = self.settings.accumulate
        first = self.batch - self.batch % k
        group = range(first, min(first + k, self.batches_per_epoch))
        return samples / sum(len(self._shard(b)) for b in group)

    def _reduce(self, loss: torch.Tensor, samples: int) -> tuple[float, int]:
        """The mean loss over every process's shard, and whether any process was asked to
        stop (so that all stop at the same step and none waits forever)."""
        if self.world == 1:
            return loss.item(), samples
        import torch.distributed as dist

        packed = torch.stack([loss.float() * samples,
                              torch.tensor(float(samples), device=loss.device),
                              torch.tensor(float(self.control.stopping), device=loss.device)])
        dist.all_reduce(packed)
        total, count, stopping = packed.tolist()
        if stopping:
            self.control.stop()
        return total / count, int(count)

    def _update(self, recorder: StepRecorder | None) -> None:
        s = self.settings
        if s.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.trainable, s.clip_grad_norm)
        health = self.health_every and (self.step + 1) % self.health_every == 0
        if health:
            params = dict(self.model.named_parameters())
            grads = {k: float(p.grad.norm()) for k, p in params.items() if p.grad is not None}
            before = {k: params[k].detach().clone() for k in grads}
        if recorder:
            recorder.before_update()
        self._optimizer_step()
        if recorder:
            recorder.after_update()
        for param in self.trainable:  # optimizer.zero_grad(set_to_none=True), minus its wrappers
            param.grad = None
        if health:
            ratios = {k: float((params[k].detach() - w).norm() / w.norm())
                      for k, w in before.items() if bool(w.any())}
            self._emit(HealthRecord(self.step + 1, layer_grad_norms(grads), ratios))

    def _optimizer_step(self) -> None:
        """optimizer.step(), without the profiler annotation torch wraps around it (25 µs and
        more a step here, a fifth of a spiral step) unless a profiler, a hook or a step of
        the instance's own (other than the scheduler's, which notes the call) is there."""
        opt = self.optimizer
        raw = getattr(type(opt).step, "__wrapped__", None)
        own = vars(opt).get("step")
        hooked = (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                  or _global_optimizer_pre_hooks or _global_optimizer_post_hooks
                  or (own is not None and not hasattr(own, "_wrapped_by_lr_sched")))
        if raw is None or hooked or torch.autograd.profiler._is_profiler_enabled:
            opt.step()
            return
        raw(opt)
        opt._opt_called = True  # type: ignore[attr-defined]  # as the scheduler's patch notes

    def penalty(self) -> torch.Tensor | float:
        """λ₁·Σ|w| + λ₂·Σw² over the trainable weight matrices (not biases or norm scales)."""
        s, total = self.settings, 0.0
        if s.l1:
            total = total + s.l1 * sum(p.abs().sum() for p in self.penalised)
        if s.l2:
            total = total + s.l2 * sum(p.pow(2).sum() for p in self.penalised)
        return total

    def _nonfinite_message(self, xb: torch.Tensor, rng: torch.Tensor | None,
                           value: float) -> str:
        where = f"epoch {self.epoch + 1}, step {self.step + 1}"
        if xb.is_floating_point() and not bool(torch.isfinite(xb).all()):
            return f"training stopped at {where}: the input data contain NaN or infinity"
        culprit = first_nonfinite_node(self.model, xb, rng)
        lr = f"{self.current_lr:g}"
        if culprit is None:
            return (f"training stopped at {where}: the loss became {value} although every "
                    f"node's output is finite; lower the learning rate (now {lr})")
        typ = self.project.graph.nodes[culprit]["type"]
        return (f"training stopped at {where}: the loss became {value}; the first "
                f"non-finite output is {culprit}'s ({typ}); lower the learning rate "
                f"(now {lr}) or add normalisation")

    def _finish_epoch(self) -> None:
        train_loss = self._epoch_loss / max(self._epoch_samples, 1)
        val_loss, val_acc = self.evaluate(self.x_val, self.y_val)
        scores = self.regression_scores(self.x_val, self.y_val)
        val_r2 = None if scores is None else scores[0]
        record = EpochRecord(self.epoch + 1, self.step, train_loss, val_loss, val_acc,
                             self._epoch_seconds, val_r2, self._epoch_samples)
        self.epoch += 1
        self.batch = 0
        self._epoch_loss, self._epoch_samples, self._epoch_seconds = 0.0, 0, 0.0
        if self.scheduler is not None:
            self.scheduler.step()
        self.history.append(record)
        self._emit(record)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float | None, float | None]:
        """Mean loss and accuracy (None for regression) in evaluation mode."""
        if len(x) == 0:
            return None, None
        self.model.eval()
        total, correct = 0.0, 0
        try:
            for start in range(0, len(x), EVAL_CHUNK):
                xb, yb = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
                out = self.model(xb).float()
                total += self.objective.loss(out, self.objective.target(yb)).item() * len(xb)
                hits = self.objective.correct(out, yb)
                correct = correct + hits if hits is not None else -1
        finally:
            self.model.train()
        return total / len(x), (correct / len(x) if correct >= 0 else None)

    @torch.no_grad()
    def regression_scores(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float] | None:
        """(R², mean squared error) of a regression, R² the mean over target columns as in
        scikit-learn's r2_score; None for classification or fewer than two samples."""
        if self.objective.encoding != "values" or len(x) < 2:
            return None
        self.model.eval()
        try:
            out = torch.cat([self.model(x[i:i + EVAL_CHUNK]).float()
                             for i in range(0, len(x), EVAL_CHUNK)])
        finally:
            self.model.train()
        target = y.float().reshape(out.shape)
        residual = (target - out).pow(2).sum(0)
        total = (target - target.mean(0)).pow(2).sum(0)
        scores = torch.where(total > 0, 1 - residual / total.clamp_min(1e-30),
                             torch.zeros_like(total))
        return float(scores.mean()), float(residual.sum() / target.numel())

    # -- checkpoints ------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the run is: weights, optimizer,
        schedule, position, random streams. Loads with torch.load(weights_only=True)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "position": {"epoch": self.epoch, "batch": self.batch, "step": self.step,
                         "epoch_loss": self._epoch_loss, "epoch_samples": self._epoch_samples,
                         "epoch_seconds": self._epoch_seconds},
            "rng": self.rng_state,
            "shuffle": self.shuffle.get_state(),
            "epoch_shuffle": self._epoch_shuffle_state,
            "history": [asdict(r) for r in self.history],
        }

    def save_checkpoint(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.checkpoint(), tmp)

    def load_checkpoint(self, path: Path) -> None:
        """Continue a run from its checkpoint.pt; TrainingError names the file and what is
        wrong with it in one sentence (a foreign file is refused before anything is read
        into this run)."""
        needed = ("model", "optimizer", "scheduler", "position", "rng", "shuffle",
                  "epoch_shuffle", "history")
        try:
            state = read_torch_file(path, "a run's checkpoint", self.device)
        except WeightsError as exc:
            raise TrainingError(str(exc)) from None
        if not isinstance(state, dict) or any(k not in state for k in needed):
            tensors = isinstance(state, dict) and all(isinstance(v, torch.Tensor)
                                                      for v in state.values())
            what = "only weights" if tensors else "something else"
            raise TrainingError(f"{path} is not a run's checkpoint: it holds {what}, not the "
                                "optimizer state and position that a checkpoint.pt has")
        _, report = match_state(self.model, state["model"])
        if report.skipped or report.missing:
            raise TrainingError(f"{path} is the checkpoint of another model: "
                                f"{report.mismatch()}")
        def settings_of(optimizer_state: Any) -> list[set[str]] | None:  # the class's knobs
            groups = optimizer_state.get("param_groups") if isinstance(optimizer_state,
                                                                       dict) else None
            return [set(g) - {"params"} for g in groups] if isinstance(groups, list) else None

        if settings_of(state["optimizer"]) != settings_of(self.optimizer.state_dict()):
            raise TrainingError(f"{path} was written with another optimizer than this run's "
                                f"({self.settings.optimizer})")
        try:
            self.optimizer.load_state_dict(with_kernels(state["optimizer"], self.optimizer))
            if self.scheduler is not None and state["scheduler"]:
                self.scheduler.load_state_dict(state["scheduler"])
            self.model.load_state_dict(state["model"])
            pos = state["position"]
            self._rng = state["rng"].cpu()
            self.shuffle.set_state(state["shuffle"].cpu())
            self._epoch_shuffle_state = state["epoch_shuffle"].cpu()
            self._order = None
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise TrainingError(f"{path} does not fit this run (another optimizer or "
                                f"schedule?): {first}") from None
        self.epoch, self.batch, self.step = pos["epoch"], pos["batch"], pos["step"]
        self._epoch_loss, self._epoch_samples = pos["epoch_loss"], pos["epoch_samples"]
        self._epoch_seconds = pos.get("epoch_seconds", 0.0)  # older checkpoints lack it
        self.history = [EpochRecord(**r) for r in state["history"]]
