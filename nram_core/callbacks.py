"""What a training run tells the world, and how: the ``Callback`` hooks and the records they get.

``nram_core.train.Trainer`` calls every hook on the thread that runs ``Trainer.fit`` (on rank 0 only
under torchrun) and passes itself as ``trainer``; a hook must be quick. This module imports nothing
of the package, train included (so no torch): the hooks type ``trainer`` as ``Any``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepInfo:
    epoch: int  # 1-based
    step: int  # step within the epoch, 1-based
    steps_in_epoch: int
    global_step: int
    loss: float
    samples_per_s: float


@dataclass(frozen=True)
class EpochInfo:
    epoch: int
    train_loss: float
    metrics: dict[str, Any] | None  # dev metrics, None without a dev split
    seconds: float
    improved: bool


@dataclass
class TrainResult:
    epochs_done: int
    global_step: int
    best_epoch: int
    metrics: dict[str, Any] | None  # dev metrics of the model in model.safetensors
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    cancelled: bool = False
    chosen_on: str | None = None  # the split that chose best_epoch: "validation" (carved from train) or "dev"


class Callback:
    """Override what you need; ``trainer`` is the ``nram_core.train.Trainer`` that calls the hook."""

    def on_train_start(self, trainer: Any) -> None: ...
    def on_step(self, trainer: Any, info: StepInfo) -> None: ...
    def on_epoch_end(self, trainer: Any, info: EpochInfo) -> None: ...
    def on_train_end(self, trainer: Any, result: TrainResult) -> None: ...


def seconds_left(*, done_steps: int, total_steps: int, batch_size: int, samples_per_s: float) -> float | None:
    """About how long the remaining training steps take at the measured throughput (dev scoring
    not included); None before there is a measure, or when nothing is left.

    >>> seconds_left(done_steps=10, total_steps=110, batch_size=64, samples_per_s=320.0)
    20.0
    """
    if not done_steps or samples_per_s <= 0 or done_steps >= total_steps:
        return None
    return (total_steps - done_steps) * batch_size / samples_per_s
