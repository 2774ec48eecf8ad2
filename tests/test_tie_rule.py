"""One tie rule everywhere: among equal scores, the candidate listed earlier ranks first.

A click listed first among three candidates of equal score has AUC 1.0 and MRR 1.0 in every public
metric function that takes scores, in ``evaluate``'s path, in ``predict``'s ranks scored by MIND's
evaluate.py, and on the studio's Recommendations page.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from nram_core import metrics

LABELS = np.array([1, 0, 0])  # the click is listed first
TIED = np.array([0.25, 0.25, 0.25], dtype=np.float32)
OFFSETS = np.array([0, 3])
ALL_ONES = {"auc": 1.0, "mrr": 1.0, "ndcg@5": 1.0, "ndcg@10": 1.0}

# Every public function that takes labels and scores, called on the tie case: the figures it gives.
CALLS = {
    "impression_metrics": lambda: metrics.impression_metrics(LABELS, TIED),
    "per_impression_metrics": lambda: dict(zip(metrics.METRIC_NAMES,
                                               metrics.per_impression_metrics(LABELS, TIED, OFFSETS)[0].tolist())),
    "evaluate_flat": lambda: {k: v for k, v in metrics.evaluate_flat(LABELS, TIED, OFFSETS).as_dict().items()
                              if k in metrics.METRIC_NAMES},
}


def test_every_public_function_of_labels_and_scores_is_checked():
    """A new public function that takes labels and scores must join CALLS (and so obey the rule)."""
    takes_scores = {name for name, f in inspect.getmembers(metrics, inspect.isfunction)
                    if not name.startswith("_") and f.__module__ == metrics.__name__
                    and {"labels", "scores"} <= set(inspect.signature(f).parameters)}
    assert takes_scores == set(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_click_listed_first_among_tied_candidates_ranks_first(name):
    assert CALLS[name]() == ALL_ONES


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_the_rule_holds_for_every_score_type_and_position(dtype):
    """Listed second of three tied: rank 2 (AUC 0.5, MRR 0.5); listed last: rank 3 (AUC 0, MRR 1/3);
    -0.0 and 0.0 are equal scores."""
    scores = np.zeros(3, dtype=dtype)
    if dtype != np.int64:
        scores[1] = -0.0
    for at, auc, mrr in ((0, 1.0, 1.0), (1, 0.5, 0.5), (2, 0.0, 1 / 3)):
        labels = np.zeros(3, dtype=np.int64)
        labels[at] = 1
        got = metrics.impression_metrics(labels, scores)
        assert (got["auc"], got["mrr"]) == pytest.approx((auc, mrr), abs=1e-15)
    assert metrics.impression_ranks(scores, OFFSETS).tolist() == [1, 2, 3]


def test_evaluate_path_and_predicts_file_scored_by_evaluate_py_agree():
    """``evaluate`` scores ``ranked_metrics`` of ``impression_ranks``; evaluate.py scores ``predict``'s
    ranks as ``1 / rank``: both give 1.0 here, where evaluate.py's roc_auc_score on the raw tied
    scores gives 0.5 (it counts a tied pair as one half)."""
    ranks = metrics.impression_ranks(TIED, OFFSETS)
    assert ranks.tolist() == [1, 2, 3]
    assert metrics.ranked_metrics(LABELS, ranks, OFFSETS)[0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert roc_auc_score(LABELS, 1.0 / ranks) == 1.0
    assert roc_auc_score(LABELS, TIED) == 0.5  # the one place where evaluate.py and the tie rule differ


@pytest.fixture
def studio(monkeypatch):
    """The studio as tests/test_app.py starts it, on this test's own NRAM_HOME (tests/conftest.py):
    the demo corpus, generated on first start, and the shipped model."""
    pytest.importorskip("streamlit")
    import test_app  # the studio's AppTest helpers

    if not (test_app.SHIPPED / "model.safetensors").is_file():
        pytest.skip(f"needs the shipped model in {test_app.SHIPPED}")
    monkeypatch.delenv("NRAM_DEMO_MODEL", raising=False)
    monkeypatch.delenv("NRAM_DATA_DIRS", raising=False)
    monkeypatch.setenv("NRAM_MIND_BASE_URL", "http://127.0.0.1:9")  # nothing listens there: no network
    return test_app


def test_the_recommendations_page_reports_the_tie_rule(studio):
    """A cold user's candidates all score 0 (a zero user vector): on an impression whose click is
    listed first, the Recommendations page shows the click at rank 1 with AUC 1.000 and MRR 1.000."""
    at = studio.new_app()
    c = studio.ctx(at)
    split = c.split

    def one_click_listed_first(imp: int) -> bool:
        labels = split.candidates_of(imp)[1]
        return len(labels) >= 3 and labels[0] == 1 and labels.sum() == 1

    found = [(user, int(imp)) for user in studio.users_where(at, lambda t: t["history"] == 0)
             for imp in split.user_impressions(user)
             if len(split.history_of(int(imp))) == 0 and one_click_listed_first(int(imp))]
    assert found, "the demo corpus has a cold user with an impression whose only click is listed first"
    user, imp = found[0]
    studio.pick_user(at, user)
    studio.goto(at, "recommendations")
    at.selectbox(key="impression_choice").set_value(imp).run()
    studio.assert_clean(at)
    candidates, labels = split.candidates_of(imp)
    scores = studio.ctx(at).rec.score(split.history_of(imp), candidates)
    assert len(scores) >= 3 and np.all(scores == scores[0])  # every candidate tied
    ranked = studio.frame(at, "ranked")
    assert ranked["clicked"].iloc[0] == "✓" and len(ranked) == len(labels)
    assert (studio.metric(at, "AUC"), studio.metric(at, "MRR")) == ("1.000", "1.000")
    expected = metrics.impression_metrics(labels, scores)
    assert [studio.metric(at, name) for name in ("nDCG@5", "nDCG@10")] == \
        [f"{expected[key]:.3f}" for key in ("ndcg@5", "ndcg@10")]
