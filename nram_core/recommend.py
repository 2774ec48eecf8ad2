"""Serving a trained model over one split: rank an impression, rank the whole catalog,
explain a score. The CLI and the app both call this; it encodes the news vectors once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data.split import Split
from .families import require_nram
from .fileio import DataError
from .metrics import has_both_labels, impression_metrics
from .model import NRAM, Explanation
from .scoring import category_ids, encode_all_news, encode_histories, model_device, score_impressions
from .user_quality import UserQuality, per_user_auc


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Ranked:
    """Candidates in ranked order: news rows, scores, click probabilities, optional true labels."""

    rows: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray | None = None
    metrics: dict[str, float] | None = None  # of the impression, when it has a click and a non-click

    def top(self, n: int) -> Ranked:
        """The first ``n`` (without labels and metrics, which speak of the whole list)."""
        return Ranked(rows=self.rows[:n], scores=self.scores[:n], probabilities=self.probabilities[:n])

    def rank_of(self) -> dict[int, int]:
        """The 1-based rank of each news row in this list."""
        return {int(row): rank for rank, row in enumerate(self.rows.tolist(), start=1)}

    def score_of(self) -> dict[int, float]:
        """The score of each news row in this list."""
        return {int(row): float(score) for row, score in zip(self.rows.tolist(), self.scores.tolist())}


def rank_change(before: int | None, after: int) -> str:
    """A news' move between two rankings: ``=``, ``↑n`` (n places higher now), ``↓n``, or ``new``
    when it was not ranked before.

    >>> [rank_change(4, 1), rank_change(2, 7), rank_change(3, 3), rank_change(None, 5)]
    ['↑3', '↓5', '=', 'new']
    """
    if before is None:
        return "new"
    if before == after:
        return "="
    return f"↑{before - after}" if before > after else f"↓{after - before}"


class Recommender:
    """A model serving one split. ``identity`` is what tells it from another recommender to a cache
    of its answers (the app gives the run folder, the weights' version and the split's folder and name)."""

    def __init__(self, model: NRAM, split: Split, *, news_vectors: torch.Tensor | None = None,
                 identity: tuple = ()):
        require_nram(model, "ranking and explaining one user's news")
        self.model = model.eval()
        self.split = split
        self.news_vectors = news_vectors if news_vectors is not None else encode_all_news(model, split)
        self.identity = identity

    # ---- scoring -----------------------------------------------------------------------
    @torch.inference_mode()
    def user_vector(self, history: np.ndarray) -> torch.Tensor:
        """[D] vector of a history given as news rows; only the latest ``history_len`` clicks count."""
        history_len = self.model.config.history_len
        recent = np.asarray(history, dtype=np.int64)[-history_len:]
        rows = np.zeros((1, history_len), dtype=np.int64)
        mask = np.zeros((1, history_len), dtype=bool)
        rows[0, : len(recent)] = recent
        mask[0, : len(recent)] = True
        return encode_histories(self.model, self.news_vectors, rows, mask)[0]

    @torch.inference_mode()
    def score(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        cand = torch.as_tensor(np.asarray(candidates, dtype=np.int64), device=self.news_vectors.device)
        return (self.news_vectors[cand] @ self.user_vector(history)).float().cpu().numpy()  # [C,D]@[D] -> [C]

    def _ranked(self, rows: np.ndarray, scores: np.ndarray, labels: np.ndarray | None) -> Ranked:
        order = np.argsort(-scores, kind="stable")
        metrics = impression_metrics(labels, scores) if labels is not None and has_both_labels(labels) else None
        return Ranked(rows=rows[order], scores=scores[order], probabilities=sigmoid(scores[order]),
                      labels=None if labels is None else labels[order], metrics=metrics)

    def rank_impression(self, impression: int, *, history: np.ndarray | None = None) -> Ranked:
        """Rank one impression's candidates (with its own history unless another is given)."""
        candidates, labels = self.split.candidates_of(impression)
        if history is None:
            history = self.split.history_of(impression)
        return self._ranked(candidates, self.score(history, candidates), labels)

    @torch.inference_mode()
    def rank_catalog(self, history: np.ndarray, *, top: int = 10, category: str | None = None,
                     exclude_history: bool = True) -> Ranked:
        """Top news of the whole catalog for a history: one matrix-vector product over cached vectors."""
        scores = (self.news_vectors @ self.user_vector(history)).float().cpu().numpy()  # [N,D]@[D] -> [N]
        allowed = np.ones(len(scores), dtype=bool)
        allowed[0] = False
        if exclude_history:
            allowed[np.asarray(history, dtype=np.int64)] = False
        if category is not None:
            if category not in self.split.news.categories:
                raise DataError(f"unknown category {category!r}")
            allowed &= self.split.news.category == self.split.news.categories.index(category)
        candidates = np.flatnonzero(allowed)
        top = min(top, len(candidates))
        best = candidates[np.argpartition(-scores[candidates], top - 1)[:top]] if top else candidates[:0]
        return self._ranked(best, scores[best], None)

    def user_quality(self) -> UserQuality:
        """Every user's mean AUC over their scorable impressions of the split (``per_user_auc``): the
        whole split scored once on the fast path, reusing the news vectors encoded here."""
        scores, labels, offsets = score_impressions(self.model, self.split, news_vectors=self.news_vectors)
        return per_user_auc(labels, scores, offsets, users=self.split.users, num_users=len(self.split.user_ids))

    def vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """News vectors as float32 NumPy: of ``rows``, or of every news (row 0, padding, left out)."""
        chosen = self.news_vectors[1:] if rows is None else self.news_vectors[torch.as_tensor(
            np.asarray(rows, dtype=np.int64), device=self.news_vectors.device)]
        return chosen.float().cpu().numpy()  # [N,D] or [len(rows),D]

    def catalog_scores(self, history: np.ndarray) -> np.ndarray:
        """Scores of every news (row 0 excluded) for the distribution chart."""
        with torch.inference_mode():
            return (self.news_vectors[1:] @ self.user_vector(history)).float().cpu().numpy()

    def explain(self, history: np.ndarray, candidates: np.ndarray) -> Explanation:
        """Attention for the latest ``history_len`` clicks of ``history`` and the given candidate rows."""
        device = model_device(self.model)
        recent = np.asarray(history, dtype=np.int64)[-self.model.config.history_len:]
        candidates = np.asarray(candidates, dtype=np.int64)
        news = self.split.news

        def ids(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
            return category_ids(news, rows, device) if self.model.config.use_categories else None

        return self.model.explain(torch.from_numpy(news.tokens[recent]).to(device),
                                  torch.from_numpy(news.tokens[candidates]).to(device),
                                  history_categories=ids(recent), candidate_categories=ids(candidates))

    def row_of(self, news_id: str) -> int:
        row = self.split.news.index.get(news_id)
        if row is None:
            raise DataError(f"unknown news id {news_id!r} in {self.split.folder}")
        return row

