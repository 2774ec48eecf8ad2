"""Run folders: safetensors weights, JSON config and vocabulary, resumable training state.

A run folder holds
  config.json        model and train configs, data description
  vocab.json         the vocabulary the model was trained with
  model.safetensors  the weights to use (best dev AUC so far, else the latest epoch)
  last.safetensors   the latest finished epoch, for --resume
  optimizer.pt       optimizer state (tensors only; loaded with weights_only=True)
  state.json         finished epochs, best epoch, history; written last, so it marks a complete checkpoint
  metrics.jsonl      one line per epoch and a final line
Every file is written atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import ModelConfig, TrainConfig, from_dict, to_dict
from .data.text import Vocab
from .fileio import DataError, atomic_write_json, atomic_write_with
from .model import NRAM

FORMAT_VERSION = 1


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
class Run:
    """A loaded run: the model in eval mode plus what it was trained with."""

    path: Path
    model: NRAM
    vocab: Vocab
    model_config: ModelConfig
    train_config: TrainConfig
    data: dict[str, Any]
    state: dict[str, Any]


def read_state(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "state.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{run_dir}: not a run folder (no config.json)") from exc
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def load_run(run_dir: str | Path, *, device: str | torch.device = "cpu", weights: str = "model.safetensors") -> Run:
    """Load a run folder's model without executing any pickled code."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    try:
        model_config = from_dict(ModelConfig, config["model"])
        train_config = from_dict(TrainConfig, config["train"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"{run_dir / 'config.json'}: missing or bad field ({exc})") from exc
    vocab = Vocab.load(run_dir / "vocab.json")
    if len(vocab) != model_config.vocab_size:
        raise DataError(f"{run_dir}: vocab.json has {len(vocab)} words but config says {model_config.vocab_size}")
    weights_path = run_dir / weights
    if not weights_path.is_file():
        raise DataError(f"{run_dir}: no {weights} (was the first epoch finished?)")
    model = NRAM(model_config)
    try:
        state_dict = load_file(str(weights_path))
        model.load_state_dict(state_dict)
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"{weights_path}: weights do not fit the config ({str(exc).splitlines()[0]})") from exc
    model.to(device).eval()
    return Run(path=run_dir, model=model, vocab=vocab, model_config=model_config, train_config=train_config,
               data=config.get("data", {}), state=read_state(run_dir))


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    atomic_write_with(path, lambda tmp: torch.save(optimizer.state_dict(), tmp))


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path, device: torch.device) -> None:
    optimizer.load_state_dict(torch.load(path, map_location=device, weights_only=True))
