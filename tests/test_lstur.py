"""LSTUR (nram_core/lstur.py) and the shared CNN-family layers (nram_core/layers.py)."""
import dataclasses

import numpy as np
import pytest
import torch

from nram_core.config import preset
from nram_core.layers import TitleCNN, UserEmbedding
from nram_core.lstur import LSTUR

VOCAB, CATEGORIES, SUBCATEGORIES, USERS = 60, 5, 7, 9


def small_config(long_short: str = "ini", **fields):
    config, _ = preset("demo", kind="lstur")
    return dataclasses.replace(config, history_len=20, title_len=12, filters=32, vocab_size=VOCAB,
                               num_categories=CATEGORIES, num_subcategories=SUBCATEGORIES, num_users=USERS,
                               long_short=long_short, **fields)


def small_model(long_short: str = "ini", seed: int = 0, **fields) -> LSTUR:
    torch.manual_seed(seed)
    return LSTUR(small_config(long_short, **fields))


def random_inputs(seed: int = 1, *, batch: int = 4, news: int = 10, title_len: int = 12, clicks: int = 5,
                  candidates: int = 3):
    """A batch in the layout of data.batching.Batch: right-padded titles, right-padded histories of
    lengths 0..clicks (row 0 is empty), users 1.. (and one unknown user, 0)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, title_len + 1, (news,), generator=g)  # [U]
    titles = torch.randint(1, VOCAB, (news, title_len), generator=g)  # [U,L]
    titles = titles.masked_fill(torch.arange(title_len)[None, :] >= lengths[:, None], 0)  # right-padded
    history_lengths = torch.arange(batch) % (clicks + 1)  # [B], row 0 empty
    history_mask = torch.arange(clicks)[None, :] < history_lengths[:, None]  # [B,H]
    history = torch.randint(0, news, (batch, clicks), generator=g) * history_mask  # [B,H]
    return dict(titles=titles, history=history, history_mask=history_mask,
                candidates=torch.randint(0, news, (batch, candidates), generator=g),
                users=torch.arange(batch) % USERS,
                categories=torch.randint(0, CATEGORIES, (news,), generator=g),
                subcategories=torch.randint(0, SUBCATEGORIES, (news,), generator=g))


def scores_of(model: LSTUR, inputs: dict) -> torch.Tensor:
    return model(inputs["titles"], inputs["history"], inputs["history_mask"], inputs["candidates"],
                 users=inputs["users"], categories=inputs["categories"], subcategories=inputs["subcategories"])


def test_title_cnn_equals_conv1d_and_zeroes_padding():
    torch.manual_seed(0)
    cnn = TitleCNN(word_dim=8, filters=6, window=3)
    conv = torch.nn.Conv1d(8, 6, 3, padding=1)
    with torch.no_grad():  # the documented weight layout: window-major columns
        cnn.proj.weight.copy_(conv.weight.permute(0, 2, 1).reshape(6, 3 * 8))
        cnn.proj.bias.copy_(conv.bias)
    x = torch.randn(5, 7, 8)  # [N,L,E]
    mask = torch.arange(7)[None, :] < torch.tensor([7, 4, 1, 0, 6])[:, None]  # [N,L]
    expected = torch.relu(conv((x * mask[..., None]).transpose(1, 2))).transpose(1, 2) * mask[..., None]
    got = cnn(x, mask)
    assert got.shape == (5, 7, 6)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert torch.all(got[~mask] == 0)
    full = torch.ones(5, 7, dtype=torch.bool)
    torch.testing.assert_close(cnn(x, full), torch.relu(conv(x.transpose(1, 2))).transpose(1, 2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("long_short", ["ini", "con"])
def test_shapes_and_score_batch_without_users(long_short):
    model = small_model(long_short).eval()
    config = model.config
    assert config.news_dim == 32 + 2 * 16
    inputs = random_inputs()
    news = model.encode_news(inputs["titles"], inputs["categories"], inputs["subcategories"])
    assert news.shape == (10, config.news_dim)
    user = model.encode_users_with_ids(news[inputs["history"]], inputs["history_mask"], inputs["users"])
    assert user.shape == (4, config.news_dim)
    scores = scores_of(model, inputs)
    assert scores.shape == (4, 3) and torch.isfinite(scores).all()
    expected = (news[inputs["candidates"]] * user[:, None, :]).sum(-1)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)

    @dataclasses.dataclass
    class NoUsers:  # a Batch made before Batch.users existed
        titles: torch.Tensor
        history: torch.Tensor
        history_mask: torch.Tensor
        candidates: torch.Tensor
        categories: torch.Tensor
        subcategories: torch.Tensor

    fields = {f.name: inputs[f.name] for f in dataclasses.fields(NoUsers)}
    unknown = dict(inputs, users=torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(model.score_batch(NoUsers(**fields)), scores_of(model, unknown))
    with_none = NoUsers(**fields)
    with_none.users = None
    torch.testing.assert_close(model.score_batch(with_none), scores_of(model, unknown))


@pytest.mark.parametrize("long_short", ["ini", "con"])
def test_padding_never_changes_a_score(long_short):
    model = small_model(long_short).eval()
    with torch.no_grad():  # known users with trained-looking long-term vectors
        model.user_encoder.long_term.table.weight[1:].normal_()
    inputs = random_inputs()
    scores = scores_of(model, inputs)
    padded = dict(inputs)
    padded["titles"] = torch.cat([inputs["titles"], torch.zeros(10, 5, dtype=torch.long)], dim=1)  # more columns
    # More history slots, pointing at real news (not the padding row): the mask alone must hide them.
    padded["history"] = torch.cat([inputs["history"], torch.full((4, 3), 7)], dim=1)
    padded["history_mask"] = torch.cat([inputs["history_mask"], torch.zeros(4, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(scores_of(model, padded), scores, atol=1e-6, rtol=1e-6)
    # Padding inside the history rows also points at arbitrary news.
    moved = dict(inputs, history=torch.where(inputs["history_mask"], inputs["history"], 3))
    torch.testing.assert_close(scores_of(model, moved), scores, atol=1e-6, rtol=1e-6)


def test_a_left_padded_history_is_refused():
    model = small_model().eval()
    inputs = random_inputs()
    inputs["history_mask"] = inputs["history_mask"].flip(1)
    with pytest.raises(ValueError, match="right-padded"):
        scores_of(model, inputs)


def test_user_masking_only_in_training_and_unknown_user_is_zero():
    torch.manual_seed(0)
    table = UserEmbedding(num_users=50, dim=4, mask_p=0.5)
    assert torch.all(table.table.weight == 0)  # zero-initialised: every user starts as the unknown one
    with torch.no_grad():
        table.table.weight[1:].normal_()
    users = torch.arange(50).repeat(40)  # [2000]
    table.eval()
    torch.testing.assert_close(table(users), table.table.weight[users])
    table.train()
    out = table(users)
    masked = (out == 0).all(dim=1)
    kept = ~masked
    torch.testing.assert_close(out[kept], table.table.weight[users][kept])  # whole rows, no rescale
    share = masked[users != 0].float().mean().item()
    assert 0.45 < share < 0.55, share
    for mode in (table.train, table.eval):
        mode()
        assert torch.all(table(torch.zeros(3, dtype=torch.long)) == 0)


def test_eval_is_deterministic_and_training_masks_users():
    model = small_model(user_mask=0.5, dropout=0.0)
    with torch.no_grad():
        model.user_encoder.long_term.table.weight[1:].normal_()
    inputs = random_inputs()
    model.eval()
    torch.testing.assert_close(scores_of(model, inputs), scores_of(model, inputs), atol=0, rtol=0)
    model.train()  # without dropout, only the user mask differs between two training passes
    draws = torch.stack([scores_of(model, inputs).detach() for _ in range(20)])
    assert not torch.equal(draws.min(0).values, draws.max(0).values)


def test_unknown_user_scores_as_a_zero_long_term_vector():
    model = small_model("con").eval()
    inputs = random_inputs()
    unknown = dict(inputs, users=torch.zeros(4, dtype=torch.long))
    news = model.encode_news(inputs["titles"], inputs["categories"], inputs["subcategories"])
    user = model.encode_users_with_ids(news[inputs["history"]], inputs["history_mask"], unknown["users"])
    assert torch.all(user[:, model.config.news_dim // 2:] == 0)  # con: [h ; u_l], u_l = 0


def test_seeded_determinism_on_cpu():
    # cuDNN's GRU is not deterministic, so this holds on CPU only.
    inputs = random_inputs()
    runs = []
    for _ in range(2):
        model = small_model("ini", seed=3).train()
        torch.manual_seed(11)
        runs.append(scores_of(model, inputs))
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)


@pytest.mark.parametrize("long_short", ["ini", "con"])
def test_empty_history_runs_one_zero_step(long_short):
    model = small_model(long_short).eval()
    with torch.no_grad():
        model.user_encoder.long_term.table.weight[1:].normal_()
    clicked = torch.randn(2, 4, model.config.news_dim)
    users = torch.tensor([3, 0])
    for mask in (torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, 0, dtype=torch.bool)):
        user = model.encode_users_with_ids(clicked[:, :mask.shape[1]], mask, users)
        long_term = model.user_encoder.long_term.table.weight[users]  # [2,G]
        step_from = long_term.unsqueeze(0) if long_short == "ini" else None
        _, last = model.user_encoder.gru(torch.zeros(2, 1, model.config.news_dim), step_from)
        expected = last[0] if long_short == "ini" else torch.cat([last[0], long_term], dim=-1)
        torch.testing.assert_close(user, expected)
    inputs = random_inputs()  # its row 0 has an empty history
    scores = scores_of(model, inputs)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("long_short", ["ini", "con"])
def test_gradients_reach_words_users_and_topics(long_short):
    model = small_model(long_short, user_mask=0.0).train()
    inputs = random_inputs()
    loss = torch.nn.functional.cross_entropy(scores_of(model, inputs), torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert model.news_encoder.embedding.weight.grad.abs().sum() > 0
    assert model.news_encoder.category_embedding.weight.grad.abs().sum() > 0
    user_grad = model.user_encoder.long_term.table.weight.grad
    assert user_grad[1:4].abs().sum(dim=1).min() > 0  # the batch's known users (row 0's history is empty)
    assert torch.all(user_grad[0] == 0) and torch.all(user_grad[4:] == 0)  # the unknown user never trains


@pytest.mark.parametrize("long_short", ["ini", "con"])
def test_explain_scores_and_measured_differences(long_short):
    model = small_model(long_short).eval()
    with torch.no_grad():
        model.user_encoder.long_term.table.weight[1:].normal_()
    inputs = random_inputs()
    hist, cand = inputs["titles"][:5], inputs["titles"][5:9]
    cats = lambda rows: (inputs["categories"][rows], inputs["subcategories"][rows])  # noqa: E731
    exp = model.explain(hist, cand, user=2, history_categories=cats(slice(0, 5)),
                        candidate_categories=cats(slice(5, 9)))
    assert exp.history_word_weights.shape == (5, 12) and exp.candidate_word_weights.shape == (4, 12)
    assert not exp.click_attention and exp.kind == "lstur"

    def score(rows, user):
        titles = torch.cat([hist[rows], cand])
        categories = torch.cat([inputs["categories"][:5][rows], inputs["categories"][5:9]])
        subcategories = torch.cat([inputs["subcategories"][:5][rows], inputs["subcategories"][5:9]])
        n = len(rows)
        return model(titles, torch.arange(n)[None, :], torch.ones(1, n, dtype=torch.bool),
                     torch.arange(n, n + 4)[None, :], users=torch.tensor([user]), categories=categories,
                     subcategories=subcategories)[0].numpy()

    with torch.no_grad():
        full = score(list(range(5)), 2)
        assert abs(exp.scores - full).max() < 1e-5
        assert abs(exp.unknown_user_scores - score(list(range(5)), 0)).max() < 1e-5
        for i in range(5):
            without = score([j for j in range(5) if j != i], 2)
            assert abs(exp.leave_one_out[:, i] - (without - full)).max() < 1e-5
    if long_short == "con":
        assert exp.exact
        assert abs(exp.short_term_scores + exp.long_term_scores - exp.scores).max() < 1e-5
    else:
        assert not exp.exact and exp.short_term_scores.shape == (0,)
    empty = model.explain(hist[:0], cand, user=2, history_categories=cats(slice(0, 0)),
                          candidate_categories=cats(slice(5, 9)))
    assert empty.leave_one_out.shape == (4, 0) and empty.scores.shape == (4,)


def test_trains_one_demo_epoch_above_popularity(demo_corpus):
    from nram_core.baselines import Popularity
    from nram_core.config import with_overrides
    from nram_core.data import resolve_layout
    from nram_core.scoring import evaluate_split
    from nram_core.train import Trainer, prepare_run

    model_config, train_config = preset("demo", kind="lstur")
    model_config = with_overrides(model_config, dict(history_len=20, title_len=12, filters=32))
    train_config = with_overrides(train_config, dict(epochs=1, max_impressions=1500, max_dev_impressions=300,
                                                     word_vectors="none"))
    prepared = prepare_run(resolve_layout(demo_corpus), model_config, train_config)
    torch.manual_seed(train_config.seed)
    trainer = Trainer(**prepared.trainer_args(), model=LSTUR(prepared.model_config), device="cpu")
    first = trainer.batches[0]
    if getattr(first, "users", None) is not None:  # the batches carry the train split's user ids
        assert first.users.max() < prepared.model_config.num_users and (first.users > 0).any()
    result = trainer.fit()
    assert result.epochs_done == 1
    popularity = evaluate_split(Popularity(prepared.corpus.train), prepared.corpus.dev, max_impressions=300).auc
    assert result.metrics["auc"] > max(0.5, popularity + 0.03), (result.metrics, popularity)
    # The fast path (one user vector per distinct history and user id) gives the per-impression scores,
    # for both long-term variants, with the split's user ids and without them (everyone unknown).
    from nram_core.scoring import encodes_users_by_id, score_impressions

    dev = prepared.corpus.dev
    assert dev.model_users is not None and (dev.model_users > 0).any()
    con = LSTUR(dataclasses.replace(prepared.model_config, long_short="con"))
    for model in (trainer.model, con):
        assert encodes_users_by_id(model)
        for split in (dev, dataclasses.replace(dev, model_users=None)):
            fast, labels, _ = score_impressions(model, split, max_impressions=300)
            slow, _, _ = score_impressions(model, split, max_impressions=300, fast=False)
            assert labels.size and np.abs(fast - slow).max() < 1e-4


@pytest.mark.parametrize("long_short", ["ini", "con"])
def test_fast_path_keys_user_vectors_on_history_and_user_id(demo_corpus, long_short):
    """An untrained LSTUR whose user embeddings are not zero: the fast path (one user vector per distinct
    history and user id) gives ``score_batch``'s scores, and the ids change them (a key of history alone
    would give two users with one history the same vector)."""
    from nram_core.config import with_overrides
    from nram_core.data import resolve_layout
    from nram_core.scoring import encodes_users_by_id, score_impressions
    from nram_core.train import prepare_run

    model_config, train_config = preset("demo", kind="lstur")
    model_config = with_overrides(model_config, dict(history_len=20, title_len=12, filters=32, long_short=long_short))
    prepared = prepare_run(resolve_layout(demo_corpus), model_config, with_overrides(train_config, dict(
        word_vectors="none")), cache=False)
    torch.manual_seed(0)
    model = LSTUR(prepared.model_config)
    with torch.no_grad():
        model.user_encoder.long_term.table.weight[1:].normal_()
    assert encodes_users_by_id(model)
    dev = prepared.corpus.dev
    fast, _, _ = score_impressions(model, dev, max_impressions=300)
    slow, _, _ = score_impressions(model, dev, max_impressions=300, fast=False)
    assert np.abs(fast - slow).max() < 1e-4
    unknown, _, _ = score_impressions(model, dataclasses.replace(dev, model_users=None), max_impressions=300)
    assert np.abs(fast - unknown).max() > 1e-3
