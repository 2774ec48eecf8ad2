"""Ranking metrics for MIND, with the exact formulas of MIND's official evaluate.py.

Every metric is computed per impression and then averaged over impressions.

* AUC: the ROC AUC of the impression's scores (ties count one half, as in
  ``sklearn.metrics.roc_auc_score``).
* MRR: ``sum(label / rank) / sum(label)``, ranks from ``np.argsort(score)[::-1]``.
* nDCG@k: gain ``2**y - 1``, discount ``log2(i + 2)``, divided by the ideal DCG.

evaluate.py calls ``roc_auc_score`` on every impression, which raises on an
impression that lacks either a click or a non-click (the official test set has
none such). We skip those impressions for all four metrics, so every average runs
over the same impressions, and report how many were skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

METRIC_NAMES = ("auc", "mrr", "ndcg@5", "ndcg@10")
# User segments by history length: (name, fewest clicks, most clicks), both inclusive.
HISTORY_SEGMENTS: tuple[tuple[str, int, int], ...] = (("cold (0)", 0, 0), ("1-5", 1, 5), ("6-20", 6, 20),
                                                      (">20", 21, 1 << 62))
BLOCK_CANDIDATES = 1_000_000  # per_impression_metrics sorts at most about this many candidates at once


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


def grouped_order(owner: np.ndarray, values: np.ndarray, *, descending: bool, later_first: bool = False) -> np.ndarray:
    """The order that sorts candidates by ``owner`` (impression, ascending), then by ``values``,
    equal values keeping their positions' order (``later_first``: reversed): what
    ``np.lexsort((±position, ±values, owner))`` gives. float32 values take one stable integer
    sort of a combined key, about five times faster than ``np.lexsort``; other values take
    ``np.lexsort`` itself.

    >>> grouped_order(np.array([0, 0, 0, 1, 1]), np.array([0.5, 0.9, 0.5, 0.1, 0.2]), descending=True).tolist()
    [1, 0, 2, 4, 3]
    >>> grouped_order(np.array([0, 0, 0, 1, 1]), np.array([0.5, 0.9, 0.5, 0.1, 0.2]), descending=True,
    ...               later_first=True).tolist()
    [1, 2, 0, 4, 3]
    """
    owner = np.asarray(owner)
    key = _float32_order_key(values)
    n = len(owner)
    if key is None or (n and int(owner.max()) >= 1 << 30):
        position = np.arange(n)
        values = np.asarray(values)
        signed = values.astype(np.int64 if values.dtype.kind in "iub" else np.float64)
        if descending:
            signed = -signed
        return np.lexsort((-position if later_first else position, signed, owner))
    if descending:
        key = (1 << 32) - 1 - key
    combined = owner.astype(np.int64) << 32 | key  # [N]
    if later_first:  # a stable sort of the reversed array keeps equal keys in reversed order
        return (n - 1) - np.argsort(combined[::-1], kind="stable")
    return np.argsort(combined, kind="stable")


def auc_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney statistic with average ranks for ties.

    >>> auc_score(np.array([1, 0, 0]), np.array([0.9, 0.1, 0.5]))
    1.0
    >>> auc_score(np.array([0, 1, 0, 1]), np.array([0.3, 0.3, 0.1, 0.8]))
    0.875
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int((labels > 0).sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative label")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average 1-based ranks over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [scores.size]))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    rank_sum = ranks[labels > 0].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mrr_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean reciprocal rank of the clicks, as evaluate.py defines it.

    >>> mrr_score(np.array([0, 1, 0]), np.array([0.9, 0.5, 0.1]))
    0.5
    >>> round(mrr_score(np.array([1, 0, 1]), np.array([0.9, 0.5, 0.1])), 4)
    0.6667
    """
    order = np.argsort(scores)[::-1]
    ranked = np.take(labels, order)
    return float(np.sum(ranked / (np.arange(len(ranked)) + 1)) / np.sum(ranked))


def dcg_score(labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """Discounted cumulative gain of the top ``k``.

    >>> round(dcg_score(np.array([0, 1]), np.array([0.9, 0.1]), k=2), 4)
    0.6309
    """
    order = np.argsort(scores)[::-1]
    ranked = np.take(labels, order[:k])
    gains = 2.0**ranked - 1
    discounts = np.log2(np.arange(len(ranked)) + 2)
    return float(np.sum(gains / discounts))


def ndcg_score(labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """DCG@k divided by the DCG@k of the ideal ranking.

    >>> ndcg_score(np.array([1, 0, 0]), np.array([0.9, 0.2, 0.1]), k=5)
    1.0
    >>> round(ndcg_score(np.array([0, 1]), np.array([0.9, 0.1]), k=5), 4)
    0.6309
    """
    return dcg_score(labels, scores, k) / dcg_score(labels, labels, k)


def impression_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """All four metrics of one impression (it must hold a click and a non-click).

    >>> impression_metrics(np.array([1, 0]), np.array([2.0, 1.0]))
    {'auc': 1.0, 'mrr': 1.0, 'ndcg@5': 1.0, 'ndcg@10': 1.0}
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    return {
        "auc": auc_score(labels, scores),
        "mrr": mrr_score(labels, scores),
        "ndcg@5": ndcg_score(labels, scores, 5),
        "ndcg@10": ndcg_score(labels, scores, 10),
    }


def has_both_labels(labels: np.ndarray) -> bool:
    """True when an impression holds a click and a non-click, so that it can be scored.

    >>> has_both_labels(np.array([1, 0])), has_both_labels(np.array([1, 1]))
    (True, False)
    """
    labels = np.asarray(labels)
    positives = int((labels > 0).sum())
    return 0 < positives < labels.size


@dataclass(frozen=True)
class EvalResult:
    """Averaged metrics plus how many impressions were scored and skipped."""

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


def per_impression_metrics(labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Metrics of every impression stored flat: impression ``i`` owns ``[offsets[i], offsets[i+1])``.

    Returns a float array ``(n_impressions, 4)`` in METRIC_NAMES order, NaN for impressions
    that lack a click or a non-click. The formulas are those of the one-impression functions
    above, computed for all impressions at once with segment sorts; ``tests/test_metrics.py``
    checks that both give the same figures. Only the order of exactly equal scores can differ:
    evaluate.py's ``np.argsort(score)[::-1]`` leaves it to numpy's unstable sort (it differs
    between numpy versions and CPUs), whereas here the later candidate always ranks first, as
    a stable sort reversed gives. AUC averages the ranks of equal scores, so it never depends
    on that order; MRR and nDCG do only for ties, which continuous model scores do not produce
    (a cold user's all-zero scores are the exception).

    >>> per_impression_metrics(np.array([1, 0, 1, 1]), np.array([.9, .1, .5, .4]), np.array([0, 2, 4]))[:, 0]
    array([ 1., nan])
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    labels, scores = np.asarray(labels), np.asarray(scores)
    if len(offsets) < 2:
        return np.full((0, len(METRIC_NAMES)), np.nan)
    if offsets[0] < 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > min(len(labels), len(scores)):
        raise ValueError(f"offsets must rise from >= 0 to at most {min(len(labels), len(scores))}, the number of "
                         f"labels and scores; got {offsets[0]} .. {offsets[-1]}")
    # Blocks of about a million candidates bound the memory (the sorts hold ~200 bytes per candidate).
    blocks, start = [], 0
    while start < len(offsets) - 1:
        stop = max(start + 1, int(np.searchsorted(offsets, offsets[start] + BLOCK_CANDIDATES, side="right")) - 1)
        stop = min(stop, len(offsets) - 1)
        lo, hi = int(offsets[start]), int(offsets[stop])
        blocks.append(_block_metrics(labels[lo:hi], scores[lo:hi], offsets[start: stop + 1] - lo))
        start = stop
    return np.concatenate(blocks)


def _block_metrics(labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """per_impression_metrics for offsets that start at 0."""
    n = len(offsets) - 1
    total = int(offsets[-1])
    y = labels.astype(np.float64)
    s = scores.astype(np.float64)
    sizes = np.diff(offsets)  # [I]
    owner = np.repeat(np.arange(n), sizes)  # [N] impression of each candidate
    start = offsets[owner]  # [N] first flat position of that impression
    n_pos = np.bincount(owner, weights=(y > 0).astype(np.float64), minlength=n)  # [I]
    n_neg = sizes - n_pos
    out = np.full((n, len(METRIC_NAMES)), np.nan)
    usable = (n_pos > 0) & (n_neg > 0)
    if not usable.any():
        return out

    def segment_sum(values: np.ndarray, owners: np.ndarray) -> np.ndarray:
        return np.bincount(owners, weights=values, minlength=n)  # [N] -> [I]

    # AUC: average 1-based ranks over runs of equal scores inside each impression.
    up = grouped_order(owner, s, descending=False)  # [N] by impression, then score ascending
    s_up, owner_up = s[up], owner[up]
    run_starts = np.flatnonzero(np.concatenate(([True], (s_up[1:] != s_up[:-1]) | (owner_up[1:] != owner_up[:-1]))))
    run_ends = np.append(run_starts[1:], total)
    run_rank = (run_starts + run_ends + 1) / 2.0 - start[up][run_starts]  # [R] mean rank inside the impression
    rank_up = np.repeat(run_rank, run_ends - run_starts)  # [N]
    rank_sum = segment_sum(rank_up * (y[up] > 0), owner_up)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)

    # MRR and nDCG: score descending, the later candidate first among equal scores.
    down = grouped_order(owner, s, descending=True, later_first=True)  # [N]
    rank0 = np.arange(total) - start  # [N] 0-based rank, once the arrays are in ranked order
    ideal = _ideal_dcg(owner, y, rank0, n)
    metrics = np.stack([auc, *_gain_metrics(owner[down], y[down], rank0 + 1, ideal, n)], axis=1)  # [I,4]
    out[usable] = metrics[usable]
    return out


def _ideal_dcg(owner: np.ndarray, y: np.ndarray, place: np.ndarray, n: int) -> dict[int, np.ndarray]:
    """DCG@5 and DCG@10 of each impression's ideal ranking (labels descending), [I] each; ``place``
    [N] is each flat position's 0-based place inside its impression."""
    y_ideal = y[grouped_order(owner, y, descending=True)]  # [N] labels descending, per impression
    weight = (2.0**y_ideal - 1) / np.log2(place + 2.0)  # [N]
    return {k: np.bincount(owner, weights=np.where(place < k, weight, 0.0), minlength=n) for k in (5, 10)}


def _gain_metrics(owner: np.ndarray, y: np.ndarray, rank: np.ndarray, ideal: dict[int, np.ndarray],
                  n: int) -> list[np.ndarray]:
    """[MRR, nDCG@5, nDCG@10], [I] each, from every candidate's impression ``owner``, label ``y`` and
    1-based ``rank`` [N] (in any order), and the ``ideal`` DCG@k of each impression."""

    def segment_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(owner, weights=values, minlength=n)  # [N] -> [I]

    gain = (2.0**y - 1) / np.log2(rank + 1.0)  # [N] discounted gain at its rank
    with np.errstate(divide="ignore", invalid="ignore"):
        return [segment_sum(y / rank) / segment_sum(y),
                *(segment_sum(np.where(rank <= k, gain, 0.0)) / ideal[k] for k in (5, 10))]


def ranked_metrics(labels: np.ndarray, ranks: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``per_impression_metrics(labels, -ranks, offsets)`` for ``ranks`` that number each impression's
    candidates 1..n without ties (as ``impression_ranks`` and a prediction file do), without a sort:
    a candidate's place in the ranking is its rank. Same figures up to the last bit of a sum
    (``tests/test_metrics.py``); ranks that are not such a numbering raise ``ValueError``.

    >>> ranked_metrics(np.array([1, 0, 0, 1, 1]), np.array([2, 1, 3, 2, 1]), np.array([0, 3, 5]))[0].round(4).tolist()
    [0.5, 0.5, 0.6309, 0.6309]
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    labels, ranks = np.asarray(labels), np.asarray(ranks)
    n = len(offsets) - 1
    if n < 1:
        return np.full((0, len(METRIC_NAMES)), np.nan)
    total = int(offsets[-1] - offsets[0])
    sizes = np.diff(offsets)  # [I]
    if offsets[0] < 0 or np.any(sizes < 0) or offsets[-1] > min(len(labels), len(ranks)):
        raise ValueError(f"offsets must rise from >= 0 to at most {min(len(labels), len(ranks))}, the number of "
                         f"labels and ranks; got {offsets[0]} .. {offsets[-1]}")
    labels = labels[offsets[0]: offsets[-1]]
    owner = np.repeat(np.arange(n), sizes)  # [N] impression of each candidate
    rank = ranks[offsets[0]: offsets[-1]].astype(np.int64)  # [N]
    slot = (offsets[:-1] - offsets[0])[owner] + rank - 1  # [N] place in the ranked order
    if total and (rank.min() < 1 or np.any(rank > sizes[owner])
                  or np.bincount(slot, minlength=total).max() > 1):
        raise ValueError("ranks must number each impression's candidates 1..n, each rank once")
    y = labels.astype(np.float64)  # [N]

    def segment_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(owner, weights=values, minlength=n)  # [N] -> [I]

    n_pos = segment_sum((y > 0).astype(np.float64))  # [I]
    n_neg = sizes - n_pos
    out = np.full((n, len(METRIC_NAMES)), np.nan)
    usable = (n_pos > 0) & (n_neg > 0)
    if not usable.any():
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        ascending = (sizes[owner] + 1 - rank).astype(np.float64)  # [N] 1-based rank by score ascending
        auc = (segment_sum(ascending * (y > 0)) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    if np.isin(labels, (0, 1)).all():  # the ideal ranking puts every click first
        ideal_discount = np.cumsum(1.0 / np.log2(np.arange(2, 12, dtype=np.float64)))  # [10]
        ideal = {k: np.where(n_pos > 0, ideal_discount[np.clip(np.minimum(n_pos, k).astype(np.int64) - 1, 0, None)],
                             0.0) for k in (5, 10)}
    else:  # graded labels: sort them
        ideal = _ideal_dcg(owner, y, np.arange(total) - (offsets[:-1] - offsets[0])[owner], n)
    metrics = np.stack([auc, *_gain_metrics(owner, y, rank, ideal, n)], axis=1)  # [I,4]
    out[usable] = metrics[usable]
    return out


def impression_ranks(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The 1-based rank of every candidate inside its impression, by score descending. The tie
    rule, shared by ``evaluate`` and ``predict``: among equal scores the candidate listed earlier
    in behaviors.tsv ranks first. ``predict`` writes these ranks; ``evaluate`` scores ``-rank``, so
    its figures are exactly those evaluate.py computes from ``predict``'s file (``1 / rank``).

    >>> impression_ranks(np.array([0.1, 0.9, 0.5, 0.0, 0.0]), np.array([0, 3, 5])).tolist()
    [3, 1, 2, 1, 2]
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    sizes = np.diff(offsets)
    owner = np.repeat(np.arange(len(sizes)), sizes)  # [N] impression of each candidate
    position = np.arange(int(offsets[-1]) - int(offsets[0]))  # [N]
    order = grouped_order(owner, scores, descending=True)  # [N] ranked, per impression
    ranks = np.empty(len(position), dtype=np.int64)
    ranks[order] = position - (offsets[:-1] - offsets[0])[owner] + 1  # [N] place inside the impression
    return ranks


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
    """Per-impression metrics of flat arrays, averaged.

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
