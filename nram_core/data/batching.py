"""Turning a split into model inputs: training batches with sampled negatives, and
impression-level evaluation batches. One history-gathering routine serves both.

Each training batch encodes each distinct news once: the batch carries the tokens of
its unique news and indexes into them, because histories overlap heavily.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .split import Split


def gather_histories(split: Split, impressions: np.ndarray, history_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The latest ``history_len`` clicks of each impression: news rows [B,H] (0 = padding) and mask [B,H]."""
    b = split.behaviors
    ends = b.history_offsets[impressions + 1]
    lengths = np.minimum(ends - b.history_offsets[impressions], history_len)
    positions = np.arange(history_len)
    mask = positions[None, :] < lengths[:, None]
    index = np.where(mask, (ends - lengths)[:, None] + positions[None, :], 0)
    rows = np.where(mask, b.history[index] if b.history.size else 0, 0).astype(np.int64)
    return rows, mask


@dataclass
class Batch:
    """Model inputs. ``titles`` are the unique news of the batch; the rest index into them."""

    titles: torch.Tensor  # [U,L] int
    history: torch.Tensor  # [B,H] int64
    history_mask: torch.Tensor  # [B,H] bool
    candidates: torch.Tensor  # [B,C] int64
    labels: torch.Tensor  # [B] int64, index of the click among the candidates
    news_rows: torch.Tensor  # [U] int64, the split's news row behind each row of ``titles``
    categories: torch.Tensor  # [U] int64 category id of each unique news (index into split.news.categories)
    subcategories: torch.Tensor  # [U] int64
    # [U,L] int64 entity id per title token (0: none), when the split carries ``news.entities``
    # (see nram_core.data.entities); None otherwise.
    entities: torch.Tensor | None = None
    # [B] int64 each sample's user as an id of the model's ``UserVocab`` (0: unknown), when the split
    # carries ``model_users`` (see nram_core.data.users); None for a model that reads no user ids.
    users: torch.Tensor | None = None
    # [U,A] int64 abstract tokens of each unique news, when the split carries ``news.abstract_tokens``
    # (a model that reads abstracts, ``ModelConfig.reads_abstracts``); None otherwise.
    abstracts: torch.Tensor | None = None

    # The layout of the fields, so that cutting a batch never guesses from shapes. Every field not
    # named here has one row per unique news ([U,...]).
    SAMPLE_FIELDS: ClassVar[tuple[str, ...]] = ("history_mask", "labels", "users")  # one row per sample
    NEWS_INDEX_FIELDS: ClassVar[tuple[str, ...]] = ("history", "candidates")  # per sample, index the unique news
    TOKEN_FIELDS: ClassVar[tuple[str, ...]] = ("titles", "entities")  # [U,L]: one column per title token
    ABSTRACT_FIELDS: ClassVar[tuple[str, ...]] = ("abstracts",)  # [U,A]: one column per abstract token

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(**{k: (v.to(device, non_blocking=non_blocking) if v is not None else None)
                        for k, v in vars(self).items()})

    def pin_memory(self) -> "Batch":
        return Batch(**{k: (v.pin_memory() if v is not None else None) for k, v in vars(self).items()})

    def select(self, lo: int, hi: int) -> "Batch":
        """Samples ``lo:hi``, keeping only the news they use (still each encoded once)."""
        history = self.history[lo:hi]  # [B,H] -> [b,H]
        candidates = self.candidates[lo:hi]  # [B,C] -> [b,C]
        used, inverse = np.unique(np.concatenate([history.numpy().ravel(), candidates.numpy().ravel()]),
                                  return_inverse=True)
        used_t = torch.from_numpy(used)  # [u] rows of the batch's unique news that the slice needs
        inverse_t = torch.from_numpy(inverse.astype(np.int64))  # [b*H + b*C]
        parts: dict[str, Any] = {
            "history": inverse_t[: history.numel()].view(history.shape),  # [b*H] -> [b,H]
            "candidates": inverse_t[history.numel():].view(candidates.shape),  # [b*C] -> [b,C]
        }
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.NEWS_INDEX_FIELDS:
                continue
            if value is None:
                parts[f.name] = None
            elif f.name in self.SAMPLE_FIELDS:
                parts[f.name] = value[lo:hi]  # [B,...] -> [b,...]
            else:
                parts[f.name] = value[used_t]  # [U,...] -> [u,...]
        return Batch(**parts)

    def shard(self, rank: int, world_size: int) -> "Shard":
        """This rank's contiguous share of the samples (``shard_rows``), as a ``Shard``."""
        n = len(self)
        if world_size == 1:
            return Shard(self, n, n)
        lo, hi = shard_rows(n, rank, world_size)
        if lo == hi:  # a stand-in sample with zero loss weight keeps every rank in step
            return Shard(self.select(0, 1), n, 0)
        return Shard(self.select(lo, hi), n, hi - lo)

    def trim(self) -> "Batch":
        """The batch with the title columns that are padding in every title cut off, and every
        per-token field cut with them (the abstracts by their own padding columns); exact, since
        padding is masked out everywhere."""
        width = trim_titles(self.titles).shape[1]
        cut = {name: getattr(self, name)[:, :width] for name in self.TOKEN_FIELDS
               if getattr(self, name) is not None}  # [U,L] -> [U,L']
        cut.update({name: trim_titles(getattr(self, name)) for name in self.ABSTRACT_FIELDS
                    if getattr(self, name) is not None})  # [U,A] -> [U,A']
        return dataclasses.replace(self, **cut)


@dataclass
class Shard:
    """This rank's part of global batch ``i``.

    ``rows`` real samples lead ``batch``; a rank whose share is empty (a last global batch
    smaller than the world) gets one stand-in sample with ``rows == 0``, so that every rank
    still runs forward and backward, and its loss weight is zero.
    """

    batch: Batch
    global_size: int
    rows: int

    def pin_memory(self) -> "Shard":
        return Shard(self.batch.pin_memory(), self.global_size, self.rows)


def shard_rows(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous share ``[lo, hi)`` of ``n`` rows for ``rank``; shares differ by at most one row.

    >>> [shard_rows(5, r, 2) for r in range(2)]
    [(0, 3), (3, 5)]
    """
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def trim_titles(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the trailing columns that are padding in every row (keeps at least one column), of
    titles or abstracts."""
    filled = (tokens != 0).any(dim=0)  # [N,L] -> [L]
    keep = int(filled.nonzero().max()) + 1 if bool(filled.any()) else 1
    return tokens[:, :keep]  # [N,L] -> [N,keep]


def make_batch(split: Split, history: np.ndarray, history_mask: np.ndarray, candidates: np.ndarray,
               users: np.ndarray | None = None) -> Batch:
    """Deduplicate the news of a batch and express history and candidates as indices into them.
    ``users`` [B]: each sample's user id in the model's ``UserVocab`` (``split.model_users`` rows)."""
    if users is not None and np.shape(users) != (len(candidates),):
        raise ValueError(f"users must hold one id per sample: shape {np.shape(users)}, {len(candidates)} samples")
    unique, inverse = np.unique(np.concatenate([history.ravel(), candidates.ravel()]), return_inverse=True)
    split_at = history.size
    return Batch(
        titles=torch.from_numpy(split.news.tokens[unique]),
        history=torch.from_numpy(inverse[:split_at].reshape(history.shape).astype(np.int64)),
        history_mask=torch.from_numpy(history_mask),
        candidates=torch.from_numpy(inverse[split_at:].reshape(candidates.shape).astype(np.int64)),
        labels=torch.zeros(len(candidates), dtype=torch.int64),
        news_rows=torch.from_numpy(unique.astype(np.int64)),
        categories=torch.from_numpy(split.news.category[unique].astype(np.int64)),
        subcategories=torch.from_numpy(split.news.subcategory[unique].astype(np.int64)),
        entities=(torch.from_numpy(split.news.entities[unique].astype(np.int64))
                  if split.news.entities is not None else None),
        users=torch.from_numpy(np.array(users, dtype=np.int64)) if users is not None else None,  # [B]
        abstracts=(torch.from_numpy(split.news.abstract_tokens[unique].astype(np.int64))
                   if split.news.abstract_tokens is not None else None),  # [U,A]
    )


class TrainBatches(torch.utils.data.Dataset):
    """One sample per click: the click plus ``negatives`` non-clicks of the same impression,
    without replacement when the impression has at least K of them and with replacement otherwise.

    Item ``i`` is the whole batch ``i`` of the current epoch (use ``DataLoader(batch_size=None)``);
    the order and the negatives depend only on ``(seed, epoch, i)``, so a resumed run or a
    DataLoader worker reproduces them exactly.
    """

    def __init__(self, split: Split, *, batch_size: int, negatives: int, history_len: int, seed: int = 0,
                 max_impressions: int = 0):
        self.split, self.batch_size, self.negatives = split, batch_size, negatives
        self.history_len, self.seed = history_len, seed
        b = split.behaviors
        n_imp = len(b.impression_ids) if not max_impressions else min(max_impressions, len(b.impression_ids))
        cand_imp = np.repeat(np.arange(len(b.impression_ids)), np.diff(b.candidate_offsets))
        n_neg = np.add.reduceat(1 - b.labels, b.candidate_offsets[:-1]) if b.labels.size else np.zeros(0, int)
        positive = (b.labels == 1) & (cand_imp < n_imp)
        usable = positive & (n_neg[cand_imp] > 0)
        self.skipped_no_negative = int((positive & ~usable).sum())
        self.sample_impression = cand_imp[usable]  # [S]
        self.sample_candidate = np.flatnonzero(usable)  # [S] flat candidate index of the click
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        return len(self.sample_impression)

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)

    def __getitem__(self, index: int) -> Batch:
        order = self.__dict__.get("_cached_order")
        if order is None or self.__dict__.get("_cached_epoch") != self.epoch:
            order = self._order()
            self.__dict__.update(_cached_order=order, _cached_epoch=self.epoch)
        chosen = order[index * self.batch_size: (index + 1) * self.batch_size]
        impressions = self.sample_impression[chosen]
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        negatives = self._sample_negatives(impressions, rng)
        clicks = self.split.behaviors.candidates[self.sample_candidate[chosen]].astype(np.int64)
        candidates = np.concatenate([clicks[:, None], negatives], axis=1)  # click first: label 0
        history, mask = gather_histories(self.split, impressions, self.history_len)
        users = self.split.model_users[impressions] if self.split.model_users is not None else None  # [B]
        return make_batch(self.split, history, mask, candidates, users)

    def _sample_negatives(self, impressions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b = self.split.behaviors
        k = self.negatives
        lo, hi = b.candidate_offsets[impressions], b.candidate_offsets[impressions + 1]
        width = int((hi - lo).max())
        slots = lo[:, None] + np.arange(width)[None, :]
        valid = slots < hi[:, None]
        is_negative = valid & (b.labels[np.where(valid, slots, 0)] == 0)
        n_neg = is_negative.sum(axis=1)
        # Without replacement: the K negatives with the smallest random keys.
        keys = np.where(is_negative, rng.random(slots.shape), np.inf)
        picked_wo = np.argsort(keys, axis=1)[:, :k] if width >= k else np.zeros((len(lo), k), dtype=np.int64)
        # With replacement (fewer than K negatives): uniform picks among the negatives.
        rank = (rng.random((len(lo), k)) * n_neg[:, None]).astype(np.int64)
        neg_positions = np.argsort(~is_negative, axis=1, kind="stable")  # negatives first, in order
        picked_w = np.take_along_axis(neg_positions, rank, axis=1)
        picked = np.where((n_neg >= k)[:, None], picked_wo, picked_w)
        return b.candidates[np.take_along_axis(slots, picked, axis=1)].astype(np.int64)
