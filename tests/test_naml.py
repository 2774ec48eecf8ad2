"""NAML (nram_core/naml.py) and the abstracts it reads: the vocabulary over titles and abstracts, the
split's abstract tokens (cached), the batches' ``abstracts`` field and the scoring paths."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from nram_core.config import preset
from nram_core.naml import NAML, VIEWS

VOCAB, CATEGORIES, SUBCATEGORIES = 60, 5, 7
TINY_NAML = ["--model", "naml", "--word-dim", "16", "--filters", "16", "--query-dim", "16", "--category-dim", "8",
             "--title-len", "12", "--abstract-len", "16", "--history-len", "20", "--epochs", "1",
             "--max-impressions", "150", "--max-dev-impressions", "60", "--word-vectors", "none", "--no-progress"]


def small_config(**fields):
    config, _ = preset("demo", kind="naml")
    return dataclasses.replace(config, history_len=20, title_len=12, abstract_len=16, filters=32,
                               vocab_size=VOCAB, num_categories=CATEGORIES, num_subcategories=SUBCATEGORIES,
                               **fields)


def small_model(seed: int = 0, **fields) -> NAML:
    torch.manual_seed(seed)
    return NAML(small_config(**fields))


def padded_tokens(g: torch.Generator, rows: int, width: int, *, empty: tuple[int, ...] = ()) -> torch.Tensor:
    """[rows,width] right-padded tokens of random lengths 1..width; the rows in ``empty`` hold none."""
    lengths = torch.randint(1, width + 1, (rows,), generator=g)  # [N]
    lengths[list(empty)] = 0
    tokens = torch.randint(1, VOCAB, (rows, width), generator=g)  # [N,W]
    return tokens.masked_fill(torch.arange(width)[None, :] >= lengths[:, None], 0)


def random_inputs(seed: int = 1, *, batch: int = 4, news: int = 10, clicks: int = 5, candidates: int = 3):
    """A batch in the layout of data.batching.Batch: right-padded titles and abstracts (news 3 has no
    abstract, news 4 an unknown category), histories of lengths 0..clicks (row 0 is empty)."""
    g = torch.Generator().manual_seed(seed)
    history_lengths = torch.arange(batch) % (clicks + 1)  # [B], row 0 empty
    history_mask = torch.arange(clicks)[None, :] < history_lengths[:, None]  # [B,H]
    categories = torch.randint(1, CATEGORIES, (news,), generator=g)  # [U]
    categories[4] = 0
    return dict(titles=padded_tokens(g, news, 12), abstracts=padded_tokens(g, news, 16, empty=(3,)),
                history=torch.randint(0, news, (batch, clicks), generator=g) * history_mask,
                history_mask=history_mask, candidates=torch.randint(0, news, (batch, candidates), generator=g),
                categories=categories, subcategories=torch.randint(1, SUBCATEGORIES, (news,), generator=g))


def scores_of(model: NAML, inputs: dict) -> torch.Tensor:
    return model(inputs["titles"], inputs["history"], inputs["history_mask"], inputs["candidates"],
                 abstracts=inputs["abstracts"], categories=inputs["categories"],
                 subcategories=inputs["subcategories"])


def test_shapes_and_what_the_model_needs():
    model = small_model().eval()
    inputs = random_inputs()
    assert model.config.news_dim == 32 and VIEWS == ("title", "abstract", "category", "subcategory")
    assert scores_of(model, inputs).shape == (4, 3)
    news = model.encode_news(inputs["titles"], inputs["categories"], inputs["subcategories"],
                             abstracts=inputs["abstracts"])
    assert news.shape == (10, 32)
    assert model.encode_users(news[inputs["history"]], inputs["history_mask"]).shape == (4, 32)
    with pytest.raises(ValueError, match="reads abstracts"):
        model.encode_news(inputs["titles"], inputs["categories"], inputs["subcategories"])
    with pytest.raises(ValueError, match="reads categories"):
        model.encode_news(inputs["titles"], abstracts=inputs["abstracts"])
    with pytest.raises(ValueError, match="kind 'naml'"):
        NAML(dataclasses.replace(small_config(), kind="lstur"))


def test_padding_never_changes_a_score():
    model = small_model().eval()
    inputs = random_inputs()
    base = scores_of(model, inputs)
    padded = dict(inputs)
    padded["titles"] = torch.cat([inputs["titles"], torch.zeros(10, 5, dtype=torch.long)], dim=1)  # [U,L+5]
    padded["abstracts"] = torch.cat([inputs["abstracts"], torch.zeros(10, 7, dtype=torch.long)], dim=1)  # [U,A+7]
    # Three more history columns, masked out, that point at real news.
    padded["history"] = torch.cat([inputs["history"], torch.full((4, 3), 7)], dim=1)  # [B,H+3]
    padded["history_mask"] = torch.cat([inputs["history_mask"], torch.zeros(4, 3, dtype=torch.bool)], dim=1)
    assert torch.allclose(scores_of(model, padded), base, atol=1e-6)


def test_empty_views_get_no_weight_and_categories_can_be_left_out():
    inputs = random_inputs()
    model = small_model().eval()
    _, attention = model.news_encoder(inputs["titles"], inputs["abstracts"], True, inputs["categories"],
                                      inputs["subcategories"])
    views = attention.views  # [U,4]
    assert torch.allclose(views.sum(dim=1), torch.ones(10))
    assert views[3, 1] == 0 and (views[torch.arange(10) != 3, 1] > 0).all()  # news 3 has no abstract
    assert views[4, 2] == 0 and views[4, 3] > 0  # news 4's category is unknown, its subcategory is not
    assert (attention.abstract[3] == 0).all() and (attention.title.sum(dim=1) - 1).abs().max() < 1e-6
    titles_only = small_model(use_categories=False).eval()
    assert not any("category" in name for name, _ in titles_only.named_parameters())
    news, attention = titles_only.news_encoder(inputs["titles"], inputs["abstracts"], True)
    assert (attention.views[:, 2:] == 0).all() and news.shape == (10, 32)


def test_seeded_determinism():
    inputs = random_inputs()
    first, again, other = small_model(seed=3), small_model(seed=3), small_model(seed=4)
    for name, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
    assert not torch.equal(first.news_encoder.embedding.weight, other.news_encoder.embedding.weight)
    torch.manual_seed(11)
    train_a = scores_of(first.train(), inputs)
    torch.manual_seed(11)
    train_b = scores_of(again.train(), inputs)
    assert torch.equal(train_a, train_b)  # dropout masks come from the seed as well
    assert torch.equal(scores_of(first.eval(), inputs), scores_of(first.eval(), inputs))


def test_a_cold_user_gets_the_learned_empty_history_vector():
    inputs = random_inputs()
    model = small_model().eval()
    assert torch.equal(scores_of(model, inputs)[0], torch.zeros(3))  # starts as the zero vector: tied
    with torch.no_grad():
        model.user_encoder.empty_history.vector.normal_()
    cold = scores_of(model, inputs)[0]  # row 0 has no click
    assert cold.unique().numel() > 1
    warm = scores_of(small_model(empty_history=False).eval(), inputs)
    assert torch.equal(warm[0], torch.zeros(3))
    scores_of(model.train(), inputs)[0].sum().backward()
    assert model.user_encoder.empty_history.vector.grad.abs().sum() > 0


def test_gradients_reach_both_texts_and_the_categories():
    model = small_model()
    scores_of(model, random_inputs()).sum().backward()
    encoder = model.news_encoder
    for part in (encoder.title.cnn.proj, encoder.body.cnn.proj, encoder.category.dense, encoder.subcategory.dense,
                 encoder.view_pooling.proj, model.user_encoder.pooling.proj):
        assert part.weight.grad is not None and part.weight.grad.abs().sum() > 0


def test_explain_splits_each_score_over_the_clicks():
    inputs = random_inputs()
    model = small_model().train()
    t, a, c, s = inputs["titles"], inputs["abstracts"], inputs["categories"], inputs["subcategories"]
    exp = model.explain(t[:5], t[5:9], history_abstracts=a[:5], candidate_abstracts=a[5:9],
                        history_categories=(c[:5], s[:5]), candidate_categories=(c[5:9], s[5:9]))
    assert model.training  # explain restores the mode it found
    assert exp.kind == "naml" and exp.click_attention
    assert exp.history_title_weights.shape == (5, 12) and exp.history_abstract_weights.shape == (5, 16)
    assert exp.history_view_weights.shape == (5, 4) and exp.candidate_view_weights.shape == (4, 4)
    assert exp.candidate_title_weights.shape == (4, 12) and exp.candidate_abstract_weights.shape == (4, 16)
    assert exp.click_weights.shape == (5,) and abs(exp.click_weights.sum() - 1) < 1e-6
    assert exp.contributions.shape == (4, 5)
    np.testing.assert_allclose(exp.contributions.sum(axis=1), exp.scores, atol=1e-5)
    history = torch.arange(5)[None, :]  # the same history and candidates through the model's forward
    scores = model.eval()(t, history, torch.ones(1, 5, dtype=torch.bool), torch.arange(5, 9)[None, :],
                          abstracts=a, categories=c, subcategories=s)
    np.testing.assert_allclose(exp.scores, scores[0].detach().numpy(), atol=1e-5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.kind = "nram"
    empty = model.explain(t[:0], t[5:9], history_abstracts=a[:0], candidate_abstracts=a[5:9],
                          history_categories=(c[:0], s[:0]), candidate_categories=(c[5:9], s[5:9]))
    assert empty.contributions.shape == (4, 0) and empty.scores.shape == (4,)


# ---- the data: vocabulary, abstract tokens, batches --------------------------------------------
def test_the_vocabulary_covers_abstracts_only_for_a_model_that_reads_them(demo_corpus):
    from nram_core.data import resolve_layout
    from nram_core.data.batching import TrainBatches
    from nram_core.data.mind import read_news
    from nram_core.data.split import build_vocab, load_corpus, split_key
    from nram_core.data.text import Vocab, tokenize
    from nram_core.fileio import nram_home

    layout = resolve_layout(demo_corpus)
    raw = read_news(layout.train / "news.tsv")
    titles = build_vocab(layout.train, min_count=1)
    assert titles == Vocab.build(raw.titles)  # the title vocabulary is what it always was
    plain = load_corpus(layout, title_len=12)
    assert plain.vocab == titles and plain.train.news.abstract_tokens is None
    corpus = load_corpus(layout, title_len=12, abstract_len=16)
    assert corpus.vocab == Vocab.build(raw.titles + raw.abstracts) and len(corpus.vocab) > len(titles)
    news = corpus.train.news
    assert news.abstract_tokens.shape == (len(news), 16) and not news.abstract_tokens[0].any()
    row = next(i for i, text in enumerate(news.abstracts) if len(tokenize(text)) > 16)
    assert news.abstract_tokens[row].tolist() == corpus.vocab.encode(news.abstracts[row], 16).tolist()
    key = split_key(layout.train)  # each vocabulary cached under its own name, the title one as before
    assert {p.name for p in (nram_home() / "prepared").glob("vocab-*")} == {f"vocab-{key}-1.json",
                                                                          f"vocab-{key}-1-abstracts.json"}
    cached = load_corpus(layout, title_len=12, abstract_len=16)  # from the cache, abstracts with it
    assert np.array_equal(cached.dev.news.abstract_tokens, corpus.dev.news.abstract_tokens)
    assert load_corpus(layout, title_len=12).train.news.abstract_tokens is None  # its own cache entry
    batch = TrainBatches(corpus.train, batch_size=8, negatives=2, history_len=20)[0]
    assert torch.equal(batch.abstracts, torch.from_numpy(news.abstract_tokens[batch.news_rows.numpy()]).long())
    part = batch.select(2, 5)
    assert torch.equal(part.abstracts, batch.abstracts[torch.unique(torch.cat([batch.history[2:5].ravel(),
                                                                               batch.candidates[2:5].ravel()]))])
    trimmed = batch.trim()
    width = int((batch.abstracts != 0).any(dim=0).nonzero().max()) + 1
    assert trimmed.abstracts.shape[1] == width and torch.equal(trimmed.abstracts, batch.abstracts[:, :width])
    assert trimmed.to("cpu").abstracts is not None
    assert TrainBatches(plain.train, batch_size=8, negatives=2, history_len=20)[0].abstracts is None


@pytest.mark.slow
def test_trains_one_demo_epoch_above_popularity(demo_corpus):
    from nram_core.baselines import Popularity
    from nram_core.config import with_overrides
    from nram_core.data import resolve_layout
    from nram_core.scoring import evaluate_split, score_impressions
    from nram_core.train import Trainer, prepare_run

    model_config, train_config = preset("demo", kind="naml")
    model_config = with_overrides(model_config, dict(history_len=20, title_len=12, abstract_len=16, filters=32))
    train_config = with_overrides(train_config, dict(epochs=1, max_impressions=1500, max_dev_impressions=300,
                                                     word_vectors="none"))
    prepared = prepare_run(resolve_layout(demo_corpus), model_config, train_config)
    assert prepared.corpus.train.news.abstract_tokens.shape[1] == 16
    trainer = Trainer(**prepared.trainer_args(), device="cpu")
    assert isinstance(trainer.model, NAML) and trainer.batches[0].abstracts is not None
    result = trainer.fit()
    assert result.epochs_done == 1
    popularity = evaluate_split(Popularity(prepared.corpus.train), prepared.corpus.dev, max_impressions=300).auc
    assert result.metrics["auc"] > max(0.5, popularity + 0.03), (result.metrics, popularity)
    fast, labels, _ = score_impressions(trainer.model, prepared.corpus.dev, max_impressions=300)
    slow, _, _ = score_impressions(trainer.model, prepared.corpus.dev, max_impressions=300, fast=False)
    assert labels.size and np.abs(fast - slow).max() < 1e-4


@pytest.fixture(scope="module")
def naml_run(demo_corpus, tmp_path_factory):
    from nram_core.cli import main

    out = tmp_path_factory.mktemp("runs") / "naml"
    assert main(["train", "--data", str(demo_corpus), "--out", str(out), *TINY_NAML]) == 0
    return out


@pytest.mark.slow
def test_a_naml_run_folder_scores_with_its_abstracts(naml_run, demo_corpus):
    from nram_core.checkpoint import load_run
    from nram_core.data.split import align_categories, load_split
    from nram_core.fileio import DataError
    from nram_core.scoring import evaluate_split, score_impressions

    config = json.loads((naml_run / "config.json").read_text())
    assert config["model"]["kind"] == "naml" and config["model"]["abstract_len"] == 16
    run = load_run(naml_run)
    assert isinstance(run.model, NAML)
    dev = align_categories(load_split("dev", demo_corpus / "dev", run.vocab, title_len=12, abstract_len=16),
                           run.categories)
    fast, _, _ = score_impressions(run.model, dev, max_impressions=60)
    slow, _, _ = score_impressions(run.model, dev, max_impressions=60, fast=False)
    assert np.abs(fast - slow).max() < 1e-4
    state = json.loads((naml_run / "state.json").read_text())
    assert evaluate_split(run.model, dev, max_impressions=60).auc == pytest.approx(state["final"]["auc"], abs=1e-6)
    titles_only = load_split("dev", demo_corpus / "dev", run.vocab, title_len=12)
    with pytest.raises(DataError, match="reads abstracts"):
        score_impressions(run.model, titles_only, max_impressions=5)


@pytest.mark.slow
def test_evaluate_and_predict_load_a_naml_run(naml_run, demo_corpus, tmp_path, capsys):
    from test_nonfinite import run_cli

    state = json.loads((naml_run / "state.json").read_text())
    code, out, err = run_cli(capsys, "evaluate", "--run", naml_run, "--data", demo_corpus, "--max-impressions", "60")
    assert code == 0, err
    assert json.loads(out)["auc"] == pytest.approx(state["final"]["auc"], abs=1e-6)  # the trainer's own figure
    code, out, err = run_cli(capsys, "predict", "--run", naml_run, "--data", demo_corpus, "--out", tmp_path)
    assert code == 0 and (tmp_path / "prediction.zip").is_file(), err
