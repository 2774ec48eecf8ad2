"""The trainer: (K+1)-way softmax over a click and K sampled non-clicks, per-epoch dev
evaluation, atomic checkpoints, resume, early stopping. Progress leaves only through callbacks.

Fast paths: each batch encodes its unique news once (data/batching.py) with its all-padding
title columns cut off (``Batch.trim``), in length-sorted chunks of ``title_chunk`` titles;
DataLoader workers build batches when ``num_workers > 0``; with ``amp``, bf16 matmuls: on CUDA
autocast plus TF32 (and pinned memory with non-blocking copies), on a CPU with native bf16 the
Linear layers' GEMMs; ``compile`` wraps the step in ``torch.compile``; ``fused_adam`` takes
Adam's fused kernel; ``fast_dropout`` draws dropout masks from 16-bit random lanes on CPU. Every
step runs under ``fastpath.StepKernels``, chosen once from the ``RuntimeConfig`` and the device.
``RuntimeConfig.plain_fp32()`` turns them all off: the plain fp32 reference path.

Under torchrun the trainer runs DistributedDataParallel (see ``nram_core.distributed``):
``batch_size`` stays the global batch, each rank trains on its share of it, and only rank 0
evaluates, writes the run folder and calls the callbacks.
"""
from __future__ import annotations

import dataclasses
import math
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from . import distributed, memory
from .callbacks import Callback, EpochInfo, StepInfo, TrainResult
from .config import ModelConfig, RuntimeConfig, TrainConfig
from .data.batching import Batch, Shard, TrainBatches
from .data.layout import Layout
from .data.mind import ReadProgress
from .data.split import (CategoryVocab, Corpus, carve_validation, load_corpus, with_train_categories,
                         with_train_users)
from .data.users import UserVocab
from .data.vectors import WordVectors, word_vectors
from .data.vectors import check_choice as check_vectors_choice
from .fastpath import StepKernels, cuda_precision, install
from .fileio import DataError, FolderLock
from .families import build_model
from .run_info import CATEGORIES, USERS, VOCAB
from .scoring import evaluate_split


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` ("cpu", "cuda", "cuda:N", "mps"), checked against what this torch build and
    machine have (a DataError naming ``device``); None: cuda when present, else cpu."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise DataError(f"unknown device {requested!r} ({str(exc).splitlines()[0]})", settings=("device",)) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DataError(f"device {requested!r}: this torch build or machine has no CUDA device",
                            settings=("device",))
        if device.index is not None and device.index >= count:
            raise DataError(f"device {requested!r}: this machine has {count} CUDA device(s), "
                            f"cuda:0 to cuda:{count - 1}", settings=("device",))
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DataError(f"device {requested!r}: this torch build or machine has no MPS device",
                            settings=("device",))
    elif device.type != "cpu":
        raise DataError(f"unknown device {requested!r}: use cpu, cuda, cuda:N or mps", settings=("device",))
    return device


# The settings that most often make a loss or gradient norm non-finite (``Diverged``).
DIVERGENCE_SETTINGS = ("lr", "grad_clip", "vector_std", "embedding_std", "word_vectors")


class Diverged(DataError):
    """Training met a non-finite loss or gradient norm; nothing after the last finished epoch was committed."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _ScoreBatch(torch.nn.Module):
    """``model.score_batch`` as a ``forward``, so that DDP and torch.compile can wrap it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model.score_batch(batch)  # [B,C]


class _ShardedBatches(torch.utils.data.Dataset):
    """Item ``i``: this rank's share of global batch ``i``, its padding-only title columns cut."""

    def __init__(self, batches: TrainBatches, info: distributed.DistInfo):
        self.batches, self.info = batches, info

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Shard:
        shard = self.batches[index].shard(self.info.rank, self.info.world_size)
        return dataclasses.replace(shard, batch=shard.batch.trim())


@dataclass(frozen=True, kw_only=True)
class PreparedRun:
    """What a training run derives from its data, made by ``prepare_run``."""

    corpus: Corpus
    model_config: ModelConfig  # vocab_size (and the category counts) filled in from the data
    train_config: TrainConfig
    categories: CategoryVocab | None  # the train split's category vocabulary, when the model reads categories
    word_vectors: WordVectors | None  # the starting word embeddings (None: random, ``--word-vectors none``)
    users: UserVocab | None = None  # the trained part's users, when the model reads user ids

    def trainer_args(self) -> dict[str, Any]:
        return {"model_config": self.model_config, "train_config": self.train_config, "corpus": self.corpus,
                "categories": self.categories, "word_vectors": self.word_vectors, "users": self.users}


def prepare_run(layout: Layout, model_config: ModelConfig, train_config: TrainConfig, *,
                corpus: Corpus | None = None, categories: CategoryVocab | None = None, strict: bool = False,
                cache: bool = True, on_status: Callable[[str], None] | None = None,
                on_progress: ReadProgress | None = None) -> PreparedRun:
    """The one set-up of a training run (CLI, app, experiment suites, tests): load the corpus, size
    the model from its vocabulary (and category vocabulary), and make the word vectors that
    ``train_config.word_vectors`` asks for.

    ``corpus`` and ``categories`` pass data already loaded from ``layout`` (a suite loads it once
    for many runs); the corpus must then be aligned to ``categories`` when the model reads them. A
    model that reads abstracts (NAML) loads its own corpus when the one passed lacks them: its
    vocabulary is built from the train titles and abstracts, where every other family's is the titles'.
    ``on_progress(path, done_bytes, total_bytes)`` hears how far a first read of each file has got.
    """
    check_vectors_choice(train_config.word_vectors)  # the configs checked their fields when they were made
    abstract_len = model_config.abstract_words
    if corpus is not None and abstract_len and not carries_abstracts(corpus, abstract_len):
        corpus = None  # a suite's shared corpus reads titles only; this model's vocabulary covers its abstracts too
    if corpus is None:
        if on_status is not None:
            on_status("reading and tokenising the data")
        corpus = load_corpus(layout, title_len=model_config.title_len, min_count=train_config.min_word_count,
                             strict=strict, cache=cache, progress=on_progress, abstract_len=abstract_len)
        if model_config.use_categories:
            corpus, categories = with_train_categories(corpus)
    if corpus.train is None:
        raise DataError("training needs a train split")
    if train_config.validation and corpus.validation is None:
        fit, validation = carve_validation(corpus.train, train_config.validation)
        corpus = dataclasses.replace(corpus, train=fit, validation=validation)
    users = None
    if model_config.reads_users:  # the users of the part trained on: a validation-only user is unknown
        corpus, users = with_train_users(corpus)
        model_config = dataclasses.replace(model_config, num_users=len(users))
    model_config = dataclasses.replace(model_config, vocab_size=len(corpus.vocab))
    if model_config.use_categories:
        if categories is None:
            raise ValueError("a model that reads categories needs the train split's category vocabulary")
        model_config = dataclasses.replace(model_config, num_categories=len(categories.categories),
                                           num_subcategories=len(categories.subcategories))
    model_config.check_data_sizes()
    vectors = word_vectors(train_config.word_vectors, layout=layout, vocab=corpus.vocab, dim=model_config.word_dim,
                           seed=train_config.seed, strict=strict, cache=cache, on_status=on_status)
    return PreparedRun(corpus=corpus, model_config=model_config, train_config=train_config,
                       categories=categories, word_vectors=vectors, users=users)


def carries_abstracts(corpus: Corpus, abstract_len: int) -> bool:
    """Whether ``corpus``'s splits carry abstract tokens ``abstract_len`` wide, encoded with its
    vocabulary (``load_corpus(abstract_len=...)``)."""
    splits = [s for s in (corpus.train, corpus.dev, corpus.validation) if s is not None]
    return all(s.news.abstract_tokens is not None and s.news.abstract_tokens.shape[1] == abstract_len
               for s in splits)


class Trainer:
    def __init__(self, *, model_config: ModelConfig, train_config: TrainConfig, corpus: Corpus,
                 run_dir: str | Path | None = None, callbacks: Sequence[Callback] = (),
                 device: str | None = None, word_vectors: WordVectors | None = None, resume: bool = False,
                 data_info: dict[str, Any] | None = None, model: torch.nn.Module | None = None,
                 categories: CategoryVocab | None = None, runtime: RuntimeConfig = RuntimeConfig(),
                 users: UserVocab | None = None):
        """Usually built from ``prepare_run``: ``Trainer(**prepared.trainer_args(), run_dir=...)``.

        ``model`` defaults to ``families.build_model(model_config)`` (NRAM, LSTUR, ...); any module with
        ``score_batch(batch) -> [B,C]``
        logits trains the same way (the baselines do). ``categories``: the category vocabulary the
        corpus' category ids refer to (``data.split.with_train_categories``), saved with the run.
        ``word_vectors``: the starting word embeddings (a model with ``news_encoder.embedding``).
        ``runtime``: how the run computes (workers, precision, kernels); the plain fp32 path is
        ``RuntimeConfig().plain_fp32()``. The configs checked their fields when they were made
        (``config.py``), and each model checks the sizes that come from the data. ``users``: the user
        vocabulary the corpus' ``model_users`` refer to (``data.split.with_train_users``), saved with the run."""
        if corpus.train is None:
            raise DataError("training needs a train split")
        self.model_config = model_config
        self.train_config = train_config
        self.runtime = runtime
        self.corpus = corpus
        self.run_dir = Path(run_dir) if run_dir else None
        self.callbacks = list(callbacks)
        strangers = [type(c).__name__ for c in self.callbacks if not isinstance(c, Callback)]
        if strangers:
            raise TypeError(f"callbacks must subclass nram_core.callbacks.Callback: {', '.join(strangers)}")
        self.device = pick_device(device)
        self.resume = resume
        self.data_info = dict(data_info or {})
        self.categories = categories
        self.users = users  # saved as users.json: the ids the model's user embedding was trained on
        self._stop = threading.Event()
        self._lock: FolderLock | None = None  # held from the run folder's opening to the end of fit()
        self._best_weights: dict[str, torch.Tensor] | None = None  # the chosen epoch's, when no run folder keeps them
        self.dist = distributed.current()
        seed_everything(train_config.seed)
        if model is None:
            with memory.shapes_only():  # the budget is checked before any weight exists
                parameters = memory.parameter_bytes(build_model(model_config))
        else:
            parameters = memory.parameter_bytes(model)
        memory.check_budget(memory.training_bytes(model_config, train_config, parameters),
                            what="one training step", settings=memory.STEP_SETTINGS)
        memory.check_budget(memory.scoring_bytes(model_config, runtime, parameters),
                            what="one batch of dev scoring", settings=memory.EVAL_SETTINGS)
        self.model = install(model if model is not None else build_model(model_config)).to(self.device)
        self.word_vectors = word_vectors
        self.data_info["word_vectors"] = {"choice": train_config.word_vectors,
                                          **(word_vectors.describe() if word_vectors is not None else {})}
        if word_vectors is not None:
            embedding = self.model.news_encoder.embedding.weight
            if tuple(word_vectors.vectors.shape) != tuple(embedding.shape):
                raise DataError(f"word vectors {word_vectors.source}: shape {tuple(word_vectors.vectors.shape)}, "
                                f"the model needs {tuple(embedding.shape)} (vocabulary x word_dim)")
            vectors = torch.from_numpy(word_vectors.vectors)
            if train_config.vector_std:
                vectors = vectors * (train_config.vector_std / vectors[1:].std().clamp(min=1e-12))
            with torch.no_grad():
                embedding.copy_(vectors)
        self.step_kernels = StepKernels.choose(self.device, amp=runtime.amp, title_chunk=runtime.title_chunk,
                                               fast_dropout=runtime.fast_dropout, compiled=runtime.compile)
        self.precision = self.step_kernels.precision
        self.data_info["precision"] = self.precision
        fused = {"fused": True} if runtime.fused_adam and self.device.type in ("cpu", "cuda") else {}
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_config.lr,
                                          weight_decay=train_config.weight_decay, **fused)
        if self.dist.enabled:  # same initial weights (DDP broadcasts rank 0's), own dropout masks
            torch.manual_seed(train_config.seed + 1_000_003 * self.dist.rank)
        self._step_module = self._wrap_step()
        self.batches = TrainBatches(corpus.train, batch_size=train_config.batch_size,
                                    negatives=train_config.negatives, history_len=model_config.history_len,
                                    seed=train_config.seed, max_impressions=train_config.max_impressions)
        if self.batches.num_samples == 0:
            raise DataError(f"{corpus.train.folder}: no trainable clicks (each needs a non-click in its impression)")

    def request_stop(self) -> None:
        """Ask the run to stop after the current step (thread-safe). The last finished epoch is kept."""
        self._stop.set()

    def _emit(self, name: str, *args: Any) -> None:
        if not self.dist.is_main:
            return
        for callback in self.callbacks:
            getattr(callback, name)(self, *args)

    def _wrap_step(self) -> torch.nn.Module:
        module: torch.nn.Module = _ScoreBatch(self.model)
        if self.dist.enabled:
            # device_ids=None: inputs are already on this rank's device, DDP need not move them.
            module = torch.nn.parallel.DistributedDataParallel(module, device_ids=None)
        if self.runtime.compile:
            module = torch.compile(module, dynamic=True)
        return module

    def _loader(self) -> torch.utils.data.DataLoader:
        workers = self.runtime.num_workers
        return torch.utils.data.DataLoader(
            _ShardedBatches(self.batches, self.dist), batch_size=None, shuffle=False, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
        )

    def _learning_rate(self, global_step: int) -> float:
        """The rate of optimiser step ``global_step`` (0-based): a linear warm-up, then constant.
        A function of the step alone, so --resume continues the schedule exactly."""
        warmup = self.train_config.warmup_steps
        return self.train_config.lr * (min(1.0, (global_step + 1) / warmup) if warmup else 1.0)

    def _train_step(self, shard: Shard, global_step: int) -> tuple[float, float]:
        """One optimiser step on this rank's share; returns the global batch's mean loss and the
        gradients' global norm before clipping (0.0 when ``grad_clip`` is off: it is not computed).
        Both leave the device in the one ``.tolist()`` the loss needed anyway."""
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate(global_step)
        batch = shard.batch.to(self.device, non_blocking=True)
        with self.step_kernels.applied(self.model):
            logits = self._step_module(batch)  # [b,1+K]
        losses = F.cross_entropy(logits.float(), batch.labels, reduction="none")  # [b]
        loss_sum = losses[: shard.rows].sum()  # [b] -> [] (a stand-in sample has rows == 0)
        # DDP averages gradients over ranks: this scale makes the average the global batch's mean.
        loss = loss_sum * (self.dist.world_size / shard.global_size)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = loss_sum.new_zeros(())  # []
        if self.train_config.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_config.grad_clip).float()
        self.optimizer.step()
        # Summed over ranks: the norm is the same on each (DDP averaged the gradients), and only
        # whether it is finite is checked.
        total, grad_norm = distributed.all_reduce_sum(torch.stack([loss_sum.detach(), norm.detach()])).tolist()
        return total / shard.global_size, grad_norm

    def _stop_agreed(self) -> bool:
        """Whether to stop; under torchrun every rank calls this at the same points and gets the same
        answer (a stop requested on rank 0, by a callback or another thread, stops them all)."""
        if self.dist.enabled:
            votes = distributed.all_reduce_sum(torch.tensor(float(self._stop.is_set()), device=self.device))
            if votes.item() > 0:
                self._stop.set()
        return self._stop.is_set()

    def _open_run(self) -> dict[str, Any]:
        """The training state to start from: a resumed run's last commit (``checkpoint.resume``
        checks it against this run's data and model), else a fresh one; rank 0 writes the run's
        config and vocabulary."""
        state: dict[str, Any] = {"epochs_done": 0, "global_step": 0, "best_epoch": 0, "best_auc": None,
                                 "stale_epochs": 0, "history": []}
        if self.run_dir is None:
            return state
        if self.resume and not self.run_dir.is_dir():  # a mistyped folder must not start a fresh run
            raise DataError(f"{self.run_dir}: no run folder to resume", settings=("resume", "out"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:  # the one process that writes the folder; before it reads or writes anything there
            self._lock = FolderLock(self.run_dir, what="run folder", settings=("out",))
        if self.resume:
            state = ckpt.resume(self.run_dir, model=self.model, optimizer=self.optimizer, device=self.device,
                                model_config=self.model_config, vocab=self.corpus.vocab, categories=self.categories,
                                users=self.users,
                                main=self.dist.is_main) or state
        elif (self.run_dir / "state.json").exists():
            raise DataError(f"{self.run_dir}: already holds a run; resume it or choose another run folder",
                            settings=("resume", "out"))
        if self.dist.is_main:
            ckpt.write_config(self.run_dir, model_config=self.model_config, train_config=self.train_config,
                              runtime=self.runtime, data=self.data_info)
            self.corpus.vocab.save(self.run_dir / VOCAB)
            if self.categories is not None:
                self.categories.save(self.run_dir / CATEGORIES)
            if self.users is not None:
                self.users.save(self.run_dir / USERS)
        return state

    @property
    def total_steps(self) -> int:
        """The optimiser steps of the whole run: every epoch's batches, capped by ``max_steps``."""
        total = len(self.batches) * self.train_config.epochs
        return min(total, self.train_config.max_steps) if self.train_config.max_steps else total

    def _writes(self) -> bool:
        return self.run_dir is not None and self.dist.is_main

    @property
    def chosen_on(self) -> str | None:
        """The split that chooses the best epoch and stops early: the validation part carved from
        train when there is one (``TrainConfig.validation``), else dev; None without either."""
        if self.corpus.validation is not None:
            return "validation"
        return "dev" if self.corpus.dev is not None else None

    def evaluate(self, split: str | None = None) -> dict[str, Any] | None:
        """Metrics of the model as it is on ``split`` ("validation" or "dev"; default: ``chosen_on``),
        its first ``max_dev_impressions`` impressions; None when there is no such split."""
        data = {"validation": self.corpus.validation, "dev": self.corpus.dev}.get(split or self.chosen_on or "")
        if data is None:
            return None
        result = evaluate_split(self.model, data, max_impressions=self.train_config.max_dev_impressions,
                                batch_size=self.runtime.eval_batch_size, amp=self.runtime.amp)
        return result.as_dict()

    def fit(self) -> TrainResult:
        try:
            with cuda_precision(self.device, self.runtime.amp):
                return self._fit()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _fit(self) -> TrainResult:
        cfg = self.train_config
        state = self._open_run()
        self._emit("on_train_start")
        loader = self._loader()
        result = TrainResult(epochs_done=state["epochs_done"], global_step=state["global_step"],
                             best_epoch=state["best_epoch"], metrics=None, history=list(state["history"]))
        if result.history and state["best_epoch"]:
            result.metrics = result.history[state["best_epoch"] - 1].get("metrics")
        final = state.get("final")
        if isinstance(final, dict) and final.get("chosen_on") == "validation":  # a finished run: its dev score
            result.metrics = {k: v for k, v in final.items() if k not in ("best_epoch", "chosen_on", "validation")}
        result.stopped_early = self._patience_spent(state)
        for epoch in range(state["epochs_done"] + 1, cfg.epochs + 1):
            if result.stopped_early or self._stop_agreed() or self._steps_spent(result):
                break
            started = time.perf_counter()
            losses = self._train_epoch(loader, epoch, result, started)
            if self._stop_agreed():
                result.cancelled = True
                break  # an unfinished epoch is not saved; the last finished one stays on disk
            state = self._end_epoch(epoch, losses, started, state, result)
            result.stopped_early = self._patience_spent(state)
        result.chosen_on = self.chosen_on
        if result.epochs_done and not result.cancelled and "final" not in state:
            final = {"best_epoch": result.best_epoch, "chosen_on": self.chosen_on, **(result.metrics or {})}
            if self.chosen_on == "validation" and self.corpus.dev is not None:
                final = self._score_dev_once(result)
            self._commit_final({**state, "final": final})
        elif result.cancelled and state["epochs_done"]:  # the run folder says so (run_info.run_status)
            self._commit_final({**state, "cancelled": True})
        self._emit("on_train_end", result)
        return result

    def _score_dev_once(self, result: TrainResult) -> dict[str, Any]:
        """The chosen epoch's weights back into the model, and its one score on dev: the figure to
        report, since no choice saw dev. ``result.metrics`` becomes that score."""
        if self.run_dir is not None:
            ckpt.load_weights(self.model, ckpt.committed_file(self.run_dir, "best"))
        elif self._best_weights is not None:
            self.model.load_state_dict(self._best_weights)
        chosen = result.metrics or {}
        dev = distributed.broadcast_object(self.evaluate("dev") if self.dist.is_main else None)
        result.metrics = dev
        return {"best_epoch": result.best_epoch, "chosen_on": "validation", **(dev or {}), "validation": chosen}

    def _patience_spent(self, state: dict[str, Any]) -> bool:
        """Early stopping; its count of epochs without a better dev AUC survives --resume."""
        return bool(self.train_config.patience and int(state.get("stale_epochs", 0)) >= self.train_config.patience)

    def _steps_spent(self, result: TrainResult) -> bool:
        return bool(self.train_config.max_steps and result.global_step >= self.train_config.max_steps)

    def _train_epoch(self, loader: torch.utils.data.DataLoader, epoch: int, result: TrainResult,
                     started: float) -> list[float]:
        """The steps of one epoch (until its end, a stop or ``max_steps``): their losses."""
        self.batches.set_epoch(epoch)
        # Dropout masks depend only on (seed, epoch, rank), so --resume continues exactly.
        seed = self.train_config.seed
        torch.manual_seed(int(np.random.SeedSequence([seed, epoch, self.dist.rank]).generate_state(1)[0]))
        self._step_module.train()
        losses: list[float] = []
        seen = 0
        for step, shard in enumerate(loader, start=1):
            loss, grad_norm = self._train_step(shard, result.global_step)
            seen += shard.global_size
            result.global_step += 1
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                self._diverged(epoch, step, result.global_step, loss, grad_norm)
            losses.append(loss)
            self._emit("on_step", StepInfo(epoch=epoch, step=step, steps_in_epoch=len(self.batches),
                                           global_step=result.global_step, loss=losses[-1],
                                           samples_per_s=seen / max(time.perf_counter() - started, 1e-9)))
            if self._stop_agreed() or self._steps_spent(result):
                break
        return losses

    def _diverged(self, epoch: int, step: int, global_step: int, loss: float, grad_norm: float) -> None:
        """Stop at the first non-finite loss or gradient norm: the error leaves before this epoch's
        commit, so the run folder keeps its last finished epoch (or nothing, in the first)."""
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
        cfg = self.train_config
        kept = (f"epoch {epoch - 1} is the last committed" if epoch > 1 and self.run_dir is not None
                else "nothing was committed")
        raise Diverged(f"training diverged at epoch {epoch}, step {step} (global step {global_step}): {what}; "
                       f"{kept}. Likely settings: lr {cfg.lr:g}, grad_clip {cfg.grad_clip:g}, "
                       f"vector_std {cfg.vector_std:g}, embedding_std {self.model_config.embedding_std:g}, "
                       f"word_vectors {cfg.word_vectors!r}", settings=DIVERGENCE_SETTINGS)

    def _end_epoch(self, epoch: int, losses: list[float], started: float, state: dict[str, Any],
                   result: TrainResult) -> dict[str, Any]:
        """Evaluate a finished epoch (rank 0), record it in ``result`` and commit it
        (``checkpoint.commit_epoch``: state.json is the one commit point); returns the new state."""
        eval_start = time.perf_counter()
        metrics = distributed.broadcast_object(self.evaluate() if self.dist.is_main else None)  # rank 0 evaluates
        eval_seconds = time.perf_counter() - eval_start
        auc = metrics["auc"] if metrics else None
        improved = auc is None or state["best_auc"] is None or auc > state["best_auc"]
        stale = 0 if improved else int(state.get("stale_epochs", 0)) + 1
        if improved:
            state["best_auc"], state["best_epoch"] = auc, epoch
            result.best_epoch, result.metrics = epoch, metrics
            if self.run_dir is None and self.chosen_on == "validation":  # no file to reload the chosen epoch from
                self._best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "metrics": metrics,
                  "seconds": time.perf_counter() - started, "eval_seconds": eval_seconds, "steps": len(losses),
                  "precision": self.precision}  # per epoch: a resumed run may continue on another machine
        result.history.append(record)
        result.epochs_done = epoch
        state.pop("final", None)  # a resumed run that trains on is not done yet, nor cancelled
        state.pop("cancelled", None)
        state.update(epochs_done=epoch, global_step=result.global_step, history=result.history, stale_epochs=stale)
        if self._writes():
            state = ckpt.commit_epoch(self.run_dir, model=self.model, optimizer=self.optimizer, state=state,
                                      improved=improved)
        self._emit("on_epoch_end", EpochInfo(epoch=epoch, train_loss=record["train_loss"], metrics=metrics,
                                             seconds=record["seconds"], improved=improved))
        return state

    def _commit_final(self, state: dict[str, Any]) -> None:
        if self._writes():
            ckpt.commit_final(self.run_dir, state)
