"""Ranking metrics for MIND: AUC, MRR, nDCG@5 and nDCG@10 of each impression, averaged over the
impressions, with the formulas of MIND's official evaluate.py.

One path computes them. ``impression_ranks`` numbers each impression's candidates 1..n by score,
descending; ``ranked_metrics`` turns labels and ranks into the four metrics:

* AUC: the share of (click, non-click) pairs in which the click ranks higher;
* MRR: ``sum(label / rank) / sum(label)``;
* nDCG@k: gains ``2**label - 1`` discounted by ``log2(rank + 1)`` over ranks 1..k, divided by the
  same sum for the ideal ranking (labels descending).

Every function that takes scores (``impression_metrics``, ``per_impression_metrics``,
``evaluate_flat``) ranks them with ``impression_ranks`` first, so these functions, ``evaluate``,
``predict`` and the studio all give the same figures for the same scores.

The tie rule: among equal scores, the candidate listed earlier in the impression ranks first. A
click listed first among three candidates of equal score has AUC 1.0 and MRR 1.0; listed last, 0.0
and 1/3. evaluate.py reads ``predict``'s file of ranks and scores ``1 / rank``, which holds no ties,
so its figures on that file are exactly ours. It differs from ours only on raw scores with exact
ties: there its ``roc_auc_score`` counts a tied (click, non-click) pair as one half (AUC 0.5 for the
three tied candidates above), and its MRR and nDCG rank by ``np.argsort(y_score)[::-1]``, which leaves
the order of ties to numpy's sort (an order that can change between numpy versions and CPUs).
Continuous model scores do not tie; a cold user's all-equal scores do, and so do the popularity
baseline's scores of news with equal click counts.

evaluate.py calls ``roc_auc_score`` on every impression, which raises on an impression that lacks
either a click or a non-click (the official test set has none such). We skip those impressions for
all four metrics, so every average runs over the same impressions, and report how many were skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

METRIC_NAMES = ("auc", "mrr", "ndcg@5", "ndcg@10")
# User segments by history length: (name, fewest clicks, most clicks), both inclusive.
HISTORY_SEGMENTS: tuple[tuple[str, int, int], ...] = (("cold (0)", 0, 0), ("1-5", 1, 5), ("6-20", 6, 20),
                                                      (">20", 21, 1 << 62))
# Candidates ranked or scored at once (whole impressions; a longer impression is a block of its own):
# besides its output, the rank path holds under 100 bytes per candidate of a block.
BLOCK_CANDIDATES = 1_000_000


# ---- ranks ---------------------------------------------------------------------------------------
def _float32_order_key(values: np.ndarray) -> np.ndarray | None:
    """An int64 key in [0, 2**32) that orders like ``values`` when every value is a float32
    without NaN (-0.0 and 0.0 get one key, as they compare equal); None otherwise.

    >>> _float32_order_key(np.array([0.5, -2.0, 0.0, -0.0])).argsort(kind="stable").tolist()
    [1, 2, 3, 0]
    """
    values = np.asarray(values)
    if values.dtype != np.float32:
        if values.dtype.kind not in "fiub" or values.size == 0:
            return None
        if values.dtype.kind in "iub" and not -(1 << 24) <= values.min() <= values.max() <= 1 << 24:
            return None  # integers are exact in float32 only up to 2**24
        narrow = values.astype(np.float32)
        if not np.array_equal(narrow, values):  # NaN never equals itself, so it lands here too
            return None
        values = narrow
    elif np.isnan(values).any():
        return None
    bits = (values + np.float32(0.0)).view(np.uint32).astype(np.int64)  # x + 0.0 turns -0.0 into 0.0
    return np.where(bits >= 1 << 31, (1 << 32) - 1 - bits, bits + (1 << 31))  # sign-magnitude -> order


def grouped_order(owner: np.ndarray, values: np.ndarray, *, descending: bool) -> np.ndarray:
    """The order that sorts candidates by ``owner`` (impression, ascending), then by ``values``,
    equal values keeping their listed order: what ``np.lexsort((±values, owner))`` gives. float32
    values take one stable integer sort of a combined key, faster than ``np.lexsort``; other
    values take ``np.lexsort`` itself.

    >>> grouped_order(np.array([0, 0, 0, 1, 1]), np.array([0.5, 0.9, 0.5, 0.1, 0.2]), descending=True).tolist()
    [1, 0, 2, 4, 3]
    """
    owner = np.asarray(owner)
    key = _float32_order_key(values)
    if key is None or (len(owner) and int(owner.max()) >= 1 << 30):
        values = np.asarray(values)
        signed = values.astype(np.int64 if values.dtype.kind in "iub" else np.float64)
        return np.lexsort((-signed if descending else signed, owner))  # lexsort is stable
    if descending:
        key = (1 << 32) - 1 - key
    combined = owner.astype(np.int64) << 32 | key  # [N]
    return np.argsort(combined, kind="stable")


def _blocks(offsets: np.ndarray) -> Iterator[tuple[int, int]]:
    """Impression runs ``[a, b)`` of at most BLOCK_CANDIDATES candidates each (at least one impression)."""
    start, n = 0, len(offsets) - 1
    while start < n:
        stop = int(np.searchsorted(offsets, offsets[start] + BLOCK_CANDIDATES, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        yield start, stop
        start = stop


def _checked_offsets(offsets: np.ndarray, length: int, names: str) -> np.ndarray:
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(offsets) and (offsets[0] < 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > length):
        raise ValueError(f"offsets must rise from >= 0 to at most {length}, the number of {names}; "
                         f"got {offsets[0]} .. {offsets[-1]}")
    return offsets


def impression_ranks(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The 1-based rank of every candidate inside its impression, by score descending, with the tie
    rule: among equal scores the candidate listed earlier ranks first. Impression ``i`` holds the
    candidates ``[offsets[i], offsets[i+1])``; ``scores`` holds those of ``offsets[0]`` to
    ``offsets[-1]`` (``scores[0]`` is candidate ``offsets[0]``). ``predict`` writes these ranks and
    ``evaluate`` scores them, so its figures are exactly those evaluate.py computes from
    ``predict``'s file (``1 / rank``).

    >>> impression_ranks(np.array([0.1, 0.9, 0.5, 0.0, 0.0]), np.array([0, 3, 5])).tolist()
    [3, 1, 2, 1, 2]
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    scores = np.asarray(scores)
    local = offsets - offsets[0] if len(offsets) else offsets
    span = int(local[-1]) if len(local) else 0
    if len(scores) != span or np.any(np.diff(local) < 0):
        raise ValueError(f"offsets must rise, and scores hold the {span} candidates from offsets[0] to "
                         f"offsets[-1]; got {len(scores)} scores")
    ranks = np.empty(span, dtype=np.int64)
    for a, b in _blocks(local):
        lo, hi = int(local[a]), int(local[b])
        sizes = np.diff(local[a: b + 1])  # [i]
        owner = np.repeat(np.arange(b - a), sizes)  # [n] impression of each candidate, inside the block
        order = grouped_order(owner, scores[lo:hi], descending=True)  # [n] ranked, per impression
        ranks[lo + order] = np.arange(hi - lo) - (local[a:b] - lo)[owner] + 1  # [n] place inside the impression
    return ranks


# ---- metrics from ranks --------------------------------------------------------------------------
def _segment_sum(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Sum of ``values`` [N] per impression ``owner`` [N]: [I]."""
    return np.bincount(owner, weights=values, minlength=n)


def ranked_metrics(labels: np.ndarray, ranks: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The metrics of every impression stored flat, from ``ranks`` that number each impression's
    candidates 1..n (as ``impression_ranks`` and ``predict``'s file do): impression ``i`` owns
    ``[offsets[i], offsets[i+1])`` of ``labels`` and ``ranks``. A float array ``(n_impressions, 4)``
    in METRIC_NAMES order, NaN for impressions that lack a click or a non-click. Ranks that are not
    such a numbering raise ``ValueError``.

    >>> ranked_metrics(np.array([1, 0, 0, 1, 1]), np.array([2, 1, 3, 2, 1]), np.array([0, 3, 5]))[0].round(4).tolist()
    [0.5, 0.5, 0.6309, 0.6309]
    """
    labels, ranks = np.asarray(labels), np.asarray(ranks)
    offsets = _checked_offsets(offsets, min(len(labels), len(ranks)), "labels and ranks")
    if len(offsets) < 2:
        return np.full((0, len(METRIC_NAMES)), np.nan)
    parts = []
    for a, b in _blocks(offsets):
        lo, hi = int(offsets[a]), int(offsets[b])
        parts.append(_block_metrics(labels[lo:hi], ranks[lo:hi], offsets[a: b + 1] - lo))
    return np.concatenate(parts)


def _block_metrics(labels: np.ndarray, ranks: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """ranked_metrics for offsets that start at 0 and end at ``len(labels)``."""
    n, total = len(offsets) - 1, int(offsets[-1])
    sizes = np.diff(offsets)  # [I]
    owner = np.repeat(np.arange(n), sizes)  # [N] impression of each candidate
    first = offsets[:-1][owner]  # [N] the impression's first flat position
    rank = ranks.astype(np.int64)  # [N]
    if total and (rank.min() < 1 or np.any(rank > sizes[owner])
                  or np.bincount(first + rank - 1, minlength=total).max() > 1):
        raise ValueError("ranks must number each impression's candidates 1..n, each rank once")
    y = labels.astype(np.float64)  # [N]
    n_pos = _segment_sum((y > 0).astype(np.float64), owner, n)  # [I]
    n_neg = sizes - n_pos
    out = np.full((n, len(METRIC_NAMES)), np.nan)
    usable = (n_pos > 0) & (n_neg > 0)
    if not usable.any():
        return out
    if np.isin(labels, (0, 1)).all():  # the ideal ranking puts every click first
        ideal_discount = np.cumsum(1.0 / np.log2(np.arange(2, 12, dtype=np.float64)))  # [10]
        ideal = {k: np.where(n_pos > 0, ideal_discount[np.clip(np.minimum(n_pos, k).astype(np.int64) - 1, 0, None)],
                             0.0) for k in (5, 10)}
    else:  # graded labels: the ideal ranking sorts them
        y_ideal = y[grouped_order(owner, y, descending=True)]  # [N] labels descending, per impression
        place = np.arange(total) - first  # [N] 0-based place inside the impression
        weight = (2.0**y_ideal - 1) / np.log2(place + 2.0)  # [N]
        ideal = {k: _segment_sum(np.where(place < k, weight, 0.0), owner, n) for k in (5, 10)}
    gain = (2.0**y - 1) / np.log2(rank + 1.0)  # [N] discounted gain at its rank
    with np.errstate(divide="ignore", invalid="ignore"):
        ascending = (sizes[owner] + 1 - rank).astype(np.float64)  # [N] 1-based rank by score ascending
        auc = (_segment_sum(ascending * (y > 0), owner, n) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
        mrr = _segment_sum(y / rank, owner, n) / _segment_sum(y, owner, n)
        ndcg = [_segment_sum(np.where(rank <= k, gain, 0.0), owner, n) / ideal[k] for k in (5, 10)]
    metrics = np.stack([auc, mrr, *ndcg], axis=1)  # [I,4]
    out[usable] = metrics[usable]
    return out


# ---- metrics from scores: the rank path on ranks from ``impression_ranks`` -----------------------
def per_impression_metrics(labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``ranked_metrics`` of the scores' ``impression_ranks``: the metrics of every impression stored
    flat, impression ``i`` owning ``[offsets[i], offsets[i+1])`` of ``labels`` and ``scores``. NaN for
    impressions that lack a click or a non-click.

    >>> per_impression_metrics(np.array([1, 0, 1, 1]), np.array([.9, .1, .5, .4]), np.array([0, 2, 4]))[:, 0]
    array([ 1., nan])
    >>> per_impression_metrics(np.array([1, 0, 0]), np.array([.5, .5, .5]), np.array([0, 3]))  # ties
    array([[1., 1., 1., 1.]])
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    offsets = _checked_offsets(offsets, min(len(labels), len(scores)), "labels and scores")
    if len(offsets) < 2:
        return np.full((0, len(METRIC_NAMES)), np.nan)
    lo, hi = int(offsets[0]), int(offsets[-1])
    local = offsets - lo
    return ranked_metrics(labels[lo:hi], impression_ranks(scores[lo:hi], local), local)


def impression_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """All four metrics of one impression, which must hold a click and a non-click.

    >>> impression_metrics(np.array([1, 0]), np.array([2.0, 1.0]))
    {'auc': 1.0, 'mrr': 1.0, 'ndcg@5': 1.0, 'ndcg@10': 1.0}
    >>> impression_metrics(np.array([1, 0, 0]), np.array([0.5, 0.5, 0.5]))  # ties: listed first ranks first
    {'auc': 1.0, 'mrr': 1.0, 'ndcg@5': 1.0, 'ndcg@10': 1.0}
    >>> {k: round(v, 4) for k, v in impression_metrics(np.array([0, 0, 1]), np.array([0.5, 0.5, 0.5])).items()}
    {'auc': 0.0, 'mrr': 0.3333, 'ndcg@5': 0.5, 'ndcg@10': 0.5}
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels and scores must be two 1-d arrays of one length; got shapes {labels.shape} "
                         f"and {scores.shape}")
    if not has_both_labels(labels):
        raise ValueError("an impression's metrics need a click and a non-click among its labels")
    row = per_impression_metrics(labels, scores, np.array([0, len(labels)]))[0]
    return dict(zip(METRIC_NAMES, row.tolist()))


def has_both_labels(labels: np.ndarray) -> bool:
    """True when an impression holds a click and a non-click, so that it can be scored.

    >>> has_both_labels(np.array([1, 0])), has_both_labels(np.array([1, 1]))
    (True, False)
    """
    labels = np.asarray(labels)
    positives = int((labels > 0).sum())
    return 0 < positives < labels.size


# ---- averages --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalResult:
    """Averaged metrics plus how many impressions were scored and skipped.

    >>> mean_metrics(np.array([[1.0, 1.0, 0.5, 0.5], [np.nan] * 4])).as_dict()
    {'auc': 1.0, 'mrr': 1.0, 'ndcg@5': 0.5, 'ndcg@10': 0.5, 'impressions': 1, 'skipped_impressions': 1}
    """

    auc: float
    mrr: float
    ndcg5: float
    ndcg10: float
    impressions: int
    skipped: int
    # The same metrics per user segment (``segment_metrics``), when the evaluation asked for them.
    segments: dict[str, "EvalResult"] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "auc": self.auc,
            "mrr": self.mrr,
            "ndcg@5": self.ndcg5,
            "ndcg@10": self.ndcg10,
            "impressions": self.impressions,
            "skipped_impressions": self.skipped,
        }


def mean_metrics(per_impression: np.ndarray) -> EvalResult:
    """Average per-impression metrics, leaving out the unscorable (NaN) impressions.

    >>> mean_metrics(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.5, 0.5, 0.5], [np.nan] * 4])).auc
    0.5
    """
    scored = ~np.isnan(per_impression[:, 0])
    n = int(scored.sum())
    means = per_impression[scored].mean(axis=0) if n else np.full(len(METRIC_NAMES), np.nan)
    return EvalResult(
        auc=float(means[0]),
        mrr=float(means[1]),
        ndcg5=float(means[2]),
        ndcg10=float(means[3]),
        impressions=n,
        skipped=int(len(per_impression) - n),
    )


def evaluate_flat(labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray) -> EvalResult:
    """``per_impression_metrics``, averaged.

    >>> evaluate_flat(np.array([1, 0, 0, 1]), np.array([.9, .1, .8, .2]), np.array([0, 2, 4])).auc
    0.5
    """
    return mean_metrics(per_impression_metrics(labels, scores, offsets))


def segment_metrics(per_impression: np.ndarray, history_lengths: np.ndarray,
                    segments: tuple[tuple[str, int, int], ...] = HISTORY_SEGMENTS) -> dict[str, EvalResult]:
    """``mean_metrics`` of the impressions whose history length falls in each segment; a segment
    with no scorable impression has NaN metrics and 0 impressions.

    >>> per = np.array([[1.0] * 4, [0.5] * 4, [0.0] * 4])
    >>> {name: r.auc for name, r in segment_metrics(per, np.array([0, 3, 30])).items()}
    {'cold (0)': 1.0, '1-5': 0.5, '6-20': nan, '>20': 0.0}
    """
    return {name: mean_metrics(per_impression[(history_lengths >= lo) & (history_lengths <= hi)])
            for name, lo, hi in segments}


# ---- attention ---------------------------------------------------------------------------------------
def normalized_entropy(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the entropy of the attention ``weights`` [R,S] over the positions where ``mask``
    [R,S] is True, divided by log(n) for n real positions: 1.0 is uniform attention, 0.0 all weight
    on one position. Rows with fewer than two real positions are NaN (their attention is fixed).

    >>> w = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]])
    >>> m = np.array([[True, True, False], [True, True, False], [True, True, True], [True, False, False]])
    >>> np.round(normalized_entropy(w, m), 4).tolist()
    [1.0, 0.0, 0.9464, nan]
    """
    weights = np.where(mask, np.asarray(weights, dtype=np.float64), 0.0)
    real = mask.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(weights > 0, -weights * np.log(np.where(weights > 0, weights, 1.0)), 0.0)
        entropy = terms.sum(axis=1) / np.log(real)
    return np.where(real >= 2, entropy, np.nan)
