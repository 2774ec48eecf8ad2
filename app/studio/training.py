"""One background training run per app process, watched by the Train page.

The trainer runs in a daemon thread that never calls ``st.*``: its callback writes
progress into ``TrainingJob`` under a lock, and the page polls ``snapshot()`` from an
``st.fragment(run_every=...)``. ``loaders.training_job()`` hands every session the same job
object (``st.cache_resource``), so a second start while one runs is refused. The run is set up
by ``nram_core.train.prepare_run``, exactly as the CLI sets one up.
"""
from __future__ import annotations

import copy
import re
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from nram_core.config import ModelConfig, TrainConfig
from nram_core.data.prepare import Layout
from nram_core.fileio import DataError
from nram_core.train import Callback, EpochInfo, StepInfo, Trainer, TrainResult, prepare_run

ACTIVE = ("loading", "running", "stopping")
MAX_LOSS_POINTS = 5000


def run_folder_name(name: str, preset: str, root: Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.") or preset
    base = f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = root / base, 2
    while path.exists():
        path, n = root / f"{base}-{n}", n + 1
    return path


class _Progress(Callback):
    def __init__(self, job: "TrainingJob", job_id: int):
        self.job, self.job_id = job, job_id

    def on_train_start(self, trainer: Trainer) -> None:
        steps = len(trainer.batches)
        cfg = trainer.train_config
        total = steps * cfg.epochs
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        self.job._update(self.job_id, status="running", steps_in_epoch=steps, total_steps=total,
                         samples=trainer.batches.num_samples)

    def on_step(self, trainer: Trainer, info: StepInfo) -> None:
        self.job._step(self.job_id, info)

    def on_epoch_end(self, trainer: Trainer, info: EpochInfo) -> None:
        self.job._epoch(self.job_id, info)

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        pass


class TrainingJob:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trainer: Trainer | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {"job_id": 0, "status": "idle"}

    # ---- read side (script thread) ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._state)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._state["status"] in ACTIVE

    def start(self, *, layout: Layout, model_config: ModelConfig, train_config: TrainConfig, run_dir: Path,
              data_info: dict[str, Any], label: str) -> str | None:
        """Start a run; returns None, or a message saying why it cannot start."""
        with self._lock:
            if self._state["status"] in ACTIVE:
                return (f"A training run is already in progress ({self._state.get('label')}). Only one run "
                        "trains at a time in this app; wait for it to finish or cancel it.")
            job_id = self._state["job_id"] + 1
            self._cancel.clear()
            self._trainer = None
            self._state = {
                "job_id": job_id, "status": "loading", "label": label, "run_dir": str(run_dir),
                "started": time.time(), "finished": None, "epoch": 0, "step": 0, "global_step": 0,
                "steps_in_epoch": 0, "total_steps": 0, "epochs": train_config.epochs, "samples": 0,
                "phase": "loading the data",
                "samples_per_s": 0.0, "losses": [], "loss_steps": [], "epochs_log": [], "error": None,
                "result": None,
            }
            self._thread = threading.Thread(
                target=self._run, name=f"nram-train-{job_id}", daemon=True,
                args=(job_id, layout, model_config, train_config, run_dir, data_info),
            )
            self._thread.start()
        return None

    def cancel(self) -> None:
        """Stop after the current step; the last finished epoch's checkpoint stays on disk."""
        with self._lock:
            if self._state["status"] not in ACTIVE:
                return
            self._state["status"] = "stopping"
            self._cancel.set()
            trainer = self._trainer
        if trainer is not None:
            trainer.request_stop()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ---- write side (training thread) --------------------------------------------------------
    def _update(self, job_id: int, **values: Any) -> None:
        with self._lock:
            if self._state["job_id"] != job_id:
                return
            if values.get("status") == "running" and self._state["status"] == "stopping":
                values.pop("status")
            self._state.update(values)

    def _step(self, job_id: int, info: StepInfo) -> None:
        with self._lock:
            s = self._state
            if s["job_id"] != job_id:
                return
            s.update(epoch=info.epoch, step=info.step, global_step=info.global_step,
                     steps_in_epoch=info.steps_in_epoch, samples_per_s=info.samples_per_s)
            s["losses"].append(float(info.loss))
            s["loss_steps"].append(int(info.global_step))
            if len(s["losses"]) > MAX_LOSS_POINTS:  # keep every other point: bounded memory, same shape
                s["losses"], s["loss_steps"] = s["losses"][::2], s["loss_steps"][::2]

    def _epoch(self, job_id: int, info: EpochInfo) -> None:
        record = {"epoch": info.epoch, "train_loss": info.train_loss, "seconds": info.seconds,
                  "improved": info.improved}
        for k, v in (info.metrics or {}).items():
            if isinstance(v, (int, float)):
                record[k] = v
        with self._lock:
            if self._state["job_id"] == job_id:
                self._state["epochs_log"].append(record)

    def _run(self, job_id: int, layout: Layout, model_config: ModelConfig, train_config: TrainConfig,
             run_dir: Path, data_info: dict[str, Any]) -> None:
        status, error, result_info = "failed", None, None
        try:
            prepared = prepare_run(layout, model_config, train_config,
                                   on_status=lambda text: self._update(job_id, phase=text))
            if self._cancel.is_set():
                status = "cancelled"
                return
            trainer = Trainer(**prepared.trainer_args(), run_dir=run_dir, callbacks=[_Progress(self, job_id)],
                              data_info=data_info)
            with self._lock:
                self._trainer = trainer
            if self._cancel.is_set():
                trainer.request_stop()
            result = trainer.fit()
            result_info = {"epochs_done": result.epochs_done, "best_epoch": result.best_epoch,
                           "metrics": result.metrics, "cancelled": result.cancelled,
                           "stopped_early": result.stopped_early, "global_step": result.global_step}
            status = "cancelled" if result.cancelled or self._cancel.is_set() else "finished"
        except (DataError, ValueError) as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported on the page, never raised into Streamlit
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            kept = (run_dir / "state.json").is_file()
            if not kept and run_dir.is_dir() and status != "finished":
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing finished: leave no half run behind
            with self._lock:
                if self._state["job_id"] == job_id:
                    self._state.update(status=status, error=error, result=result_info, finished=time.time(),
                                       kept=kept)
                self._trainer = None
