"""nram_core.metrics against an oracle: MIND's evaluate.py formulas, one impression at a time.

evaluate.py scores ``predict``'s file: each candidate's rank, read as the score ``1 / rank``. The
oracle does the same, with the ranks made by sorting the scores (a stable sort, so equal scores
keep their listed order: the tie rule), and then applies evaluate.py's formulas. On scores
without ties the oracle is evaluate.py on the raw scores, and sklearn's roc_auc_score too.
"""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from nram_core import metrics


# ---- the oracle ------------------------------------------------------------------------------------
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


def official(y_true, y_score):
    """evaluate.py's four metrics of one impression (AUC over click vs no click, for graded labels)."""
    return [roc_auc_score(y_true > 0, y_score), official_mrr(y_true, y_score),
            official_ndcg(y_true, y_score, 5), official_ndcg(y_true, y_score, 10)]


def tie_rule_ranks(scores):
    """1-based ranks by score descending, equal scores in listed order, by a sort per impression."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def oracle(y_true, y_score):
    """evaluate.py on the file ``predict`` writes for these scores."""
    return official(y_true, 1.0 / tie_rule_ranks(y_score))


def oracle_flat(labels, scores, offsets):
    out = np.full((len(offsets) - 1, 4), np.nan)
    for i in range(len(offsets) - 1):
        y, s = labels[offsets[i]:offsets[i + 1]], scores[offsets[i]:offsets[i + 1]]
        if metrics.has_both_labels(y):
            out[i] = oracle(y, s)
    return out


def _flat_impressions(rng, count):
    sizes = rng.integers(0, 300, count)
    sizes[:5] = [0, 1, 2, 5, 299]  # an empty, a single-candidate and a long impression
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    labels = (rng.random(offsets[-1]) < 0.1).astype(np.int64)
    return labels, offsets


# ---- one impression ----------------------------------------------------------------------------------
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


@pytest.mark.parametrize("seed", range(10))
def test_tie_free_scores_match_sklearn_and_the_official_formulas(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    labels = rng.integers(0, 2, n)
    labels[0], labels[1] = 1, 0
    scores = rng.normal(size=n)
    m = metrics.impression_metrics(labels, scores)
    assert list(m.values()) == pytest.approx(official(labels, scores), abs=1e-12)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_tied_scores_match_the_official_formulas_on_predicts_ranks(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 60))
    labels = rng.integers(0, 2, n) * (rng.integers(1, 3, n) if seed % 2 else 1)  # odd seeds: graded labels
    labels[0], labels[1] = 1, 0
    scores = rng.integers(0, 4, n).astype(float)  # many ties
    m = metrics.impression_metrics(labels, scores)
    assert list(m.values()) == pytest.approx(oracle(labels, scores), abs=1e-12)


def test_one_impression_needs_a_click_and_a_non_click_and_matching_lengths():
    with pytest.raises(ValueError, match="a click and a non-click"):
        metrics.impression_metrics(np.array([1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="one length"):
        metrics.impression_metrics(np.array([1, 0]), np.array([0.1, 0.2, 0.3]))


# ---- many impressions ---------------------------------------------------------------------------------
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


@pytest.mark.parametrize("graded", [False, True])
def test_all_impressions_at_once_equal_the_oracle_one_at_a_time(graded):
    rng = np.random.default_rng(8)
    labels, offsets = _flat_impressions(rng, 200)
    if graded:
        labels = labels * rng.integers(1, 4, len(labels))
    scores = rng.integers(0, 4, len(labels)).astype(np.float32)  # many ties
    scores[offsets[3]:offsets[4]] = 0.0  # a cold user: every score equal
    scores[offsets[100]:] += rng.normal(size=len(scores) - offsets[100]).astype(np.float32)  # half without ties
    per = metrics.per_impression_metrics(labels, scores, offsets)
    assert np.allclose(per, oracle_flat(labels, scores, offsets), rtol=0, atol=1e-12, equal_nan=True)
    assert np.isnan(per[:2]).all()  # the empty and the single-candidate impressions
    assert not np.isnan(per).all()


def test_blocks_and_any_start_give_the_same_figures(monkeypatch):
    rng = np.random.default_rng(9)
    labels, offsets = _flat_impressions(rng, 120)
    scores = rng.integers(0, 6, len(labels)).astype(np.float64)
    whole = metrics.per_impression_metrics(labels, scores, offsets)
    ranks = metrics.impression_ranks(scores, offsets)
    monkeypatch.setattr(metrics, "BLOCK_CANDIDATES", 500)  # many blocks, some of one long impression
    assert np.array_equal(metrics.per_impression_metrics(labels, scores, offsets), whole, equal_nan=True)
    assert np.array_equal(metrics.impression_ranks(scores, offsets), ranks)
    assert np.array_equal(metrics.ranked_metrics(labels, ranks, offsets), whole, equal_nan=True)
    # a slice of the impressions: offsets that do not start at 0
    assert np.array_equal(metrics.per_impression_metrics(labels, scores, offsets[10:31]), whole[10:30], equal_nan=True)
    assert np.array_equal(metrics.ranked_metrics(labels, ranks, offsets[10:31]), whole[10:30], equal_nan=True)
    part = slice(offsets[10], offsets[30])  # impression_ranks takes the scores of its span only
    assert np.array_equal(metrics.impression_ranks(scores[part], offsets[10:31]), ranks[part])
    assert metrics.per_impression_metrics(labels, scores, offsets[:1]).shape == (0, 4)
    with pytest.raises(ValueError, match="offsets must rise"):
        metrics.per_impression_metrics(labels[:5], scores[:5], np.array([0, 3, 9]))
    with pytest.raises(ValueError, match="scores hold the 3 candidates"):
        metrics.impression_ranks(scores[:5], np.array([0, 3]))


@pytest.mark.parametrize("graded", [False, True])
def test_metrics_from_ranks_are_the_metrics_of_the_scores(graded):
    """``ranked_metrics`` of ``impression_ranks`` (``evaluate``'s path) is ``per_impression_metrics``
    of the scores, and of any scores that order the candidates the same (``-ranks``)."""
    rng = np.random.default_rng(11)
    labels, offsets = _flat_impressions(rng, 300)
    if graded:
        labels = labels * rng.integers(1, 4, len(labels))
    scores = rng.integers(0, 5, len(labels)).astype(np.float32)  # many ties
    scores[offsets[3]:offsets[4]] = 0.0
    ranks = metrics.impression_ranks(scores, offsets)
    expected = metrics.per_impression_metrics(labels, scores, offsets)
    assert np.array_equal(metrics.ranked_metrics(labels, ranks, offsets), expected, equal_nan=True)
    assert np.array_equal(metrics.per_impression_metrics(labels, -ranks, offsets), expected, equal_nan=True)
    assert np.isnan(expected).any() and not np.isnan(expected).all()
    assert metrics.ranked_metrics(labels, ranks, offsets[:1]).shape == (0, 4)
    broken = ranks.copy()
    broken[offsets[5]] = broken[offsets[5] + 1]  # one rank twice
    with pytest.raises(ValueError, match="each rank once"):
        metrics.ranked_metrics(labels, broken, offsets)
    with pytest.raises(ValueError, match="offsets must rise"):
        metrics.ranked_metrics(labels[:5], ranks[:5], np.array([0, 3, 9]))


# ---- the sort behind the ranks ------------------------------------------------------------------------
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
        expected = np.lexsort((position, signed, owner))  # equal values in listed order
        assert np.array_equal(metrics.grouped_order(owner, values, descending=descending), expected), descending
    with_nan = np.where(rng.random(2000) < 0.1, np.nan, rng.standard_normal(2000)).astype(np.float32)
    assert metrics._float32_order_key(with_nan) is None
    assert np.array_equal(metrics.grouped_order(owner, with_nan, descending=True),
                          np.lexsort((position, -with_nan.astype(np.float64), owner)))
    # integers beyond float32's exact range take the fallback, which compares them as integers
    huge = np.array([2**60 + 1, 2**60, 3])
    assert metrics._float32_order_key(huge) is None
    assert metrics.grouped_order(np.zeros(3, dtype=np.int64), huge, descending=False).tolist() == [2, 1, 0]
    assert metrics.grouped_order(np.zeros(3, dtype=np.int64), huge, descending=True).tolist() == [0, 1, 2]
