"""Scoring and evaluation of any model on a split: the one entry point is ``score_impressions``
(and ``evaluate_split`` on top of it), used by the trainer, the CLI, the experiment suites and
the app.

It picks a path by what the model can do:
* a model that encodes news and users apart (``encode_news`` and ``encode_users``, as NRAM does)
  is scored the ``run_fast_eval`` way: every news encoded once, every distinct user history
  once, then dot products;
* any other trained model (``score_batch``: DKN and Wide&Deep, whose user side depends on the
  candidate) is scored impression by impression, in batches of whole impressions;
* a count-based model (``score_split``: popularity, random) scores the split itself.

Fast paths (each exact up to float rounding, checked by tests/test_fastpath.py):
* news are encoded once per split, in large batches sorted by title length, each batch cut
  to its longest title: padding columns cost attention work but never
  change a vector, because padding is masked out everywhere;
* impressions that share a history (a MIND user's history is fixed) share one user vector;
* candidate scores are row-wise dot products of gathered vectors, in bounded chunks, so a
  70k-impression dev split never materialises gigabytes at once;
* on CUDA, ``amp=True`` runs the encoders under bf16 autocast; vectors are returned in fp32.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import numpy as np
import torch

from .data.batching import gather_histories, make_batch
from .data.split import Split
from .metrics import EvalResult, impression_ranks, mean_metrics, per_impression_metrics, segment_metrics
from .model import NRAM

SCORE_CHUNK = 1 << 16  # candidates scored per step: bounds the [chunk,D] temporaries
PER_IMPRESSION_SLOTS = 4096  # impression x candidate cells per batch on the per-impression path


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def autocast_for(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on CUDA when ``enabled``; nothing on other devices."""
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"):
        yield


def title_lengths(tokens: np.ndarray) -> np.ndarray:
    """Per row, one past the last non-padding position (0 for an empty title): [N,L] -> [N]."""
    filled = tokens != 0  # [N,L]
    last = tokens.shape[1] - np.argmax(filled[:, ::-1], axis=1)  # [N]
    return np.where(filled.any(axis=1), last, 0)


def category_ids(news, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """[R] category and subcategory ids of news ``rows``, for a model with ``use_categories``; they are
    ids of the run's train category vocabulary (``run_info.RunInfo.load_split`` maps a split onto it)."""
    return (torch.from_numpy(news.category[rows].astype(np.int64)).to(device),
            torch.from_numpy(news.subcategory[rows].astype(np.int64)).to(device))


@torch.inference_mode()
def encode_all_news(model: NRAM, split: Split, *, batch_size: int = 1024, amp: bool = False) -> torch.Tensor:
    """Vectors of every news of the split, [N+1,D] fp32; row 0 (padding news) is zero."""
    device = model_device(model)
    news = split.news
    lengths = title_lengths(news.tokens)  # [N+1]
    order = np.argsort(lengths, kind="stable")  # short titles first: each chunk is cut to its longest
    with_categories = getattr(model.config, "use_categories", False)
    chunks = []
    with autocast_for(device, amp):
        for i in range(0, len(order), batch_size):
            rows = order[i: i + batch_size]
            width = max(1, int(lengths[rows].max()))
            chunk = torch.from_numpy(news.tokens[rows, :width]).to(device)  # [b,width]
            if with_categories:
                chunks.append(model.encode_news(chunk, *category_ids(news, rows, device)).float())  # [b,width] -> [b,D]
            else:
                chunks.append(model.encode_news(chunk).float())  # [b,width] -> [b,D]
    stacked = torch.cat(chunks)  # [N+1,D] in length order (row 0, the padding news, is always there)
    vectors = torch.empty_like(stacked)  # [N+1,D]
    vectors[torch.from_numpy(order).to(device)] = stacked  # back to row order
    vectors[0] = 0.0
    return vectors


@torch.inference_mode()
def encode_histories(model: NRAM, news_vectors: torch.Tensor, history: np.ndarray, mask: np.ndarray, *,
                     batch_size: int = 1024, amp: bool = False) -> torch.Tensor:
    """User vectors [B,D] fp32 from history rows [B,H] and mask [B,H]; an empty history gives zeros."""
    device = news_vectors.device
    out = []
    with autocast_for(device, amp):
        for i in range(0, len(history), batch_size):
            rows = torch.from_numpy(history[i: i + batch_size]).to(device)
            hist_mask = torch.from_numpy(mask[i: i + batch_size]).to(device)
            out.append(model.encode_users(news_vectors[rows], hist_mask).float())  # [b,H] -> [b,H,D] -> [b,D]
    if not out:
        return torch.zeros(0, news_vectors.shape[1], device=device)
    return torch.cat(out)


@torch.inference_mode()
def encode_impression_users(model: NRAM, split: Split, news_vectors: torch.Tensor, impressions: np.ndarray, *,
                            batch_size: int = 1024, amp: bool = False) -> torch.Tensor:
    """User vector [I,D] of each impression; impressions with the same history are encoded once."""
    history, mask = gather_histories(split, impressions, model.config.history_len)  # [I,H], [I,H]
    if len(history) == 0:
        return encode_histories(model, news_vectors, history, mask, batch_size=batch_size, amp=amp)
    key = np.concatenate([history, mask.astype(np.int64)], axis=1)  # [I,2H]
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    users = encode_histories(model, news_vectors, history[first], mask[first], batch_size=batch_size,
                             amp=amp)  # [I',D]
    return users[torch.from_numpy(inverse.reshape(-1)).to(users.device)]  # [I',D] -> [I,D]


def encodes_apart(model: torch.nn.Module) -> bool:
    """Whether the model encodes news and users apart, so that the fast path can score it."""
    return callable(getattr(model, "encode_news", None)) and callable(getattr(model, "encode_users", None))


@torch.inference_mode()
def score_impressions(model, split: Split, *, max_impressions: int = 0, batch_size: int = 1024,
                      news_vectors: torch.Tensor | None = None, amp: bool = False,
                      fast: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of every candidate of the first ``max_impressions`` impressions (all when 0).

    Returns flat ``scores`` and ``labels`` and the ``offsets`` [I+1] that delimit each impression.
    ``fast``: None picks the path by the model (see the module docstring); False forces the
    per-impression path on a model that could take the fast one (the tests compare both).
    ``news_vectors`` passes the fast path's news vectors when they are already encoded.
    """
    if callable(getattr(model, "score_split", None)):  # count-based: no torch module
        return model.score_split(split, max_impressions=max_impressions)
    was_training = model.training
    model.eval()
    try:
        if (encodes_apart(model) if fast is None else fast):
            scores = _fast_scores(model, split, max_impressions=max_impressions, batch_size=batch_size,
                                  news_vectors=news_vectors, amp=amp)
        else:
            scores = _per_impression_scores(model, split, max_impressions=max_impressions)
    finally:
        model.train(was_training)
    offsets, end = split.impression_range(max_impressions)
    return scores, split.behaviors.labels[:end], offsets


def _fast_scores(model: NRAM, split: Split, *, max_impressions: int, batch_size: int,
                 news_vectors: torch.Tensor | None, amp: bool) -> np.ndarray:
    offsets, end = split.impression_range(max_impressions)
    n = len(offsets) - 1
    if news_vectors is None:
        news_vectors = encode_all_news(model, split, batch_size=batch_size, amp=amp)
    users = encode_impression_users(model, split, news_vectors, np.arange(n), batch_size=batch_size, amp=amp)
    owner = np.repeat(np.arange(n), np.diff(offsets))  # [M] impression of each candidate
    return dot_scores(users, news_vectors, owner, split.behaviors.candidates[:end])


def _per_impression_scores(model, split: Split, *, max_impressions: int) -> np.ndarray:
    """``model.score_batch`` on batches of whole impressions, about PER_IMPRESSION_SLOTS
    (impression x candidate) cells each, every impression padded to its batch's widest."""
    offsets, end = split.impression_range(max_impressions)
    b = split.behaviors
    sizes = np.diff(offsets)
    device = model_device(model)
    scores = np.zeros(end, dtype=np.float32)
    start = 0
    while start < len(sizes):
        stop, widest = start, 0
        while stop < len(sizes) and (stop == start
                                     or max(widest, sizes[stop]) * (stop + 1 - start) <= PER_IMPRESSION_SLOTS):
            widest = max(widest, int(sizes[stop]))
            stop += 1
        impressions = np.arange(start, stop)
        history, mask = gather_histories(split, impressions, model.config.history_len)  # [b,H], [b,H]
        lo = b.candidate_offsets[impressions]
        width = np.arange(widest)
        valid = width[None, :] < sizes[impressions][:, None]  # [b,C]
        candidates = np.where(valid, b.candidates[np.where(valid, lo[:, None] + width, 0)], 0).astype(np.int64)
        logits = model.score_batch(make_batch(split, history, mask, candidates).to(device))  # [b,C]
        scores[offsets[start]: offsets[stop]] = logits.float().cpu().numpy()[valid]  # [b,C] -> [m]
        start = stop
    return scores


@torch.inference_mode()
def dot_scores(users: torch.Tensor, news_vectors: torch.Tensor, owner: np.ndarray,
               candidates: np.ndarray) -> np.ndarray:
    """Score of each candidate: its news vector . its impression's user vector, [M] fp32 NumPy."""
    device = news_vectors.device
    scores = np.empty(len(candidates), dtype=np.float32)  # [M]
    for lo in range(0, len(candidates), SCORE_CHUNK):
        hi = min(lo + SCORE_CHUNK, len(candidates))
        who = torch.from_numpy(owner[lo:hi]).to(device)  # [m]
        rows = torch.from_numpy(candidates[lo:hi].astype(np.int64)).to(device)  # [m]
        scores[lo:hi] = (users[who] * news_vectors[rows]).sum(-1).float().cpu().numpy()  # [m,D]*[m,D] -> [m]
    return scores


def evaluate_split(model, split: Split, *, max_impressions: int = 0, batch_size: int = 1024, amp: bool = False,
                   segments: tuple[tuple[str, int, int], ...] = ()) -> EvalResult:
    """The official metrics of ``model`` on the first ``max_impressions`` impressions of ``split``
    (all when 0), scored by ``score_impressions``; with ``segments`` (e.g.
    ``metrics.HISTORY_SEGMENTS``), also per user segment of history length.

    Equal scores are ordered by ``metrics.impression_ranks``'s tie rule, the one ``predict`` writes,
    so where every candidate has a news row (as in MIND itself) these figures are the official
    scorer's on ``predict``'s file. (A candidate without a news row is dropped here, whereas
    ``predict`` ranks it as an empty title.) Unlabelled (test) impressions count as skipped."""
    scores, labels, offsets = score_impressions(model, split, max_impressions=max_impressions,
                                                batch_size=batch_size, amp=amp)
    per = per_impression_metrics(labels, -impression_ranks(scores, offsets), offsets)  # [I,4]
    result = mean_metrics(per)
    if segments:
        by_segment = segment_metrics(per, split.history_lengths(max_impressions), segments)
        result = dataclasses.replace(result, segments=by_segment)
    return result
