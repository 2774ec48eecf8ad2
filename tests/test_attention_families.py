"""The attention figures (nram_core/attention_stats.py) of every neural family: NAML's title, abstract and
view attention, LSTUR's word attention (its GRU has no click attention), NPA's personalized attention,
each impression read by its own user; and the suite report's table with a family without click attention."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from nram_core.attention_stats import (attention_stats, click_weights, news_weights,
                                       personalized_weights)
from nram_core.config import preset, with_overrides
from nram_core.families import build_model
from nram_core.fileio import DataError
from nram_core.model import evaluating
from nram_core.scoring import impression_user_ids

FAMILIES = ("naml", "lstur", "npa")
SIZES = dict(history_len=20, title_len=12, filters=32)  # test_lstur / test_npa's small models
LIMITS = dict(max_news=300, max_impressions=200)


@pytest.fixture(scope="module")
def prepared(demo_corpus):
    """Each family's demo corpus and config, read once (no cache written: nothing leaves the test)."""
    from nram_core.data import resolve_layout
    from nram_core.train import prepare_run

    out = {}
    for kind in FAMILIES:
        model_config, train_config = preset("demo", kind=kind)
        model_config = with_overrides(model_config, {**SIZES, **({"abstract_len": 16} if kind == "naml" else {})})
        train_config = with_overrides(train_config, dict(word_vectors="none"))
        out[kind] = prepare_run(resolve_layout(demo_corpus), model_config, train_config, cache=False)
    return out


def model_of(prepared, kind: str, seed: int = 0) -> torch.nn.Module:
    """An untrained model of ``kind``, its weights scaled up so that its attention is not near uniform,
    and (LSTUR, NPA) with user embeddings of a trained model's size: they start at zero."""
    torch.manual_seed(seed)
    model = build_model(prepared[kind].model_config)
    with torch.no_grad():
        for weight in model.parameters():
            weight.mul_(3.0)
        for users in (getattr(getattr(model, "queries", None), "embedding", None),
                      getattr(model.user_encoder, "long_term", None)):
            if users is not None:
                users.table.weight[1:].normal_()
    return model


def in_unit(value) -> bool:
    return value is not None and math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.parametrize("kind", FAMILIES)
def test_each_family_reports_the_attention_it_has(prepared, demo_corpus, kind):
    from nram_core.synth import read_truth

    corpus = prepared[kind].corpus
    stats = attention_stats(model_of(prepared, kind), corpus.dev, corpus.vocab, truth=read_truth(demo_corpus),
                            **LIMITS)
    assert in_unit(stats["word_entropy"]) and stats["word_entropy"] < 0.999, stats
    assert stats["titles"] > 0
    assert stats["topical_common_ratio"] > 0 and math.isfinite(stats["topical_common_ratio"])
    if kind == "lstur":  # a GRU: no per-click attention, and that is not an error
        assert stats["click_entropy"] is None and stats["histories"] == 0
    else:
        assert in_unit(stats["click_entropy"]) and 0 < stats["histories"] <= LIMITS["max_impressions"]
    if kind == "naml":
        assert in_unit(stats["abstract_entropy"]) and in_unit(stats["view_entropy"])
    else:
        assert "abstract_entropy" not in stats and "view_entropy" not in stats
    if kind == "npa":  # word attention over (impression, candidate) pairs, at most max_news of them
        assert stats["titles"] <= LIMITS["max_news"]
    json.dumps(stats)  # the record a suite writes


@pytest.mark.parametrize("kind", FAMILIES)
def test_padding_gets_no_weight_and_uniform_attention_has_entropy_one(prepared, kind):
    """Hand-checked: with every attention query at zero each real word (click, view) gets 1/n and padding
    exactly 0, so each normalised entropy is 1; with the model's own queries padding still gets 0."""
    corpus = prepared[kind].corpus
    dev = corpus.dev
    model = model_of(prepared, kind)
    rows, impressions = np.arange(1, 201), np.arange(100)

    def weights():
        """(words [R,L], their tokens [R,L], clicks [I,H] or None, click mask [I,H] or None)."""
        with evaluating(model):
            if kind == "npa":
                personal = personalized_weights(model, dev, impressions, max_pairs=200)
                return personal.words, dev.news.tokens[personal.pairs[:, 1]], personal.clicks, personal.click_mask
            clicks = click_weights(model, dev, impressions) if kind != "lstur" else (None, None)
            return news_weights(model, dev, rows)["words"], dev.news.tokens[rows], *clicks

    words, tokens, clicks, mask = weights()
    assert np.all(words[tokens == 0] == 0) and np.allclose(words.sum(1)[(tokens != 0).any(1)], 1, atol=1e-5)
    assert clicks is None or (np.all(clicks[~mask] == 0) and np.allclose(clicks.sum(1)[mask.any(1)], 1, atol=1e-5))

    with torch.no_grad():  # every score 0: the masked softmax is uniform over the real positions
        for name, weight in model.named_parameters():
            if name.endswith("pooling.query") or "pooling.proj" in name:
                weight.zero_()
    stats = attention_stats(model, dev, corpus.vocab, **LIMITS)
    assert stats["word_entropy"] == pytest.approx(1.0, abs=1e-6)
    assert kind == "lstur" or stats["click_entropy"] == pytest.approx(1.0, abs=1e-6)
    if kind == "naml":
        assert stats["abstract_entropy"] == pytest.approx(1.0, abs=1e-6)
        assert stats["view_entropy"] == pytest.approx(1.0, abs=1e-6)
    words, tokens, clicks, mask = weights()
    real = tokens != 0
    np.testing.assert_allclose(words, np.where(real, 1.0 / np.maximum(real.sum(1, keepdims=True), 1), 0.0),
                               atol=1e-6)  # [R,L]: 1/n on each real word, 0 on padding
    if clicks is not None:
        np.testing.assert_allclose(clicks, np.where(mask, 1.0 / np.maximum(mask.sum(1, keepdims=True), 1), 0.0),
                                   atol=1e-6)  # [I,H]


def test_npa_reads_each_impression_with_its_own_user(prepared):
    corpus = prepared["npa"].corpus
    dev = corpus.dev
    model = model_of(prepared, "npa")
    impressions = np.arange(60)
    assert dev.model_users is not None and (impression_user_ids(dev, impressions) > 0).any()

    def read_by(users):
        split = dataclasses.replace(dev, model_users=None if users is None else np.full(dev.num_impressions, users))
        with evaluating(model):
            return personalized_weights(model, split, impressions, max_pairs=300)

    one, two, again, unknown = read_by(1), read_by(2), read_by(1), read_by(None)
    assert np.array_equal(one.words, again.words) and np.array_equal(one.clicks, again.clicks)
    assert np.abs(one.words - two.words).max() > 1e-3  # another reader weighs the same titles otherwise
    assert np.abs(one.clicks - two.clicks).max() > 1e-3
    assert np.array_equal(unknown.words, read_by(0).words)  # no model_users: everyone is the unknown user 0
    # The figures follow the impressions' own users (the split's model_users), not the unknown user.
    own = attention_stats(model, dev, corpus.vocab, **LIMITS)
    generic = attention_stats(model, dataclasses.replace(dev, model_users=None), corpus.vocab, **LIMITS)
    assert own["word_entropy"] != generic["word_entropy"] and own["click_entropy"] != generic["click_entropy"]
    assert own["titles"] == generic["titles"] and own["histories"] == generic["histories"]


def test_a_model_without_such_attention_is_refused(prepared):
    from nram_core.baselines import Popularity

    corpus = prepared["lstur"].corpus
    with pytest.raises(DataError, match="attention figures"):
        attention_stats(Popularity(corpus.train), corpus.dev, corpus.vocab)


def test_the_report_shows_no_click_entropy_as_a_dash(tmp_path):
    from nram_core.experiments.report import results_markdown

    (tmp_path / "suite.json").write_text(json.dumps({
        "settings": {"suite": "sota", "preset": "demo", "epochs": 1, "seeds": 1, "train": {}},
        "data": {"train": "train", "dev": "dev"}, "models": [{"name": "lstur"}, {"name": "npa"}]}))
    metrics = {"auc": 0.6, "mrr": 0.3, "ndcg@5": 0.3, "ndcg@10": 0.4, "impressions": 60}
    records = [{"name": kind, "kind": kind, "seed": 0, "metrics": metrics, "train_seconds": 1.0, "parameters": 10,
                "attention": {"word_entropy": 0.9, "click_entropy": click, "titles": 5, "histories": 0}}
               for kind, click in (("lstur", None), ("npa", 0.8))]
    report = results_markdown(tmp_path, records)
    assert "| LSTUR | 0.900 ± 0.000 | – | – |" in report
    assert "| NPA | 0.900 ± 0.000 | 0.800 ± 0.000 | – |" in report
