"""``recommend.Recommender`` serves a model of every family (issue 27): NRAM and NAML on cached news
vectors, LSTUR on cached news vectors with the user's id, NPA per request through ``score_batch``. Its
scores are the ones ``scoring.score_impressions`` gives (the numbers the metrics are computed from),
and each family's ``explain`` agrees with them, with the exact per-click identity where the family has
one. The models are untrained (seeded), with random user embeddings, so that a wrong user id shows."""
from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from nram_core.config import preset, with_overrides
from nram_core.data import resolve_layout
from nram_core.data.split import take_impressions
from nram_core.families import build_model
from nram_core.fileio import DataError
from nram_core.layers import UserEmbedding
from nram_core.recommend import UNKNOWN_USER, Recommender, has_click_attention, kind_of, word_weights
from nram_core.scoring import score_impressions
from nram_core.train import prepare_run

KINDS = [kind for kind in ("nram", "naml", "lstur", "npa")
         if importlib.util.find_spec(f"nram_core.{'model' if kind == 'nram' else kind}") is not None]
VARIANTS = {kind: {} for kind in KINDS}  # each family at its preset, and LSTUR's other long-term variant too
if "lstur" in KINDS:
    VARIANTS["lstur-con"] = {"long_short": "con"}
IMPRESSIONS = 40  # dev impressions compared candidate by candidate
SPLIT_IMPRESSIONS = 300  # of the dev split served: user_quality scores them all


@pytest.fixture(scope="module", params=list(VARIANTS))
def served(request, demo_corpus):
    """(kind, an untrained model of that family at demo sizes cut small, the dev split it reads)."""
    kind = request.param.split("-")[0]
    model_config, train_config = preset("demo", kind=kind)
    small = dict(history_len=12, title_len=12, filters=24, word_dim=24, query_dim=16, category_dim=8, abstract_len=16,
                 user_dim=8, num_heads=2, head_dim=12, **VARIANTS[request.param])
    if kind == "nram":  # NRAM's category views too
        small["use_categories"] = True
    model_config = with_overrides(model_config, small)
    train_config = with_overrides(train_config, dict(word_vectors="none", validation=0.0))
    prepared = prepare_run(resolve_layout(demo_corpus), model_config, train_config)
    torch.manual_seed(0)
    model = build_model(prepared.model_config).eval()
    with torch.no_grad():  # trained user embeddings are not zero: give every known user its own vector
        for layer in model.modules():
            if isinstance(layer, UserEmbedding):
                layer.table.weight[1:].normal_(0.0, 1.0)
    return kind, model, take_impressions(prepared.corpus.dev, np.arange(SPLIT_IMPRESSIONS), name="dev")


def test_every_family_ranks_an_impression_as_scoring_scores_it(served):
    kind, model, dev = served
    rec = Recommender(model, dev)
    assert rec.kind == kind and kind_of(model) == kind and rec.per_request == (kind == "npa")
    scores, labels, offsets = score_impressions(model, dev, max_impressions=IMPRESSIONS)
    for impression in range(IMPRESSIONS):
        ranked = rec.rank_impression(impression)
        expected = dict(zip(dev.candidates_of(impression)[0].tolist(),
                            scores[offsets[impression]: offsets[impression + 1]].tolist()))
        assert set(ranked.rows.tolist()) == set(expected)
        assert np.allclose(ranked.scores, [expected[int(r)] for r in ranked.rows], atol=1e-5), impression
        assert np.all(np.diff(ranked.scores) <= 0)  # in ranked order
    if rec.reads_users:  # the impression's own user decides: another id gives other scores
        known = next(i for i in range(dev.num_impressions) if dev.model_users[i] != UNKNOWN_USER)
        candidates = dev.candidates_of(known)[0]
        history = dev.history_of(known)
        own = rec.score(history, candidates, user=rec.impression_user(known))
        assert np.allclose(np.sort(own)[::-1], rec.rank_impression(known).scores, atol=1e-6)
        assert not np.allclose(own, rec.score(history, candidates, user=UNKNOWN_USER), atol=1e-4)


def test_the_catalog_and_a_bound_user_score_as_the_candidates_do(served):
    kind, model, dev = served
    rec = Recommender(model, dev, identity=("run", kind))
    impression = next(i for i in range(dev.num_impressions)
                      if len(dev.history_of(i)) >= 3 and (not rec.reads_users or dev.model_users[i]))
    history = dev.history_of(impression)
    user = rec.impression_user(impression)
    bound = rec.for_user(user)
    assert bound.user == user and (bound is rec) == (not rec.reads_users)
    assert bound.identity == (("run", kind, "user", user) if rec.reads_users else ("run", kind))
    assert rec.user_id(dev.user_ids[dev.users[impression]]) == user  # the user's id, from their latest impression
    everything = bound.catalog_scores(history)  # [N]: every news but row 0
    rows = np.arange(1, len(dev.news.tokens))
    assert np.allclose(everything, rec.score(history, rows, user=user), atol=1e-5)
    top = bound.rank_catalog(history, top=7)
    assert len(top.rows) == 7 and not set(top.rows.tolist()) & set(history.tolist())
    unseen = np.setdiff1d(rows, history)
    assert np.allclose(top.scores, np.sort(everything[unseen - 1])[::-1][:7], atol=1e-5)
    assert rec.vectors(top.rows[:2]).shape[0] == 2  # NPA's as the unknown user reads them
    with pytest.raises(DataError, match="unknown category"):
        rec.rank_catalog(history, category="no such category")


def test_every_familys_explanation_agrees_with_its_scores(served):
    kind, model, dev = served
    rec = Recommender(model, dev)
    impression = next(i for i in range(IMPRESSIONS) if len(dev.history_of(i)) >= 3
                      and (not rec.reads_users or dev.model_users[i]))
    user = rec.impression_user(impression)
    history = dev.history_of(impression)[-model.config.history_len:]
    candidates = dev.candidates_of(impression)[0]
    exp = rec.explain(history, candidates, user=user)
    assert kind_of(exp) == kind
    assert np.allclose(exp.scores, rec.score(history, candidates, user=user), atol=1e-5)
    history_words, candidate_words = word_weights(exp)
    assert history_words.shape == (len(history), model.config.title_len)
    assert candidate_words.shape == (len(candidates), model.config.title_len)
    assert np.allclose(candidate_words.sum(axis=1)[dev.news.tokens[candidates].any(axis=1)], 1.0, atol=1e-5)
    if has_click_attention(exp):  # the user vector is an attention-weighted sum of the clicks: exact
        assert exp.contributions.shape == (len(candidates), len(history))
        assert np.allclose(exp.contributions.sum(axis=1), exp.scores, atol=1e-5)
        assert np.isclose(exp.click_weights.sum(), 1.0, atol=1e-5)
    else:  # LSTUR's GRU: measured effects instead
        assert kind == "lstur" and exp.leave_one_out.shape == (len(candidates), len(history))
        left_out = np.delete(history, 0)
        assert np.allclose(exp.scores + exp.leave_one_out[:, 0], rec.score(left_out, candidates, user=user), atol=1e-5)
        assert exp.exact == (model.config.long_short == "con")  # con: the score splits into short and long term
        if exp.exact:
            assert np.allclose(exp.short_term_scores + exp.long_term_scores, exp.scores, atol=1e-5)
    if rec.reads_users:  # the unknown user's scores sit beside the user's own
        assert np.allclose(exp.unknown_user_scores, rec.score(history, candidates, user=UNKNOWN_USER), atol=1e-5)
        assert np.allclose(rec.for_user(user).explain(history, candidates).scores, exp.scores, atol=1e-6)
    if kind == "naml":
        assert exp.candidate_view_weights.shape == (len(candidates), 4)
        assert np.allclose(exp.candidate_view_weights.sum(axis=1), 1.0, atol=1e-5)


def test_user_quality_scores_every_family(served):
    kind, model, dev = served
    quality = Recommender(model, dev).user_quality()
    scored = quality.impressions > 0
    assert scored.any() and np.all((quality.auc[scored] >= 0) & (quality.auc[scored] <= 1))


def test_only_a_family_that_reads_users_needs_the_runs_users(served):
    kind, model, dev = served
    stripped = dataclasses.replace(dev, model_users=None)  # a split read without the run's users.json
    if model.config.reads_users:
        with pytest.raises(DataError, match="without the run's users"):
            Recommender(model, stripped)
    else:  # scored by the history alone: every user is the same to it
        rec = Recommender(model, stripped)
        assert rec.user_id(dev.user_ids[dev.users[0]]) == UNKNOWN_USER and rec.for_user(5) is rec
        assert np.array_equal(rec.rank_impression(0).scores, Recommender(model, dev).rank_impression(0).scores)
