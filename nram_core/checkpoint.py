"""Run folders: safetensors weights, JSON config and vocabulary, resumable training state.

A run folder holds
  config.json                  model and train configs, data description
  vocab.json                   the vocabulary the model was trained with
  categories.json              the train split's category names, for a model that reads categories
  weights-eNNNN.safetensors    the weights of epoch NNNN: the latest finished epoch and the best one
  optimizer-eNNNN.pt           the optimizer state of the latest epoch (tensors only; weights_only=True)
  state.json                   THE COMMIT POINT: finished epochs, best epoch, history, and the name
                               and SHA-256 of each file above that the checkpoint consists of
  model.safetensors            the published copy of the best weights (what other tools load)
  metrics.jsonl                one line per epoch and a final line, rewritten from state.json

An epoch is saved by writing its new files under new names, then state.json (atomically); only
then is model.safetensors refreshed, metrics.jsonl rewritten and what no commit names removed.
A crash at any point leaves the last committed checkpoint whole: ``--resume`` restarts from it
(``restore`` checks every file against its hash and publishes again). Runs written before
state.json named its files (``last.safetensors`` and ``optimizer.pt``) still load and resume.
"""
from __future__ import annotations

import hashlib
import math
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, RuntimeConfig, TrainConfig, from_dict, to_dict
from .data.split import CategoryVocab
from .data.text import Vocab
from .data.users import UserVocab
from .families import build_model
from .fileio import DataError, atomic_write_json, atomic_write_text, atomic_write_with, json_text
from .memory import check_budget, parameter_bytes, shapes_only
from .run_info import (CATEGORIES, FORMAT_VERSION, USERS, VOCAB, WEIGHTS, RunInfo, named_file, read_config,
                       read_run_info, read_state, safetensors_shapes)

__all__ = ["FORMAT_VERSION", "Run", "RunInfo", "commit_epoch", "commit_final", "load_optimizer", "load_run",
           "read_config", "read_run_info", "read_state", "restore", "resume", "committed_file", "save_optimizer",
           "save_weights", "slim", "write_config", "write_metrics"]

EPOCH_FILE = re.compile(r"(weights|optimizer)-e\d{4,}\.(safetensors|pt)")
LEGACY_LAST, LEGACY_OPTIMIZER = "last.safetensors", "optimizer.pt"


def save_weights(model: torch.nn.Module, path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "nram"}))


def write_config(run_dir: Path, *, model_config: ModelConfig, train_config: TrainConfig,
                 runtime: RuntimeConfig, data: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "config.json", {
        "format_version": FORMAT_VERSION,
        "model": to_dict(model_config),
        "train": to_dict(train_config),
        "runtime": to_dict(runtime),
        "data": data,
    })


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ---- saving: one commit point ------------------------------------------------------------------
def commit_epoch(run_dir: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 state: dict[str, Any], improved: bool) -> dict[str, Any]:
    """Save epoch ``state["epochs_done"]`` and commit it by writing state.json; returns the
    committed state (with ``files``). Nothing the previous commit names is touched before."""
    epoch = int(state["epochs_done"])
    weights, opt = f"weights-e{epoch:04d}.safetensors", f"optimizer-e{epoch:04d}.pt"
    previous_best = (state.get("files") or {}).get("best")
    try:
        save_weights(model, run_dir / weights)
        save_optimizer(optimizer, run_dir / opt)
        last = {"name": weights, "sha256": file_sha256(run_dir / weights)}
        files = {"last": last, "optimizer": {"name": opt, "sha256": file_sha256(run_dir / opt)},
                 "best": last if improved or previous_best is None else previous_best}
        committed = {**state, "files": files}
        atomic_write_json(run_dir / "state.json", committed)  # the commit point
    except (OSError, RuntimeError, SafetensorError) as exc:  # torch.save says a failed write as RuntimeError
        for name in (weights, opt):  # this epoch's files, which no commit names
            (run_dir / name).unlink(missing_ok=True)
        kept = f"epoch {epoch - 1} is the last committed" if state.get("files") else "nothing was committed"
        message = f"{run_dir}: could not save epoch {epoch} ({_first_line(exc)}); {kept}"
        code = exc.errno if isinstance(exc, OSError) else _os_error_code(str(exc))
        raise (OSError(code, message) if code is not None else OSError(message)) from exc
    publish(run_dir, committed)
    return committed


def _os_error_code(text: str) -> int | None:
    """The errno a library names in its message (safetensors: "... (os error 28)")."""
    found = re.search(r"os error (\d+)", text)
    return int(found.group(1)) if found else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def commit_final(run_dir: Path, state: dict[str, Any]) -> None:
    """Mark the run done (``state["final"]``, then metrics.jsonl's final line) or cancelled
    (``state["cancelled"]``, see ``run_info.run_status``) in state.json."""
    atomic_write_json(run_dir / "state.json", state)
    publish(run_dir, state)


def publish(run_dir: Path, state: dict[str, Any]) -> None:
    """What follows a commit, and can be redone from state.json alone: model.safetensors becomes the
    committed best weights, metrics.jsonl is rewritten, and epoch files no commit names and
    interrupted temp files go."""
    files = state.get("files") or {}
    best = files.get("best")
    if best:
        source, target = _named(run_dir, best.get("name")), run_dir / WEIGHTS
        if source.is_file() and (not target.is_file() or file_sha256(target) != best["sha256"]):
            atomic_write_with(target, lambda tmp: shutil.copyfile(source, tmp))
    write_metrics(run_dir, state)
    named = {entry["name"] for entry in files.values()}
    for path in run_dir.iterdir():
        stray_epoch = EPOCH_FILE.fullmatch(path.name) and path.name not in named and files
        stray_temp = path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file()
        superseded = files and path.name in (LEGACY_LAST, LEGACY_OPTIMIZER)  # a resumed pre-commit-point run
        if stray_epoch or stray_temp or superseded:
            path.unlink(missing_ok=True)


def write_metrics(run_dir: Path, state: dict[str, Any]) -> None:
    """metrics.jsonl from the state: a line per finished epoch, and a final line once the run is done."""
    lines = [json_text({"event": "epoch", **record}) for record in state.get("history", [])]
    final = state.get("final")
    if final is not None:
        lines.append(json_text({"event": "final", **final}))
    atomic_write_text(run_dir / "metrics.jsonl", "".join(line + "\n" for line in lines))


def committed_file(run_dir: Path, role: str) -> Path:
    """The file of ``role`` ("last", "best" or "optimizer") that state.json committed."""
    entry = (read_state(run_dir).get("files") or {}).get(role)
    if not entry:
        raise DataError(f"{run_dir}: state.json commits no {role} checkpoint")
    return _named(Path(run_dir), entry.get("name"))


def slim(run_dir: Path) -> None:
    """Keep only what using the model needs (for shipping a run): drop the epoch files and the
    optimizer state; state.json still records them, and model.safetensors is their best."""
    for path in run_dir.iterdir():
        if EPOCH_FILE.fullmatch(path.name) or path.name in (LEGACY_LAST, LEGACY_OPTIMIZER):
            path.unlink()


# ---- loading -------------------------------------------------------------------------------------
def resume(run_dir: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
           model_config: ModelConfig, vocab: Vocab, categories: CategoryVocab | None,
           users: UserVocab | None = None, main: bool = True) -> dict[str, Any]:
    """Every --resume check (the data's ``vocab`` and ``categories``, the ``model_config``) against
    the saved run, then ``restore``: the last committed state ({} when nothing was committed).
    Reads only, until ``restore`` publishes again on the ``main`` process."""
    if (run_dir / VOCAB).is_file() and Vocab.load(run_dir / VOCAB) != vocab:
        raise DataError(f"{run_dir}: resuming with data whose vocabulary differs from the saved run")
    if (categories is not None and (run_dir / CATEGORIES).is_file()
            and CategoryVocab.load(run_dir / CATEGORIES) != categories):
        raise DataError(f"{run_dir}: resuming with data whose categories differ from the saved run")
    if users is not None and (run_dir / USERS).is_file() and UserVocab.load(run_dir / USERS) != users:
        raise DataError(f"{run_dir}: resuming with data whose users differ from the saved run")
    if not read_state(run_dir):
        return {}
    try:  # through the dataclass: a run saved before a field existed has that field's default
        saved_model = to_dict(from_dict(ModelConfig, read_config(run_dir)["model"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{run_dir / 'config.json'}: missing or bad field ({exc})") from exc
    if saved_model != to_dict(model_config):
        raise DataError(f"{run_dir}: resuming with a different model config than the saved run")
    return restore(run_dir, model=model, optimizer=optimizer, device=device, main=main)


def restore(run_dir: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            device: torch.device, main: bool = True) -> dict[str, Any]:
    """Load the last committed checkpoint into ``model`` and ``optimizer``; returns its state ({}
    when nothing was committed). Every file is checked against the hash state.json recorded.
    ``main``: this process may write (publish again, clean up)."""
    state = read_state(run_dir)
    if not state:
        return {}
    check_resumable_state(run_dir / "state.json", state)
    files = state.get("files")
    if files:
        for role in ("last", "optimizer"):
            entry = files.get(role) or {}
            path = _named(run_dir, entry.get("name"))
            if not path.is_file() or file_sha256(path) != entry.get("sha256"):
                raise DataError(f"{path}: missing or damaged ({role} checkpoint that state.json committed); "
                                "this run cannot be resumed")
        last, opt = run_dir / files["last"]["name"], run_dir / files["optimizer"]["name"]
    else:  # a run folder from before state.json named its files
        last, opt = run_dir / LEGACY_LAST, run_dir / LEGACY_OPTIMIZER
    load_weights(model, last)
    model.to(device)
    load_optimizer(optimizer, opt, device)
    if files:
        if main:
            publish(run_dir, state)
    elif state.get("best_epoch") and (run_dir / WEIGHTS).is_file():
        # The old format's best weights are model.safetensors: name them as an epoch file, so that the
        # next commit keeps them as the best instead of taking the new epoch's.
        best = f"weights-e{int(state['best_epoch']):04d}.safetensors"
        if main:
            atomic_write_with(run_dir / best, lambda tmp: shutil.copyfile(run_dir / WEIGHTS, tmp))
        state = {**state, "files": {"best": {"name": best, "sha256": file_sha256(run_dir / WEIGHTS)}}}
    return state


def check_resumable_state(path: Path, state: dict[str, Any]) -> None:
    """Refuse, in one line naming ``path`` and the field, a state.json the trainer cannot continue
    from: counts that are not whole numbers >= 0, a best epoch past the last, a history of another
    length than the epochs done, a non-finite best AUC, or files and records of the wrong shape."""
    def bad(field: str, why: str) -> DataError:
        return DataError(f"{path}: field {field!r} {why}; this run cannot be resumed")

    for field in ("epochs_done", "global_step", "best_epoch", "stale_epochs"):
        value = state.get(field, 0 if field == "stale_epochs" else None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(field, f"must be a whole number >= 0, got {value!r:.40}")
    if state["best_epoch"] > state["epochs_done"]:
        raise bad("best_epoch", f"is past the last epoch done ({state['best_epoch']} > {state['epochs_done']})")
    history = state.get("history")
    if not isinstance(history, list) or len(history) != state["epochs_done"] \
            or not all(isinstance(record, dict) for record in history):
        raise bad("history", f"must list one record per epoch done ({state['epochs_done']})")
    best_auc = state.get("best_auc")
    if best_auc is not None and (not isinstance(best_auc, (int, float)) or isinstance(best_auc, bool)
                                 or not math.isfinite(best_auc)):
        raise bad("best_auc", f"must be a finite number or null, got {best_auc!r:.40}")
    files = state.get("files")
    if files is not None and not (isinstance(files, dict) and all(
            isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("sha256"), str)
            for entry in files.values())):
        raise bad("files", "must name each committed file with its sha256")
    if state.get("final") is not None and not isinstance(state["final"], dict):
        raise bad("final", "must be an object")


def _named(run_dir: Path, name: object) -> Path:
    """A file that state.json names (``run_info.named_file``); any other name is an error."""
    path = named_file(run_dir, name)
    if path is None:
        raise DataError(f"{run_dir / 'state.json'}: names a checkpoint file {name!r} outside the run folder")
    return path


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Weights into ``model``; the shapes are checked from the file's header before any tensor is read,
    and every value before the model takes them (a NaN or infinite weight is refused, naming its tensor)."""
    expected = {name: list(t.shape) for name, t in model.state_dict().items()}
    check_shapes(path, expected)
    try:
        tensors = load_file(str(path))
    except (RuntimeError, OSError, ValueError, SafetensorError) as exc:
        raise DataError(f"{path}: weights do not fit the config ({str(exc).splitlines()[0]})") from exc
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise DataError(f"{path}: tensor {name!r} holds {bad} NaN or infinite value(s) of {tensor.numel()} "
                            "(weights of a diverged run?)")
    try:
        model.load_state_dict(tensors)
    except (RuntimeError, OSError, ValueError, SafetensorError) as exc:
        raise DataError(f"{path}: weights do not fit the config ({str(exc).splitlines()[0]})") from exc


def check_shapes(path: Path, expected: dict[str, list[int]]) -> None:
    shapes = safetensors_shapes(path)
    for name in sorted(set(expected) | set(shapes)):
        if shapes.get(name) != expected.get(name):
            raise DataError(f"{path}: tensor {name!r} has shape {shapes.get(name)}, but config.json makes "
                            f"{expected.get(name)}")


@dataclass
class Run(RunInfo):
    """A loaded run: what ``read_run_info`` gives, plus the model in eval mode."""

    model: torch.nn.Module  # the family of ``model_config.kind`` (``families.build_model``)


def load_run(run_dir: str | Path, *, device: str | torch.device = "cpu") -> Run:
    """Load a run folder's model without executing any pickled code. The model is first built on
    the meta device, so sizes that disagree with the weights file are refused before any memory
    is allocated for them."""
    info = read_run_info(run_dir)
    with shapes_only():
        skeleton = build_model(info.model_config)
    check_shapes(info.weights_path, {name: list(t.shape) for name, t in skeleton.state_dict().items()})
    try:
        check_budget(2 * parameter_bytes(skeleton), what="this model", settings=())  # built, then loaded
    except DataError as exc:
        raise DataError(f"{info.path}: {exc}") from exc
    check_committed_hash(info)  # after the checks from the header: a file too big to load is never read whole
    model = build_model(info.model_config)
    load_weights(model, info.weights_path)
    model.to(device).eval()
    return Run(**vars(info), model=model)


def check_committed_hash(info: RunInfo) -> None:
    """Refuse weights that are not the ones state.json committed (damaged, or replaced by hand): the
    epoch file it names, or model.safetensors, its published copy, must have the recorded SHA-256.
    Runs from before the commit point record no hash and are taken as they are."""
    best = (info.state.get("files") or {}).get("best") if isinstance(info.state.get("files"), dict) else None
    expected = best.get("sha256") if isinstance(best, dict) else None
    if isinstance(expected, str) and file_sha256(info.weights_path) != expected:
        raise DataError(f"{info.weights_path}: does not match the SHA-256 that state.json committed for the best "
                        f"weights (damaged or replaced)")


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    atomic_write_with(path, lambda tmp: torch.save(optimizer.state_dict(), tmp))


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path, device: torch.device) -> None:
    """Tensors and plain containers only (``weights_only=True``): a pickled payload never runs."""
    try:
        optimizer.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(f"{path}: not an optimizer state this trainer wrote ({_first_line(exc)})") from exc
