"""Run folders: safetensors weights, JSON config and vocabulary, resumable training state.

A run folder holds
  config.json        model and train configs, data description
  vocab.json         the vocabulary the model was trained with
  categories.json    the train split's category names, for a model that reads categories
  model.safetensors  the weights to use (best dev AUC so far, else the latest epoch)
  last.safetensors   the latest finished epoch, for --resume
  optimizer.pt       optimizer state (tensors only; loaded with weights_only=True)
  state.json         finished epochs, best epoch, history; written last, so it marks a complete checkpoint
  metrics.jsonl      one line per epoch and a final line
Every file is written atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, TrainConfig, to_dict
from .fileio import DataError, atomic_write_json, atomic_write_with
from .model import NRAM
from .run_info import FORMAT_VERSION, WEIGHTS, RunInfo, read_config, read_run_info, read_state

__all__ = ["FORMAT_VERSION", "Run", "RunInfo", "load_optimizer", "load_run", "read_config", "read_run_info",
           "read_state", "save_optimizer", "save_weights", "write_config"]


def save_weights(model: torch.nn.Module, path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "nram"}))


def write_config(run_dir: Path, *, model_config: ModelConfig, train_config: TrainConfig,
                 data: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "config.json", {
        "format_version": FORMAT_VERSION,
        "model": to_dict(model_config),
        "train": to_dict(train_config),
        "data": data,
    })


@dataclass
class Run(RunInfo):
    """A loaded run: what ``read_run_info`` gives, plus the model in eval mode."""

    model: NRAM


def load_run(run_dir: str | Path, *, device: str | torch.device = "cpu", weights: str = WEIGHTS) -> Run:
    """Load a run folder's model without executing any pickled code."""
    info = read_run_info(run_dir, weights=weights)
    weights_path = info.path / weights
    model = NRAM(info.model_config)
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except (RuntimeError, OSError, ValueError, SafetensorError) as exc:
        raise DataError(f"{weights_path}: weights do not fit the config ({str(exc).splitlines()[0]})") from exc
    model.to(device).eval()
    return Run(**vars(info), model=model)


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    atomic_write_with(path, lambda tmp: torch.save(optimizer.state_dict(), tmp))


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path, device: torch.device) -> None:
    optimizer.load_state_dict(torch.load(path, map_location=device, weights_only=True))
