"""Baselines and ablations: each trains on the demo corpus with falling loss; DKN reads MIND entity
vectors; categories go through the train vocabulary; the generic evaluator agrees with scoring."""
import shutil

import numpy as np
import pytest
import torch

from nram_core import scoring
from nram_core.baselines import DKN, BaselineConfig, Popularity, WideDeep
from nram_core.metrics import HISTORY_SEGMENTS
from nram_core.config import ModelConfig, TrainConfig
from nram_core.data import resolve_layout
from nram_core.data.entities import ENTITY_FILE, parse_title_entities
from nram_core.data.split import CategoryVocab, align_categories
from nram_core.experiments import heads_width, load_suite_data, suite_specs
from nram_core.model import NRAM
from nram_core.scoring import evaluate_split, score_impressions
from nram_core.train import Callback, Trainer, seed_everything

TINY = dict(word_dim=16, num_heads=2, head_dim=8, query_dim=16, title_len=12, history_len=20, dropout=0.0)
SMALL_BASELINE = BaselineConfig(deep_hidden=(32,), category_dim=8, filters=16, entity_dim=8, hidden=32)


@pytest.fixture(scope="module")
def data(demo_corpus, tmp_path_factory, request):
    mp = pytest.MonkeyPatch()
    mp.setenv("NRAM_HOME", str(tmp_path_factory.mktemp("home")))
    request.addfinalizer(mp.undo)
    return load_suite_data(resolve_layout(demo_corpus), title_len=TINY["title_len"], min_count=1)


class Losses(Callback):
    def __init__(self):
        self.by_epoch = {}

    def on_step(self, trainer, info):
        self.by_epoch.setdefault(info.epoch, []).append(info.loss)


def train_losses(model, model_config, corpus, epochs=3):
    from nram_core.data.split import Corpus

    losses = Losses()
    config = TrainConfig(epochs=epochs, batch_size=32, lr=1e-2, max_impressions=120, seed=0)
    trainer = Trainer(model_config=model_config, train_config=config, callbacks=[losses], model=model,
                      corpus=Corpus(vocab=corpus.vocab, train=corpus.train, dev=None))
    trainer.fit()
    return [float(np.mean(v)) for _, v in sorted(losses.by_epoch.items())]


def model_config(data, **kw):
    return ModelConfig(vocab_size=len(data.corpus.vocab), **{**TINY, **kw})


@pytest.mark.parametrize("kind", ["nram", "nram_no_self_attention", "nram_categories", "wide_deep", "dkn"])
def test_each_model_trains_and_its_loss_falls(data, kind):
    seed_everything(0)
    cats = data.categories
    if kind == "nram":
        cfg = model_config(data)
        model = NRAM(cfg)
    elif kind == "nram_no_self_attention":
        cfg = model_config(data, self_attention=False)
        model = NRAM(cfg)
        assert model.news_encoder.self_attention is None and cfg.news_dim == cfg.word_dim
    elif kind == "nram_categories":
        cfg = model_config(data, use_categories=True, num_categories=len(cats.categories),
                           num_subcategories=len(cats.subcategories))
        model = NRAM(cfg)
    elif kind == "wide_deep":
        cfg = model_config(data)
        model = WideDeep(config=cfg, baseline=SMALL_BASELINE, num_categories=len(cats.categories),
                         num_subcategories=len(cats.subcategories))
    else:
        cfg = model_config(data)
        model = DKN(config=cfg, baseline=SMALL_BASELINE, num_entities=len(data.entities))
    losses = train_losses(model, cfg, data.corpus)
    assert losses[-1] < losses[0] - 0.005, losses
    result = evaluate_split(model, data.corpus.dev, max_impressions=60, segments=HISTORY_SEGMENTS)
    assert result.impressions == 60 and 0.0 <= result.auc <= 1.0
    assert sum(s.impressions for s in result.segments.values()) == 60


def test_per_impression_path_matches_the_fast_path_for_nram(data, monkeypatch):
    seed_everything(1)
    model = NRAM(model_config(data)).eval()
    a = score_impressions(model, data.corpus.dev, max_impressions=150)
    monkeypatch.setattr(scoring, "PER_IMPRESSION_SLOTS", 300)  # many batches, cut at impression borders
    b = score_impressions(model, data.corpus.dev, max_impressions=150, fast=False)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    assert (a[1] == b[1]).all() and (a[2] == b[2]).all()


def test_padding_never_receives_attention_in_dkn(data):
    seed_everything(2)
    model = DKN(config=model_config(data), baseline=SMALL_BASELINE, num_entities=len(data.entities))
    clicked = torch.randn(2, 4, 6)
    candidates = torch.randn(2, 3, 6)
    attention = type(model.attention)(dim=6, hidden=5)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    _, weights = attention(clicked, candidates, mask, need_weights=True)
    assert torch.all(weights[0, :, 2:] == 0) and torch.allclose(weights[0].sum(-1), torch.ones(3))
    assert torch.all(weights[1] == 0)  # a cold user: no weights, no NaN


def test_dkn_uses_vectors_from_entity_embedding_vec(demo_corpus, tmp_path):
    root = tmp_path / "corpus"
    for split in ("train", "dev"):
        shutil.copytree(demo_corpus / split, root / split)
    qids = sorted({qid for text in (root / "train" / "news.tsv").read_text().splitlines()
                   for qid, _ in parse_title_entities(text.split("\t")[6])})
    assert len(qids) > 10
    rng = np.random.default_rng(0)
    given = {q: rng.normal(size=7).round(4) for q in qids[::2]}  # half of them
    (root / "train" / ENTITY_FILE).write_text(
        "".join(f"{q}\t" + "\t".join(map(str, v)) + "\t\n" for q, v in given.items()))
    data = load_suite_data(resolve_layout(root), title_len=TINY["title_len"], min_count=1)
    assert data.entity_vectors is not None and data.entity_vectors.shape[1] == 7
    assert 0.4 < data.entity_coverage < 0.6
    seed_everything(0)
    cfg = model_config(data)
    model = DKN(config=cfg, baseline=SMALL_BASELINE, num_entities=len(data.entities),
                entity_vectors=data.entity_vectors)
    table = model.news_encoder.entity_embedding.weight
    for qid, vector in given.items():
        np.testing.assert_allclose(table[data.entities.index[qid]].detach().numpy(), vector, atol=1e-6)
    assert not table.requires_grad
    before = table.detach().clone()
    losses = train_losses(model, cfg, data.corpus, epochs=2)
    assert losses[-1] < losses[0], losses
    assert torch.equal(model.news_encoder.entity_embedding.weight, before)  # pretrained vectors stay fixed
    # Title tokens carry the entity ids: the demo titles name one entity in about 40% of the news.
    assert (data.corpus.train.news.entities > 0).any(axis=1).mean() > 0.2


def test_dev_categories_go_through_the_train_vocabulary(data):
    train, dev = data.corpus.train, data.corpus.dev
    vocab = data.categories
    assert vocab.categories[0] == "<unk>" and train.news.category[0] == 0
    # The same id names the same category in both splits after alignment.
    assert train.news.categories == dev.news.categories == list(vocab.categories)
    # A vocabulary without "news" maps dev's news items to unknown (0), and the rest by name.
    reduced = CategoryVocab(tuple(c for c in vocab.categories if c != "news"), vocab.subcategories)
    raw_names = np.array(dev.news.categories)[dev.news.category]
    remapped = align_categories(dev, reduced)
    names = np.array(reduced.categories)[remapped.news.category]
    is_news = raw_names == "news"
    assert is_news[1:].any()
    assert (remapped.news.category[1:][is_news[1:]] == 0).all()
    assert (names[1:][~is_news[1:]] == raw_names[1:][~is_news[1:]]).all()


def test_category_vocab_round_trips(tmp_path, data):
    data.categories.save(tmp_path / "categories.json")
    assert CategoryVocab.load(tmp_path / "categories.json") == data.categories


def test_popularity_counts_train_clicks(data):
    pop = Popularity(data.corpus.train)
    b = data.corpus.train.behaviors
    row = int(b.candidates[b.labels == 1][0])
    news_id = data.corpus.train.news.ids[row]
    assert pop.clicks[news_id] == int(((b.candidates == row) & (b.labels == 1)).sum())
    scores, labels, offsets = score_impressions(pop, data.corpus.train, max_impressions=20)
    assert len(scores) == offsets[-1] == len(labels)


def test_heads_suite_keeps_the_total_width():
    from nram_core.config import preset

    for name, width in (("demo", 60), ("paper", 300)):
        base = preset(name)[0]
        assert heads_width(base) == width
        specs = suite_specs("heads", base)
        assert [dict(s.model)["num_heads"] * dict(s.model)["head_dim"] for s in specs] == [width] * 4


def test_kcnn_accepts_titles_cut_to_their_filled_columns():
    """The trainer cuts all-padding title columns (Batch.trim), and the entities with them; KCNN pads both back."""
    from nram_core.baselines import KCNN

    cfg = ModelConfig(vocab_size=50, word_dim=8, title_len=10)
    kcnn = KCNN(config=cfg, baseline=BaselineConfig(filters=4, entity_dim=3), num_entities=5).eval()
    tokens = torch.tensor([[3, 4, 5] + [0] * 7, [0] * 10, [7] + [0] * 9])
    entities = torch.tensor([[0, 2, 2] + [0] * 7, [0] * 10, [1] + [0] * 9])
    full = kcnn(tokens, entities)
    torch.testing.assert_close(kcnn(tokens[:, :3], entities), full)
    torch.testing.assert_close(kcnn(tokens[2:, :1], entities[2:]), full[2:])  # narrower than the widest kernel
    assert torch.all(full[1] == 0)  # an empty title gives zeros
