"""What a training run tells the world, and how: the ``Callback`` hooks and the records they get.

Torch-free, so that the CLI's progress bar and the app's job import it cheaply. The trainer
calls every hook on its own thread (rank 0 only under torchrun); a hook must be quick.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: importing train would pull in torch
    from .train import Trainer


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


class Callback:
    """Override what you need. Callbacks run on the training thread; they must be quick."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step(self, trainer: Trainer, info: StepInfo) -> None: ...
    def on_epoch_end(self, trainer: Trainer, info: EpochInfo) -> None: ...
    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None: ...
