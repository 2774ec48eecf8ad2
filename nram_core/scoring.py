"""Fast scoring, the ``run_fast_eval`` way: encode every news once, every user once per
impression, then take dot products. Used by evaluation, prediction, recommendation and the app.
"""
from __future__ import annotations

import numpy as np
import torch

from .data.batching import gather_histories
from .data.prepare import Split
from .metrics import EvalResult, evaluate_flat
from .model import NRAM


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def encode_all_news(model: NRAM, split: Split, *, batch_size: int = 1024) -> torch.Tensor:
    """Vectors of every news of the split, [N+1,D]; row 0 (padding news) is zero."""
    device = model_device(model)
    tokens = torch.from_numpy(split.news.tokens)
    chunks = [model.encode_news(tokens[i: i + batch_size].to(device)) for i in range(0, len(tokens), batch_size)]
    vectors = torch.cat(chunks)  # [N+1,D]
    vectors[0] = 0.0
    return vectors


@torch.inference_mode()
def encode_histories(model: NRAM, news_vectors: torch.Tensor, history: np.ndarray, mask: np.ndarray, *,
                     batch_size: int = 1024) -> torch.Tensor:
    """User vectors [B,D] from history rows [B,H] and mask [B,H]; an empty history gives zeros."""
    device = news_vectors.device
    out = []
    for i in range(0, len(history), batch_size):
        rows = torch.from_numpy(history[i: i + batch_size]).to(device)
        hist_mask = torch.from_numpy(mask[i: i + batch_size]).to(device)
        out.append(model.encode_users(news_vectors[rows], hist_mask))  # [b,H] -> [b,H,D] -> [b,D]
    if not out:
        return torch.zeros(0, news_vectors.shape[1], device=device)
    return torch.cat(out)


@torch.inference_mode()
def encode_impression_users(model: NRAM, split: Split, news_vectors: torch.Tensor, impressions: np.ndarray, *,
                            batch_size: int = 1024) -> torch.Tensor:
    history, mask = gather_histories(split, impressions, model.config.history_len)
    return encode_histories(model, news_vectors, history, mask, batch_size=batch_size)


@torch.inference_mode()
def score_impressions(model: NRAM, split: Split, *, max_impressions: int = 0, batch_size: int = 1024,
                      news_vectors: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of every candidate of the first ``max_impressions`` impressions (all when 0).

    Returns flat ``scores`` and ``labels`` and the ``offsets`` [I+1] that delimit each impression.
    """
    was_training = model.training
    model.eval()
    try:
        b = split.behaviors
        n = split.num_impressions if not max_impressions else min(max_impressions, split.num_impressions)
        if news_vectors is None:
            news_vectors = encode_all_news(model, split, batch_size=batch_size)
        users = encode_impression_users(model, split, news_vectors, np.arange(n), batch_size=batch_size)
        offsets = b.candidate_offsets[: n + 1]
        end = int(offsets[-1])
        owner = torch.from_numpy(np.repeat(np.arange(n), np.diff(offsets))).to(news_vectors.device)
        cands = torch.from_numpy(b.candidates[:end].astype(np.int64)).to(news_vectors.device)
        scores = (users[owner] * news_vectors[cands]).sum(-1)  # [M,D]*[M,D] -> [M]
    finally:
        model.train(was_training)
    return scores.float().cpu().numpy(), b.labels[:end], offsets - offsets[0]


def evaluate_split(model: NRAM, split: Split, *, max_impressions: int = 0, batch_size: int = 1024) -> EvalResult:
    scores, labels, offsets = score_impressions(model, split, max_impressions=max_impressions,
                                                batch_size=batch_size)
    return evaluate_flat(labels, scores, offsets)
