"""A training run as an app background job (``jobs.BackgroundJob``), watched by the Train page.

The run is set up by ``nram_core.train.prepare_run``, exactly as the CLI sets one up; its
progress reaches the page through a trainer ``Callback`` that writes the job's state.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from nram_core.config import ModelConfig, TrainConfig
from nram_core.data.layout import Layout
from nram_core.train import Callback, EpochInfo, StepInfo, Trainer, prepare_run

from .jobs import BackgroundJob, JobContext

MAX_LOSS_POINTS = 5000


class _Progress(Callback):
    """Trainer progress -> the job's state; a cancel request -> ``trainer.request_stop()``."""

    def __init__(self, context: JobContext):
        self.context = context

    def on_train_start(self, trainer: Trainer) -> None:
        steps = len(trainer.batches)
        cfg = trainer.train_config
        total = steps * cfg.epochs
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        self.context.update(status="running", steps_in_epoch=steps, total_steps=total,
                            samples=trainer.batches.num_samples, precision=trainer.precision)
        if self.context.stop.is_set():
            trainer.request_stop()

    def on_step(self, trainer: Trainer, info: StepInfo) -> None:
        def record(s: dict[str, Any]) -> None:
            s.update(epoch=info.epoch, step=info.step, global_step=info.global_step,
                     steps_in_epoch=info.steps_in_epoch, samples_per_s=info.samples_per_s)
            s["losses"].append(float(info.loss))
            s["loss_steps"].append(int(info.global_step))
            if len(s["losses"]) > MAX_LOSS_POINTS:  # keep every other point: bounded memory, same shape
                s["losses"], s["loss_steps"] = s["losses"][::2], s["loss_steps"][::2]

        self.context.change(record)
        if self.context.stop.is_set():
            trainer.request_stop()

    def on_epoch_end(self, trainer: Trainer, info: EpochInfo) -> None:
        record = {"epoch": info.epoch, "train_loss": info.train_loss, "seconds": info.seconds,
                  "improved": info.improved}
        record.update({k: v for k, v in (info.metrics or {}).items() if isinstance(v, (int, float))})
        self.context.change(lambda s: s["epochs_log"].append(record))
        if self.context.stop.is_set():  # a cancel during the dev evaluation: stop before the next epoch
            trainer.request_stop()


def start_training(job: BackgroundJob, *, layout: Layout, model_config: ModelConfig, train_config: TrainConfig,
                   run_dir: Path, data_info: dict[str, Any], label: str) -> str | None:
    """Start a training run into ``run_dir`` (``run_info.create_run_dir``) on ``job``; returns None, or a
    message saying why it cannot start (and then removes ``run_dir`` if it is still empty)."""

    def work(context: JobContext) -> dict[str, Any] | None:
        completed = False
        try:
            prepared = prepare_run(layout, model_config, train_config,
                                   on_status=lambda text: context.update(phase=text))
            if context.stop.is_set():
                return None
            trainer = Trainer(**prepared.trainer_args(), run_dir=run_dir, callbacks=[_Progress(context)],
                              data_info=data_info)
            result = trainer.fit()
            completed = not result.cancelled
            return {"epochs_done": result.epochs_done, "best_epoch": result.best_epoch, "metrics": result.metrics,
                    "cancelled": result.cancelled, "stopped_early": result.stopped_early,
                    "global_step": result.global_step}
        finally:
            kept = (run_dir / "state.json").is_file()  # written when an epoch is saved
            context.update(kept=kept)
            if not kept and not completed and run_dir.is_dir():
                shutil.rmtree(run_dir, ignore_errors=True)  # no epoch finished: leave no half run behind

    problem = job.start(work, label=label, state={
        "run_dir": str(run_dir), "epoch": 0, "step": 0, "global_step": 0, "steps_in_epoch": 0, "total_steps": 0,
        "epochs": train_config.epochs, "batch_size": train_config.batch_size, "samples": 0,
        "phase": "loading the data", "samples_per_s": 0.0,
        "losses": [], "loss_steps": [], "epochs_log": [], "kept": False})
    if problem and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()  # made for this start, which did not happen
    return problem
