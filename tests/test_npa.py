"""NPA (nram_core/npa.py): personalized word and news attention driven by a user-id embedding."""
import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nram_core import npa
from nram_core.config import preset
from nram_core.npa import NPA, PersonalizedAttention

from test_lstur import USERS, VOCAB, random_inputs  # one batch layout for the families that read users

NEWS, TITLE_LEN, BATCH, CLICKS, SHOWN = 10, 12, 4, 5, 3  # random_inputs' sizes


def small_model(seed: int = 0, **fields) -> NPA:
    config, _ = preset("demo", kind="npa")
    config = dataclasses.replace(config, history_len=20, title_len=TITLE_LEN, filters=32, vocab_size=VOCAB,
                                 num_users=USERS, **fields)
    torch.manual_seed(seed)
    return NPA(config)


def trained_looking(model: NPA) -> NPA:
    """Known users with embeddings of a trained model's size (they start at zero, as the unknown user)."""
    with torch.no_grad():
        model.queries.embedding.table.weight[1:].normal_()
    return model


def scores_of(model: NPA, inputs: dict) -> torch.Tensor:
    return model(inputs["titles"], inputs["history"], inputs["history_mask"], inputs["candidates"],
                 users=inputs["users"])


def test_personalized_attention_masks_padding_and_returns_weights():
    torch.manual_seed(0)
    layer = PersonalizedAttention(query_dim=4, input_dim=6)
    x, query = torch.randn(3, 5, 6), torch.randn(3, 4)  # [R,S,F], [R,Q]
    mask = torch.arange(5)[None, :] < torch.tensor([5, 2, 0])[:, None]  # [R,S]; row 2 has no real position
    pooled, weights = layer(x, mask, query, need_weights=True)
    assert pooled.shape == (3, 6) and weights.shape == (3, 5)
    key = torch.tanh(layer.proj(query))  # the paper's form: x_i . tanh(W_p q + b_p)
    expected = torch.softmax((x[1, :2] @ key[1]), dim=0)
    torch.testing.assert_close(weights[1, :2], expected)
    assert torch.all(weights[~mask] == 0) and torch.all(pooled[2] == 0)
    torch.testing.assert_close(weights[:2].sum(1), torch.ones(2))
    assert layer(x, mask, query)[1] is None


def test_shapes_and_score_batch_without_users():
    model = trained_looking(small_model()).eval()
    inputs = random_inputs()
    scores = scores_of(model, inputs)
    assert scores.shape == (BATCH, SHOWN) and torch.isfinite(scores).all()
    word_query, news_query = model.queries(inputs["users"])
    assert word_query.shape == news_query.shape == (BATCH, model.config.query_dim)
    titles = inputs["titles"]
    mask = titles != 0
    context = model.news_encoder.contextualise(titles, mask)
    assert context.shape == (NEWS, TITLE_LEN, 32) and model.config.news_dim == 32
    rows = torch.arange(NEWS).expand(BATCH, -1)
    vectors, weights = model.news_encoder.pool(context, mask, rows, torch.ones_like(rows, dtype=torch.bool),
                                               word_query, need_weights=True)
    assert vectors.shape == (BATCH, NEWS, 32) and weights.shape == (BATCH, NEWS, TITLE_LEN)
    # The score is the candidate's vector, read with this user's word query, against the user vector.
    clicked = vectors[torch.arange(BATCH)[:, None], inputs["history"]]
    user, click_weights = model.user_encoder(clicked, inputs["history_mask"], news_query, need_weights=True)
    assert user.shape == (BATCH, 32) and click_weights.shape == (BATCH, CLICKS)
    candidate = vectors[torch.arange(BATCH)[:, None], inputs["candidates"]]
    torch.testing.assert_close(scores, (candidate * user[:, None, :]).sum(-1), atol=1e-5, rtol=1e-5)

    fields = {name: inputs[name] for name in ("titles", "history", "history_mask", "candidates")}
    unknown = scores_of(model, dict(inputs, users=torch.zeros(BATCH, dtype=torch.long)))
    for batch in (SimpleNamespace(**fields), SimpleNamespace(**fields, users=None)):  # no users field; users None
        torch.testing.assert_close(model.score_batch(batch), unknown)
    assert not hasattr(model, "encode_users")  # scoring must take the per-impression path


def test_padding_never_changes_a_score():
    model = trained_looking(small_model()).eval()
    inputs = random_inputs()
    scores = scores_of(model, inputs)
    padded = dict(inputs)
    padded["titles"] = torch.cat([inputs["titles"], torch.zeros(NEWS, 5, dtype=torch.long)], dim=1)  # more columns
    # More history slots, pointing at real news (not the padding row): the mask alone must hide them.
    padded["history"] = torch.cat([inputs["history"], torch.full((BATCH, 3), 7)], dim=1)
    padded["history_mask"] = torch.cat([inputs["history_mask"], torch.zeros(BATCH, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(scores_of(model, padded), scores, atol=1e-6, rtol=1e-6)
    moved = dict(inputs, history=torch.where(inputs["history_mask"], inputs["history"], 3))
    torch.testing.assert_close(scores_of(model, moved), scores, atol=1e-6, rtol=1e-6)


def test_pooling_in_chunks_gives_the_same_scores(monkeypatch):
    model = trained_looking(small_model()).eval()
    inputs = random_inputs()
    whole = scores_of(model, inputs)
    monkeypatch.setattr(npa, "POOL_CELLS", 3 * TITLE_LEN * 32)  # three pairs a chunk
    torch.testing.assert_close(scores_of(model, inputs), whole, atol=1e-6, rtol=1e-6)


def test_seeded_determinism_and_user_masking_only_in_training():
    inputs = random_inputs()
    runs = []
    for _ in range(2):
        model = small_model(seed=3).train()  # dropout and user masking draw from the seeded stream
        torch.manual_seed(11)
        runs.append(scores_of(model, inputs))
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)
    model = trained_looking(small_model(user_mask=0.5))
    users = torch.arange(1, USERS).repeat(50)  # known users only
    generic, _ = model.queries(torch.zeros(1, dtype=torch.long))  # [1,Q] the unknown user's word query
    for training, share in ((False, (0.0, 0.0)), (True, (0.4, 0.6))):
        model.train(training)  # a masked sample reads with the unknown user's queries, in training only
        word_query, _ = model.queries(users)
        masked = (word_query == generic).all(dim=1).float().mean().item()
        assert share[0] <= masked <= share[1], (training, masked)


def test_gradients_reach_the_user_embeddings_from_their_zero_start():
    """At the zero start of every user embedding the ReLU queries sit on their positive biases, so the
    embeddings still get a gradient (with zero biases they would sit at ReLU's kink and never train)."""
    model = small_model(user_mask=0.0).train()
    assert torch.all(model.queries.embedding.table.weight == 0)
    assert torch.all(model.queries.word.bias == npa.QUERY_BIAS) and torch.all(model.queries.news.bias == npa.QUERY_BIAS)
    inputs = random_inputs()
    loss = torch.nn.functional.cross_entropy(scores_of(model, inputs), torch.zeros(BATCH, dtype=torch.long))
    loss.backward()
    grad = model.queries.embedding.table.weight.grad
    assert grad[1:BATCH].abs().sum(dim=1).min() > 0  # the batch's known users
    assert torch.all(grad[0] == 0) and torch.all(grad[BATCH:] == 0)  # the unknown user's row never trains
    assert model.news_encoder.embedding.weight.grad.abs().sum() > 0
    assert model.user_encoder.empty_history.vector.grad.abs().sum() > 0  # row 0 of the batch has no click


def test_two_users_with_one_history_get_different_scores_and_the_unknown_user_is_defined():
    model = trained_looking(small_model()).eval()
    inputs = random_inputs()
    same = {name: inputs[name][3:4].expand(3, -1) for name in ("history", "history_mask")}  # row 3: three clicks
    same = dict(inputs, **same, candidates=torch.arange(NEWS)[None, :].expand(3, -1), users=torch.tensor([1, 2, 0]))
    scores = scores_of(model, same)
    assert not torch.allclose(scores[0], scores[1], atol=1e-4)  # personalisation: the user id alone differs
    assert torch.isfinite(scores[2]).all() and scores[2].unique().numel() > 1  # the unknown user: no ties
    # The unknown user (id 0) reads with the queries of a zero embedding: the dense layers' biases.
    word_query, news_query = model.queries(torch.tensor([0]))
    torch.testing.assert_close(word_query[0], torch.relu(model.queries.word.bias))
    torch.testing.assert_close(news_query[0], torch.relu(model.queries.news.bias))


def test_a_cold_user_is_not_a_tie():
    model = trained_looking(small_model()).eval()
    with torch.no_grad():
        model.user_encoder.empty_history.vector.normal_()  # a trained empty-history vector
    cold = dict(history=torch.zeros(2, 0, dtype=torch.long), history_mask=torch.zeros(2, 0, dtype=torch.bool),
                candidates=torch.arange(NEWS)[None, :].expand(2, -1), users=torch.tensor([0, 4]))
    scores = scores_of(model, dict(random_inputs(), **cold))
    assert torch.isfinite(scores).all() and scores[0].unique().numel() > 1 and scores[1].unique().numel() > 1


def test_explain_splits_the_score_exactly_and_shows_the_unknown_user():
    model = trained_looking(small_model()).eval()
    titles = random_inputs()["titles"]
    hist, cand = titles[:5], titles[5:9]
    exp = model.explain(hist, cand, user=2)
    assert exp.kind == "npa" and exp.click_attention
    assert exp.history_word_weights.shape == exp.unknown_history_word_weights.shape == (5, TITLE_LEN)
    assert exp.candidate_word_weights.shape == exp.unknown_candidate_word_weights.shape == (4, TITLE_LEN)
    assert exp.click_weights.shape == exp.unknown_click_weights.shape == (5,)
    assert exp.contributions.shape == (4, 5) and exp.scores.shape == exp.unknown_user_scores.shape == (4,)
    np.testing.assert_allclose(exp.contributions.sum(1), exp.scores, atol=1e-6, rtol=0)  # the identity
    real = (torch.cat([hist, cand]) != 0).numpy()
    for weights in (exp.history_word_weights, exp.unknown_history_word_weights):
        np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
        assert np.all(weights[~real[:5]] == 0)  # padding gets no attention
    assert not np.allclose(exp.candidate_word_weights, exp.unknown_candidate_word_weights)  # personalized

    def forward(user: int) -> np.ndarray:
        with torch.no_grad():
            return model(torch.cat([hist, cand]), torch.arange(5)[None, :], torch.ones(1, 5, dtype=torch.bool),
                         torch.arange(5, 9)[None, :], users=torch.tensor([user]))[0].numpy()

    np.testing.assert_allclose(exp.scores, forward(2), atol=1e-5, rtol=0)
    np.testing.assert_allclose(exp.unknown_user_scores, forward(0), atol=1e-5, rtol=0)
    empty = model.explain(hist[:0], cand, user=2)
    assert empty.contributions.shape == (4, 0) and empty.click_weights.shape == (0,)
    assert np.isfinite(empty.scores).all()
    assert model.training is False
    with pytest.raises(ValueError, match="user"):
        model.explain(hist, cand, user=USERS)


@pytest.fixture(scope="module")
def npa_run(demo_corpus, tmp_path_factory):
    """A short real training on the demo corpus, into a run folder, with the preset's starting word vectors
    (word2vec on the corpus): from random ones a title-only model (NPA, NRAM) learns little in 24 steps."""
    from nram_core.config import with_overrides
    from nram_core.data import resolve_layout
    from nram_core.train import Trainer, prepare_run

    model_config, train_config = preset("demo", kind="npa")
    model_config = with_overrides(model_config, dict(history_len=20, title_len=12, filters=32))
    train_config = with_overrides(train_config, dict(epochs=1, max_impressions=1500, max_dev_impressions=300))
    assert train_config.word_vectors == "corpus"
    prepared = prepare_run(resolve_layout(demo_corpus), model_config, train_config)
    out = tmp_path_factory.mktemp("runs") / "npa"
    torch.manual_seed(train_config.seed)
    trainer = Trainer(**prepared.trainer_args(), model=NPA(prepared.model_config), device="cpu", run_dir=out)
    first = trainer.batches[0]
    assert first.users is not None and first.users.max() < prepared.model_config.num_users
    assert (first.users > 0).any()  # the batches carry the train split's user ids
    return prepared, trainer.fit(), out


def test_trains_one_demo_epoch_above_popularity(npa_run):
    from nram_core.baselines import Popularity
    from nram_core.scoring import evaluate_split

    prepared, result, _ = npa_run
    assert result.epochs_done == 1
    popularity = evaluate_split(Popularity(prepared.corpus.train), prepared.corpus.dev, max_impressions=300).auc
    assert result.metrics["auc"] > max(0.5, popularity + 0.03), (result.metrics, popularity)


def test_evaluate_loads_the_run_folder(npa_run, demo_corpus, capsys):
    from nram_core.checkpoint import load_run
    from nram_core.cli import main

    _, _, out = npa_run
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["kind"] == "npa" and (out / "users.json").is_file()
    assert isinstance(load_run(out).model, NPA)
    assert main(["evaluate", "--run", str(out), "--data", str(demo_corpus), "--max-impressions", "60"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert 0.5 < figures["auc"] <= 1.0
