"""How well a model ranks for each user: the AUC of each user's scorable impressions, averaged.

The studio picks its showcase users by it (the best, a typical one, the worst) and draws its
distribution. Pure NumPy on top of ``metrics``: the scores come from ``scoring.score_impressions``
(``Recommender.user_quality`` scores a whole split once, on the fast path).

A user's AUC is the mean of the per-impression AUC (the official formula, ``metrics.ranked_metrics``)
over the user's scorable impressions, those with a click and a non-click, as the split's own AUC
is the mean over all of them. A user without such an impression has none (NaN).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import per_impression_metrics

PICKS = ("best", "typical", "worst")


@dataclass(frozen=True)
class UserQuality:
    """Per user of a split (``Split.user_ids`` order): mean AUC, NaN without a scorable impression,
    and how many scorable impressions it averages."""

    auc: np.ndarray  # [U] float64
    impressions: np.ndarray  # [U] int64

    @property
    def scored(self) -> np.ndarray:
        """[U] bool: users with at least one scorable impression."""
        return self.impressions > 0

    def picks(self, among: np.ndarray | None = None) -> dict[str, int]:
        """``pick_users`` of this table."""
        return pick_users(self.auc, self.impressions, among=among)


def per_user_auc(labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray, *, users: np.ndarray,
                 num_users: int) -> UserQuality:
    """Mean AUC of each user over their scorable impressions. Impression ``i`` owns
    ``[offsets[i], offsets[i+1])`` of ``labels`` and ``scores`` and belongs to user ``users[i]``
    (a number below ``num_users``).

    >>> q = per_user_auc(np.array([1, 0, 0, 1, 1, 1, 0]), np.array([.9, .1, .8, .2, .5, .3, .4]),
    ...                  np.array([0, 2, 4, 5, 7]), users=np.array([0, 0, 2, 1]), num_users=3)
    >>> q.auc.tolist(), q.impressions.tolist()
    ([0.5, 0.0, nan], [2, 1, 0])
    """
    auc = per_impression_metrics(labels, scores, offsets)[:, 0]  # [I] NaN where unscorable
    users = np.asarray(users, dtype=np.int64)[: len(auc)]
    scorable = ~np.isnan(auc)
    counts = np.bincount(users[scorable], minlength=num_users).astype(np.int64)  # [U]
    sums = np.bincount(users[scorable], weights=auc[scorable], minlength=num_users)  # [U]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return UserQuality(auc=mean, impressions=counts)


def pick_users(auc: np.ndarray, impressions: np.ndarray, *, among: np.ndarray | None = None) -> dict[str, int]:
    """The users (rows) with the highest, the median and the lowest AUC among those with a scorable
    impression (and in ``among``, a [U] bool mask, when given); {} when there is none.

    Equal AUCs go to the user with more scorable impressions (more evidence), then the earlier row.
    "typical" is the median user: the lower middle one when their number is even.

    >>> pick_users(np.array([0.5, 1.0, np.nan, 0.2, 1.0]), np.array([2, 1, 0, 3, 4]))
    {'best': 4, 'typical': 0, 'worst': 3}
    >>> pick_users(np.array([0.5, 1.0]), np.array([1, 1]), among=np.array([False, False]))
    {}
    """
    auc = np.asarray(auc, dtype=np.float64)
    impressions = np.asarray(impressions, dtype=np.int64)
    usable = impressions > 0
    if among is not None:
        usable &= np.asarray(among, dtype=bool)
    rows = np.flatnonzero(usable)
    if not len(rows):
        return {}
    # ascending AUC; among equal AUCs more impressions first, then the earlier row
    order = rows[np.lexsort((rows, -impressions[rows], auc[rows]))]
    worst = order[0]
    top = auc[order[-1]]
    best = rows[np.lexsort((rows, -impressions[rows], auc[rows] != top))][0]  # the highest AUC, most impressions
    middle = auc[order[(len(order) - 1) // 2]]
    typical = rows[np.lexsort((rows, -impressions[rows], auc[rows] != middle))][0]
    return {"best": int(best), "typical": int(typical), "worst": int(worst)}


def rank_among(auc: np.ndarray, impressions: np.ndarray, row: int) -> tuple[int, int]:
    """(place, of): the user's place by AUC, 1 = the highest, among the users with a scorable impression;
    (0, n) when the user has none.

    >>> rank_among(np.array([0.5, 1.0, np.nan, 0.2]), np.array([2, 1, 0, 3]), 0)
    (2, 3)
    """
    scored = np.asarray(impressions) > 0
    total = int(scored.sum())
    if not scored[row]:
        return 0, total
    return int((np.asarray(auc)[scored] > auc[row]).sum()) + 1, total
