"""Serving a trained model over one split: rank an impression, rank the whole catalog,
explain a score. The CLI and the app both call this, for a model of any family.

How each family is served (its own file says why it is built so):
* NRAM and NAML encode news and users apart: every news vector once, then one user vector per
  request and dot products;
* LSTUR also encodes news apart, but its user vector comes from a GRU started (``ini``) or joined
  (``con``) by the user-id embedding, so a request needs the user's id;
* NPA reads every title with the reader's personalized word attention, so no news vector exists
  apart from a reader: each request is scored through the model's ``score_batch``, in chunks.

A user id is an id of the run's ``UserVocab`` (``data.users``): ``rank_impression`` takes the
impression's own (``Split.model_users``), the other calls take ``user=``, or the one the
recommender was bound to (``for_user``), else 0, the unknown user: the state a dev or test user
absent from train is scored in. Families without a user embedding ignore it.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import numpy as np
import torch

from .data.batching import make_batch
from .data.split import Split
from .fileio import DataError
from .metrics import has_both_labels, impression_metrics
from .scoring import abstract_tokens, category_ids, encode_all_news, encode_histories, model_device, score_impressions
from .user_quality import UserQuality, per_user_auc

UNKNOWN_USER = 0  # the id of a user the model never trained on (``data.users.UserVocab``)
REQUEST_CHUNK = 2048  # candidates per ``score_batch`` call when a family is scored per request (NPA)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def kind_of(thing) -> str:
    """The family of a model, a config or an explanation: its ``kind``, or of its ``config``; NRAM's
    ``model.Explanation`` and configs written before families existed have none and are ``"nram"``.

    >>> from types import SimpleNamespace
    >>> kind_of(SimpleNamespace(kind="lstur")), kind_of(SimpleNamespace(config=SimpleNamespace(kind="npa"))), kind_of(1)
    ('lstur', 'npa', 'nram')
    """
    kind = getattr(thing, "kind", None)
    if kind is None:
        kind = getattr(getattr(thing, "config", None), "kind", None)
    return kind or "nram"


def word_weights(explanation) -> tuple[np.ndarray, np.ndarray]:
    """(history [H,L], candidate [C,L]) title-word attention of an explanation of any family (NAML
    calls them its title weights, beside its abstract weights)."""
    for stem in ("word", "title"):
        history = getattr(explanation, f"history_{stem}_weights", None)
        candidate = getattr(explanation, f"candidate_{stem}_weights", None)
        if history is not None and candidate is not None:
            return np.asarray(history), np.asarray(candidate)
    raise ValueError(f"a {kind_of(explanation)} explanation without word weights")


def has_click_attention(explanation) -> bool:
    """Whether the family pools the clicks with attention (per-click weights and an exact per-click
    split of the score exist); LSTUR's GRU has none, and says so with ``click_attention=False``."""
    return bool(getattr(explanation, "click_attention", True))


def click_effects(explanation) -> np.ndarray:
    """[C,H] what each click adds to each candidate's score, measured: the score with the click minus the
    score with it left out (``leave_one_out`` is the reverse difference). For a family without per-click
    attention (LSTUR's GRU) these stand where the exact contributions would; they need not add up to the score."""
    return -np.asarray(explanation.leave_one_out, dtype=np.float64)


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
    """A model of any family serving one split. ``identity`` is what tells it from another recommender
    to a cache of its answers (the app gives the run folder, the weights' version and the split's folder
    and name; ``for_user`` adds the user). A model that reads user ids needs the split aligned to its
    run's users (``RunInfo.load_split``)."""

    def __init__(self, model: torch.nn.Module, split: Split, *, news_vectors: torch.Tensor | None = None,
                 identity: tuple = ()):
        self.model = model.eval()
        self.split = split
        self.config = model.config
        self.kind = kind_of(model)
        self.reads_users = bool(getattr(self.config, "reads_users", False))
        if self.reads_users and split.model_users is None:
            raise DataError(f"{split.folder}: a {self.kind} model reads user ids, but the {split.name} split was read "
                            "without the run's users (load it with RunInfo.load_split)")
        # A family whose news vectors depend on the reader (NPA) has no encode_news: scored per request.
        self.per_request = not callable(getattr(model, "encode_news", None))
        self.news_vectors = None if self.per_request else (
            news_vectors if news_vectors is not None else encode_all_news(model, split))
        self.identity = identity
        self.user = UNKNOWN_USER  # who a call that names no user is (``for_user``)
        self._reader_vectors: torch.Tensor | None = None  # NPA's news as the unknown user reads them

    # ---- who the user is -----------------------------------------------------------------
    def for_user(self, user: int) -> Recommender:
        """This recommender with ``user`` (an id of the run's ``UserVocab``) as the user of every call
        that names none, sharing the model, split and news vectors; its identity names the user, so a
        cache keeps its answers apart. A family without a user embedding returns itself."""
        if not self.reads_users or int(user) == self.user:
            return self
        bound = copy.copy(self)
        bound.user = int(user)
        bound.identity = (*self.identity, "user", int(user))
        return bound

    def user_id(self, user: str) -> int:
        """The run's id of the split's user ``user`` (0: a user the model never trained on, or a family
        without a user embedding)."""
        if not self.reads_users:
            return UNKNOWN_USER
        impressions = self.split.user_impressions(user)  # a DataError for a user the split lacks
        return int(self.split.model_users[impressions[-1]]) if len(impressions) else UNKNOWN_USER

    def impression_user(self, impression: int) -> int:
        """The run's id of the user of ``impression`` (0 for a family without a user embedding)."""
        return int(self.split.model_users[impression]) if self.reads_users else UNKNOWN_USER

    def _who(self, user: int | None) -> int:
        return self.user if user is None else int(user)

    @property
    def cold_users_tie(self) -> bool:
        """Whether a history with no click scores every candidate the same: a run without the learned
        empty-history vector, whose user vector is then zero (LSTUR's GRU always takes one step)."""
        return self.kind != "lstur" and not getattr(self.config, "empty_history", False)

    # ---- scoring -----------------------------------------------------------------------
    def _history_rows(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The latest ``history_len`` clicks of ``history`` as one right-padded row: rows [1,H], mask [1,H]."""
        history_len = self.config.history_len
        recent = np.asarray(history, dtype=np.int64)[-history_len:]
        rows = np.zeros((1, history_len), dtype=np.int64)
        mask = np.zeros((1, history_len), dtype=bool)
        rows[0, : len(recent)] = recent
        mask[0, : len(recent)] = True
        return rows, mask

    @torch.inference_mode()
    def user_vector(self, history: np.ndarray, *, user: int | None = None) -> torch.Tensor:
        """[D] vector of a history given as news rows (only the latest ``history_len`` clicks count),
        for a family that encodes news apart; LSTUR's also depends on ``user``."""
        if self.per_request:
            raise DataError(f"a {self.kind} model has no user vector apart from the news it reads")
        rows, mask = self._history_rows(history)
        if self.reads_users:
            device = self.news_vectors.device
            users = torch.tensor([self._who(user)], dtype=torch.long, device=device)  # [1]
            clicked = self.news_vectors[torch.from_numpy(rows).to(device)]  # [1,H] -> [1,H,D]
            return self.model.encode_users_with_ids(clicked, torch.from_numpy(mask).to(device),
                                                    users)[0].float()  # [1,H,D] -> [D]
        return encode_histories(self.model, self.news_vectors, rows, mask)[0]

    @torch.inference_mode()
    def _request_scores(self, history: np.ndarray, candidates: np.ndarray, user: int) -> np.ndarray:
        """Scores [C] of ``candidates`` through ``score_batch``, REQUEST_CHUNK candidates a call (NPA)."""
        rows, mask = self._history_rows(history)
        device = model_device(self.model)
        candidates = np.asarray(candidates, dtype=np.int64)
        scores = np.empty(len(candidates), dtype=np.float32)
        for lo in range(0, len(candidates), REQUEST_CHUNK):
            chunk = candidates[None, lo: lo + REQUEST_CHUNK]  # [1,c]
            batch = make_batch(self.split, rows, mask, chunk, users=np.array([user], dtype=np.int64))
            logits = self.model.score_batch(batch.to(device))  # [1,c]
            scores[lo: lo + chunk.shape[1]] = logits[0].float().cpu().numpy()  # [1,c] -> [c]
        return scores

    @torch.inference_mode()
    def score(self, history: np.ndarray, candidates: np.ndarray, *, user: int | None = None) -> np.ndarray:
        """Scores [C] of the news rows ``candidates`` for a history (and, where the family reads it, a user)."""
        if self.per_request:
            return self._request_scores(history, candidates, self._who(user))
        cand = torch.as_tensor(np.asarray(candidates, dtype=np.int64), device=self.news_vectors.device)
        vector = self.user_vector(history, user=user)  # [D]
        return (self.news_vectors[cand] @ vector).float().cpu().numpy()  # [C,D]@[D] -> [C]

    def _ranked(self, rows: np.ndarray, scores: np.ndarray, labels: np.ndarray | None) -> Ranked:
        order = np.argsort(-scores, kind="stable")
        metrics = impression_metrics(labels, scores) if labels is not None and has_both_labels(labels) else None
        return Ranked(rows=rows[order], scores=scores[order], probabilities=sigmoid(scores[order]),
                      labels=None if labels is None else labels[order], metrics=metrics)

    def rank_impression(self, impression: int, *, history: np.ndarray | None = None) -> Ranked:
        """Rank one impression's candidates for its own user (with its own history unless another is given)."""
        candidates, labels = self.split.candidates_of(impression)
        if history is None:
            history = self.split.history_of(impression)
        return self._ranked(candidates, self.score(history, candidates, user=self.impression_user(impression)),
                            labels)

    def catalog_scores(self, history: np.ndarray, *, user: int | None = None) -> np.ndarray:
        """Scores of every news (row 0 excluded), [N], for a history (and user)."""
        if self.per_request:
            return self._request_scores(history, np.arange(1, len(self.split.news.tokens)), self._who(user))
        with torch.inference_mode():
            vector = self.user_vector(history, user=user)  # [D]
            return (self.news_vectors[1:] @ vector).float().cpu().numpy()  # [N,D]@[D] -> [N]

    def rank_catalog(self, history: np.ndarray, *, top: int = 10, category: str | None = None,
                     exclude_history: bool = True, user: int | None = None) -> Ranked:
        """Top news of the whole catalog for a history (and user): one matrix-vector product over the
        cached news vectors, or (NPA) the catalog scored per request."""
        allowed = np.ones(len(self.split.news.tokens), dtype=bool)
        allowed[0] = False
        if exclude_history:
            allowed[np.asarray(history, dtype=np.int64)] = False
        if category is not None:
            if category not in self.split.news.categories:
                raise DataError(f"unknown category {category!r}")
            allowed &= self.split.news.category == self.split.news.categories.index(category)
        candidates = np.flatnonzero(allowed)
        if self.per_request:  # only the allowed news are read
            scores = np.zeros(len(allowed), dtype=np.float32)
            scores[candidates] = self._request_scores(history, candidates, self._who(user))
        else:
            scores = np.concatenate([[0.0], self.catalog_scores(history, user=user)]).astype(np.float32)  # [N+1]
        top = min(top, len(candidates))
        best = candidates[np.argpartition(-scores[candidates], top - 1)[:top]] if top else candidates[:0]
        return self._ranked(best, scores[best], None)

    def user_quality(self) -> UserQuality:
        """Every user's mean AUC over their scorable impressions of the split (``per_user_auc``): the
        whole split scored once by ``score_impressions`` (on the fast path, reusing the news vectors
        encoded here, for a family with news vectors of its own, LSTUR with each impression's user id;
        per impression, with its user id, for NPA)."""
        scores, labels, offsets = score_impressions(self.model, self.split, news_vectors=self.news_vectors)
        return per_user_auc(labels, scores, offsets, users=self.split.users, num_users=len(self.split.user_ids))

    def vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """News vectors as float32 NumPy: of ``rows``, or of every news (row 0, padding, left out). NPA
        has none apart from a reader: its news as the unknown user reads them (the generic query)."""
        table = self._unknown_reader_vectors() if self.per_request else self.news_vectors
        chosen = table[1:] if rows is None else table[torch.as_tensor(np.asarray(rows, dtype=np.int64),
                                                                       device=table.device)]
        return chosen.float().cpu().numpy()  # [N,D] or [len(rows),D]

    @torch.inference_mode()
    def _unknown_reader_vectors(self) -> torch.Tensor:
        """[N+1,D] NPA news vectors pooled with the unknown user's word query, once."""
        if self._reader_vectors is None:
            model, news = self.model, self.split.news
            device = model_device(model)
            word_query, _ = model.queries(torch.tensor([UNKNOWN_USER], device=device))  # [1] -> [1,Q]
            parts = []
            for lo in range(0, len(news.tokens), REQUEST_CHUNK):
                tokens = torch.from_numpy(news.tokens[lo: lo + REQUEST_CHUNK].astype(np.int64)).to(device)  # [n,L]
                mask = tokens != 0  # [n,L]
                context = model.news_encoder.contextualise(tokens, mask)  # [n,L] -> [n,L,F]
                rows = torch.arange(len(tokens), device=device)[None, :]  # [1,n]
                vectors, _ = model.news_encoder.pool(context, mask, rows, torch.ones_like(rows, dtype=torch.bool),
                                                     word_query)  # [1,n] -> [1,n,D]
                parts.append(vectors[0].float())
            table = torch.cat(parts)  # [N+1,D]
            table[0] = 0.0
            self._reader_vectors = table
        return self._reader_vectors

    # ---- explaining ----------------------------------------------------------------------
    def explain(self, history: np.ndarray, candidates: np.ndarray, *, user: int | None = None):
        """The model's own explanation (its family's dataclass: ``kind``, ``scores`` [C], word weights,
        and what the family has besides) of the latest ``history_len`` clicks of ``history`` and the
        given candidate rows, for ``user`` where the family reads it."""
        device = model_device(self.model)
        recent = np.asarray(history, dtype=np.int64)[-self.config.history_len:]
        candidates = np.asarray(candidates, dtype=np.int64)
        news = self.split.news

        def tokens(table: np.ndarray, rows: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(table[rows].astype(np.int64)).to(device)

        offered = {}  # what a family's explain may read; each takes what its signature names
        if self.config.use_categories:
            offered.update(history_categories=category_ids(news, recent, device),
                           candidate_categories=category_ids(news, candidates, device))
        abstracts = abstract_tokens(self.model, self.split)  # [N+1,A] for a family that reads them, else None
        if abstracts is not None:
            offered.update(history_abstracts=tokens(abstracts, recent),
                           candidate_abstracts=tokens(abstracts, candidates))
        if self.reads_users:
            offered["user"] = self._who(user)
        accepted = inspect.signature(self.model.explain).parameters
        return self.model.explain(tokens(news.tokens, recent), tokens(news.tokens, candidates),
                                  **{name: value for name, value in offered.items() if name in accepted})

    def row_of(self, news_id: str) -> int:
        row = self.split.news.index.get(news_id)
        if row is None:
            raise DataError(f"unknown news id {news_id!r} in {self.split.folder}")
        return row
