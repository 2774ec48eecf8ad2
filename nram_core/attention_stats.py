"""How peaked a trained model's attention is: the figures behind "the Attention page tells you something".

* ``word_entropy``: the mean normalised entropy of the news encoder's additive attention over the
  words of each title (1.0 = uniform over the real words, 0.0 = all weight on one word);
* ``click_entropy``: the same for the user encoder's attention over each history's clicks;
* ``topical_common_ratio`` (synthetic corpora only, from ``truth.json``): the mean word weight of
  topical words over that of common filler words ("the", "a", ...). Above 1 the model looks at
  the words that carry the topic.

Titles and histories with fewer than two real positions are left out: their attention is fixed.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .data.batching import gather_histories
from .data.split import Split
from .data.text import Vocab
from .metrics import normalized_entropy
from .scoring import category_ids, encode_all_news, model_device


@torch.inference_mode()
def word_weights(model, split: Split, rows: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """The news encoder's word attention [R,L] for news ``rows`` (zero on padding)."""
    device = model_device(model)
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i: i + batch_size]
        tokens = torch.from_numpy(split.news.tokens[chunk]).to(device)  # [b,L]
        extra = {}
        if getattr(model.config, "use_categories", False):
            extra = dict(zip(("categories", "subcategories"), category_ids(split.news, chunk, device)))
        _, att = model.news_encoder(tokens, need_weights=True, **extra)
        out.append(att.pooling.float().cpu().numpy())  # [b,L]
    return np.concatenate(out) if out else np.zeros((0, split.news.tokens.shape[1]), np.float32)


@torch.inference_mode()
def click_weights(model, split: Split, impressions: np.ndarray, *,
                  batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The user encoder's click attention [I,H] for the histories of ``impressions``, and the
    histories' mask [I,H] (True on real clicks)."""
    history, mask = gather_histories(split, impressions, model.config.history_len)  # [I,H], [I,H]
    news_vectors = encode_all_news(model, split)  # [N+1,D]
    device = news_vectors.device
    out = []
    for i in range(0, len(history), batch_size):
        rows = torch.from_numpy(history[i: i + batch_size]).to(device)  # [b,H]
        hist_mask = torch.from_numpy(mask[i: i + batch_size]).to(device)  # [b,H]
        _, att = model.user_encoder(news_vectors[rows], hist_mask, need_weights=True)
        out.append(att.pooling.float().cpu().numpy())  # [b,H]
    weights = np.concatenate(out) if out else np.zeros((0, model.config.history_len), np.float32)
    return weights, mask


def attention_stats(model, split: Split, vocab: Vocab, *, truth: dict[str, Any] | None = None,
                    max_news: int = 5000, max_impressions: int = 5000) -> dict[str, Any]:
    """Peakedness of ``model``'s word and click attention on ``split`` (first ``max_news`` news and
    ``max_impressions`` impressions); ``vocab`` is the model's. ``truth``: a synthetic corpus's
    truth.json, for the topical/common ratio."""
    was_training = model.training
    model.eval()
    try:
        rows = np.arange(1, min(len(split.news), max_news + 1))
        words = word_weights(model, split, rows)  # [R,L]
        tokens = split.news.tokens[rows]  # [R,L]
        impressions = np.arange(min(split.num_impressions, max_impressions))
        clicks, click_mask = click_weights(model, split, impressions)  # [I,H], [I,H]
    finally:
        model.train(was_training)
    word_mask = tokens != 0
    stats: dict[str, Any] = {
        "word_entropy": _mean_or_none(normalized_entropy(words, word_mask)),
        "click_entropy": _mean_or_none(normalized_entropy(clicks, click_mask)),
        "titles": int((word_mask.sum(1) >= 2).sum()), "histories": int((click_mask.sum(1) >= 2).sum()),
    }
    if truth is not None and "topical_words" in truth:
        stats["topical_common_ratio"] = topical_common_ratio(words, tokens, vocab, truth)
    return stats


def topical_common_ratio(weights: np.ndarray, tokens: np.ndarray, vocab: Vocab, truth: dict[str, Any]
                         ) -> float | None:
    """Mean attention on topical words over the mean on common words (None if either is absent)."""
    words = np.asarray(vocab.words, dtype=object)[tokens]  # [R,L]
    topical = [w for group in truth["topical_words"].values() for w in group]
    is_topical = np.isin(words, topical) & (tokens != 0)
    is_common = np.isin(words, list(truth["common_words"])) & (tokens != 0)
    if not is_topical.any() or not is_common.any():
        return None
    return float(weights[is_topical].mean() / weights[is_common].mean())


def _mean_or_none(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None
