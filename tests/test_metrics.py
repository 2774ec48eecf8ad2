import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from nram_core import metrics


# The formulas of MIND's evaluate.py, restated here as the reference.
def official_dcg(y_true, y_score, k=10):
    order = np.argsort(y_score)[::-1]
    y_true = np.take(y_true, order[:k])
    gains = 2**y_true - 1
    discounts = np.log2(np.arange(len(y_true)) + 2)
    return np.sum(gains / discounts)


def official_ndcg(y_true, y_score, k=10):
    return official_dcg(y_true, y_score, k) / official_dcg(y_true, y_true, k)


def official_mrr(y_true, y_score):
    order = np.argsort(y_score)[::-1]
    y_true = np.take(y_true, order)
    return np.sum(y_true / (np.arange(len(y_true)) + 1)) / np.sum(y_true)


def test_hand_computed_impression():
    labels = np.array([0, 1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.3, 0.2])
    # ranks: 0.9(0) 0.8(1) 0.3(1) 0.2(0) 0.1(0): clicks at ranks 2 and 3
    m = metrics.impression_metrics(labels, scores)
    assert m["auc"] == pytest.approx(4 / 6)  # 4 of the 6 click/non-click pairs are ordered right
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    ideal5 = 1 + 1 / np.log2(3)
    assert m["ndcg@5"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / ideal5)
    assert m["ndcg@10"] == pytest.approx(m["ndcg@5"])


@pytest.mark.parametrize("seed", range(20))
def test_matches_sklearn_and_official_formulas(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    labels = rng.integers(0, 2, n)
    labels[0], labels[1] = 1, 0
    # coarse scores produce ties, which sklearn averages and so must we
    scores = rng.integers(0, 5, n).astype(float) if seed % 2 else rng.normal(size=n)
    m = metrics.impression_metrics(labels, scores)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["mrr"] == pytest.approx(official_mrr(labels, scores))
    assert m["ndcg@5"] == pytest.approx(official_ndcg(labels, scores, 5))
    assert m["ndcg@10"] == pytest.approx(official_ndcg(labels, scores, 10))


def test_flat_evaluation_averages_per_impression_and_skips_single_label():
    rng = np.random.default_rng(0)
    groups = [rng.integers(0, 2, int(rng.integers(3, 20))) for _ in range(30)]
    for g in groups[:25]:
        g[0], g[1] = 1, 0
    groups[27][:] = 1  # all clicks: unscorable
    groups[28][:] = 0  # no click: unscorable
    scores = [rng.normal(size=len(g)) for g in groups]
    offsets = np.concatenate([[0], np.cumsum([len(g) for g in groups])])
    result = metrics.evaluate_flat(np.concatenate(groups), np.concatenate(scores), offsets)
    scorable = [(g, s) for g, s in zip(groups, scores) if 0 < g.sum() < len(g)]
    assert result.impressions == len(scorable)
    assert result.skipped == len(groups) - len(scorable)
    assert result.auc == pytest.approx(np.mean([roc_auc_score(g, s) for g, s in scorable]))
    assert result.ndcg10 == pytest.approx(np.mean([official_ndcg(g, s, 10) for g, s in scorable]))
    assert result.mrr == pytest.approx(np.mean([official_mrr(g, s) for g, s in scorable]))


def test_auc_rejects_single_class():
    with pytest.raises(ValueError):
        metrics.auc_score(np.array([1, 1]), np.array([0.1, 0.2]))


def _flat_impressions(rng, count):
    sizes = rng.integers(0, 300, count)
    sizes[:5] = [0, 1, 2, 5, 299]  # an empty, a single-candidate and a long impression
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    labels = (rng.random(offsets[-1]) < 0.1).astype(np.int64)
    return labels, offsets


def test_all_impressions_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(7)
    labels, offsets = _flat_impressions(rng, 400)
    scores = rng.normal(size=len(labels)).astype(np.float32)  # model scores: no ties
    fast = metrics.per_impression_metrics(labels, scores, offsets)
    for i in range(len(offsets) - 1):
        y, s = labels[offsets[i]:offsets[i + 1]], scores[offsets[i]:offsets[i + 1]]
        if metrics.has_both_labels(y):
            assert fast[i] == pytest.approx(list(metrics.impression_metrics(y, s).values()), abs=1e-12)
        else:
            assert np.isnan(fast[i]).all()
    assert np.isnan(fast[:2]).all()  # the empty and the single-candidate impressions


def test_all_impressions_at_once_rank_equal_scores_later_candidate_first():
    rng = np.random.default_rng(8)
    labels, offsets = _flat_impressions(rng, 200)
    scores = rng.integers(0, 4, len(labels)).astype(np.float64)  # many ties
    scores[offsets[3]:offsets[4]] = 0.0  # a cold user: every score equal
    fast = metrics.per_impression_metrics(labels, scores, offsets)
    for i in range(len(offsets) - 1):
        y, s = labels[offsets[i]:offsets[i + 1]], scores[offsets[i]:offsets[i + 1]]
        if not metrics.has_both_labels(y):
            continue
        # evaluate.py's formulas with the tie order made explicit: a stable sort, reversed
        order = np.argsort(s, kind="stable")[::-1]
        ranked = y[order]
        mrr = np.sum(ranked / (np.arange(len(y)) + 1)) / np.sum(ranked)
        ideal = np.sort(y)[::-1]
        ndcg = [np.sum((2.0**ranked[:k] - 1) / np.log2(np.arange(len(ranked[:k])) + 2))
                / np.sum((2.0**ideal[:k] - 1) / np.log2(np.arange(len(ideal[:k])) + 2)) for k in (5, 10)]
        assert fast[i] == pytest.approx([roc_auc_score(y, s), mrr, *ndcg], abs=1e-12)


def test_all_impressions_at_once_in_blocks_and_from_any_start(monkeypatch):
    rng = np.random.default_rng(9)
    labels, offsets = _flat_impressions(rng, 120)
    scores = rng.normal(size=len(labels))
    whole = metrics.per_impression_metrics(labels, scores, offsets)
    monkeypatch.setattr(metrics, "BLOCK_CANDIDATES", 500)  # many blocks, some of one long impression
    assert np.allclose(metrics.per_impression_metrics(labels, scores, offsets), whole, equal_nan=True)
    # a slice of the impressions: offsets that do not start at 0
    part = metrics.per_impression_metrics(labels, scores, offsets[10:31])
    assert np.allclose(part, whole[10:30], equal_nan=True)
    assert metrics.per_impression_metrics(labels, scores, offsets[:1]).shape == (0, 4)
    with pytest.raises(ValueError, match="offsets must rise"):
        metrics.per_impression_metrics(labels[:5], scores[:5], np.array([0, 3, 9]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_grouped_order_is_lexsort_with_ties_signed_zeros_and_fallbacks(dtype):
    """The combined-key sort gives np.lexsort's order exactly, ties and -0.0 included; values that
    are not float32 (wide floats, NaN) fall back to np.lexsort itself."""
    rng = np.random.default_rng(3)
    owner = np.sort(rng.integers(0, 40, 2000))
    values = rng.integers(-3, 4, 2000).astype(dtype)  # many ties
    if dtype != np.int64:
        values[rng.random(2000) < 0.2] = -0.0
        values[rng.random(2000) < 0.2] = dtype(0.1)  # 0.1 is not a float32 in float64: the fallback
    position = np.arange(len(owner))
    for descending in (False, True):
        signed = -values.astype(np.float64) if descending else values.astype(np.float64)
        for later_first in (False, True):
            expected = np.lexsort((-position if later_first else position, signed, owner))
            got = metrics.grouped_order(owner, values, descending=descending, later_first=later_first)
            assert np.array_equal(got, expected), (dtype, descending, later_first)
    with_nan = np.where(rng.random(2000) < 0.1, np.nan, rng.standard_normal(2000)).astype(np.float32)
    assert metrics._float32_order_key(with_nan) is None
    assert np.array_equal(metrics.grouped_order(owner, with_nan, descending=True),
                          np.lexsort((position, -with_nan.astype(np.float64), owner)))
    # integers beyond float32's exact range take the fallback, which compares them as integers
    huge = np.array([2**60 + 1, 2**60, 3])
    assert metrics._float32_order_key(huge) is None
    assert metrics.grouped_order(np.zeros(3, dtype=np.int64), huge, descending=False).tolist() == [2, 1, 0]
    assert metrics.grouped_order(np.zeros(3, dtype=np.int64), huge, descending=True).tolist() == [0, 1, 2]


@pytest.mark.parametrize("graded", [False, True])
def test_metrics_from_ranks_equal_the_sorting_path(graded, monkeypatch):
    """``ranked_metrics`` (no sort) gives ``per_impression_metrics`` of ``-ranks``, with ties in the
    scores broken by ``impression_ranks``, on binary and graded labels, from any start."""
    rng = np.random.default_rng(11)
    labels, offsets = _flat_impressions(rng, 300)
    if graded:
        labels = labels * rng.integers(1, 4, len(labels))
    scores = rng.integers(0, 5, len(labels)).astype(np.float32)  # many ties
    scores[offsets[3]:offsets[4]] = 0.0
    ranks = metrics.impression_ranks(scores, offsets)
    expected = metrics.per_impression_metrics(labels, -ranks, offsets)
    assert np.allclose(metrics.ranked_metrics(labels, ranks, offsets), expected, rtol=1e-12, atol=0, equal_nan=True)
    assert np.isnan(expected).any() and not np.isnan(expected).all()
    part = metrics.ranked_metrics(labels, ranks, offsets[10:31])
    assert np.allclose(part, expected[10:30], rtol=1e-12, atol=0, equal_nan=True)
    assert metrics.ranked_metrics(labels, ranks, offsets[:1]).shape == (0, 4)
    broken = ranks.copy()
    broken[offsets[5]] = broken[offsets[5] + 1]  # one rank twice
    with pytest.raises(ValueError, match="each rank once"):
        metrics.ranked_metrics(labels, broken, offsets)
    with pytest.raises(ValueError, match="offsets must rise"):
        metrics.ranked_metrics(labels[:5], ranks[:5], np.array([0, 3, 9]))
