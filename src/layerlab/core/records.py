"""What a training run reports, record by record (the window, the command line and the
tests listen to them), and the one error a run raises for a person."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from layerlab.core.tracer import StepTrace


class TrainingError(Exception):
    """A run that cannot start or cannot go on; one sentence for a person."""


@dataclass(frozen=True)
class StepRecord:
    epoch: int  # 1-based
    step: int  # global optimizer-batch count, 1-based
    batch: int  # 1-based within the epoch
    batches: int
    loss: float
    samples_per_s: float
    lr: float


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    step: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float  # training time of the epoch: without evaluation, saving or pauses
    val_r2: float | None = None  # regression: the coefficient of determination
    samples: int = 0  # trained on in the epoch, over all processes

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class TraceRecord:
    """A step recorded node by node (asked for with Trainer.request_trace)."""

    epoch: int
    step: int
    trace: StepTrace


@dataclass(frozen=True)
class HealthRecord:
    """Cheap gradient statistics, every `health_every` steps: gradient norm per node and
    ‖Δw‖/‖w‖ per parameter."""

    step: int
    grad_norms: dict[str, float]
    update_ratios: dict[str, float]


@dataclass(frozen=True)
class StateRecord:
    state: str  # running, paused, stopped, finished, failed
    message: str = ""


Record = StepRecord | EpochRecord | StateRecord | TraceRecord | HealthRecord
Listener = Callable[[Record], None]
