"""The faithfulness test of the word attention (nram_core/faithfulness.py, `python -m nram_core faithfulness`):
removal is masking (the same score as deleting the word), integrated gradients are complete and agree with
a plain Riemann sum, ranks and Spearman handle ties, and the command is deterministic and refuses in one line."""
import dataclasses
import doctest
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nram_core import faithfulness as faith
from nram_core.cli import main
from nram_core.config import ModelConfig
from nram_core.fileio import DataError
from nram_core.model import NRAM

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "demo_model"


def small_model(seed: int = 0, **fields) -> NRAM:
    config = ModelConfig(vocab_size=50, word_dim=16, num_heads=4, head_dim=4, query_dim=8, dropout=0.0,
                         title_len=8, history_len=6)
    torch.manual_seed(seed)
    return NRAM(dataclasses.replace(config, **fields)).eval()


def titles_and_users(seed: int = 1, *, n: int = 6, length: int = 8, dim: int = 16):
    """Right-padded titles of 2..length real words, and a user vector per title."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, 50, (n, length), generator=g)
    lengths = torch.randint(2, length + 1, (n,), generator=g)
    tokens[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return tokens, torch.randn(n, dim, generator=g)


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # a usage error, refused by the parser
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, out: str, err: str) -> bool:
    lines = err.splitlines()
    return (code == 2 and bool(lines) and lines[-1].startswith("error: ") and err.count("error: ") == 1
            and "Traceback" not in err and not out)


def test_docstring_examples_hold():
    result = doctest.testmod(faith)
    assert result.attempted > 0 and result.failed == 0


# ---- removal ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [{}, {"residual": False}, {"self_attention": False}])
def test_removing_a_word_masks_it_out_exactly_as_deleting_it(fields):
    """Masking position j: the word gets zero attention, and the score is that of the title with the
    word deleted (NRAM has no positions, so deleting and masking must agree)."""
    model = small_model(**fields)
    tokens, users = titles_and_users()
    mask = tokens != 0
    scorer = faith.PairScorer(model.news_encoder)
    embedded = model.news_encoder.embedding(tokens)
    for row in range(len(tokens)):
        for j in np.flatnonzero(mask[row].numpy()):
            removed = torch.from_numpy(faith.without(mask[row:row + 1].numpy(), np.array([[j]])))
            with torch.no_grad():
                _, att = model.news_encoder(tokens[row:row + 1], removed, need_weights=True)
                masked = scorer(embedded[row:row + 1], removed, users[row:row + 1])
                kept = tokens[row][mask[row]].tolist()
                del kept[list(np.flatnonzero(mask[row].numpy())).index(j)]
                deleted = model.encode_news(torch.tensor([kept])) @ users[row]
            assert att.pooling[0, j] == 0 and torch.isclose(att.pooling[0].sum(), torch.tensor(1.0))
            assert torch.allclose(masked, deleted, atol=1e-5), (row, j)


def test_top_words_breaks_ties_by_position_and_never_picks_padding():
    weights = np.array([[0.3, 0.3, 0.1, 0.9], [5.0, -1.0, -2.0, 0.0]])
    mask = np.array([[True, True, True, False], [False, True, True, True]])
    assert faith.top_words(weights, mask, 3).tolist() == [[0, 1, 2], [3, 1, 2]]


# ---- attribution -----------------------------------------------------------------------------------
@pytest.mark.parametrize("with_categories", [False, True])
def test_integrated_gradients_are_complete_and_match_a_riemann_sum(with_categories):
    """Completeness: the attributions of a pair sum to score(x) - score(zero embeddings); and each word's
    attribution matches integrated gradients written out by hand (200-step midpoint rule). With
    categories, each pair keeps its own category along the path."""
    model = small_model(use_categories=True, num_categories=4, num_subcategories=5) if with_categories \
        else small_model()
    tokens, users = titles_and_users()
    mask = tokens != 0
    categories = (torch.tensor([1, 2, 3, 0, 1, 2]), torch.tensor([4, 3, 2, 1, 0, 4])) if with_categories else ()
    scorer = faith.PairScorer(model.news_encoder, categories)
    embedded = model.news_encoder.embedding(tokens).detach()
    attributions, delta = faith.integrated_gradients(scorer, embedded, mask, users, steps=32)
    with torch.no_grad():
        gap = scorer(embedded, mask, users) - scorer(torch.zeros_like(embedded), mask, users)
    assert torch.allclose(attributions.sum(-1), gap, atol=1e-4)
    assert delta.abs().max() < 1e-4
    assert torch.all(attributions[~mask] == 0)  # padding embeddings are zero: nothing to attribute

    steps = 200
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoints of the path
    points = (alphas[:, None, None, None] * embedded).reshape(-1, *embedded.shape[1:]).requires_grad_(True)
    score = scorer(points, mask.repeat(steps, 1), users.repeat(steps, 1), repeat=steps)
    (grad,) = torch.autograd.grad(score.sum(), points)
    mean_grad = grad.reshape(steps, *embedded.shape).mean(0)  # [P,L,E]
    by_hand = (embedded * mean_grad).sum(-1)  # [P,L]
    assert torch.allclose(attributions, by_hand, atol=2e-4)


def test_average_ranks_and_spearman_handle_ties_and_constants():
    assert faith.average_ranks(np.array([2.0, 2.0, 2.0])).tolist() == [2.0, 2.0, 2.0]
    assert faith.average_ranks(np.array([3.0, 1.0, 2.0, 1.0])).tolist() == [4.0, 1.5, 3.0, 1.5]
    # Pearson of the average ranks [1, 2.5, 2.5, 4] and [1, 3, 2, 4], by hand: 4.5 / sqrt(4.5 * 5)
    assert faith.spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(
        4.5 / math.sqrt(4.5 * 5.0))
    assert math.isnan(faith.spearman(np.array([0.5, 0.5]), np.array([1.0, 2.0])))
    assert math.isnan(faith.spearman(np.array([0.5]), np.array([1.0])))


# ---- the whole test on the shipped model -----------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped(demo_corpus):
    from nram_core.checkpoint import load_run

    run = load_run(SHIPPED)
    return run, run.load_split("dev", demo_corpus / "dev", cache=False)


def test_drops_are_the_scores_recomputed_without_the_words(shipped):
    """The reported drop for k = 1 by attention is, pair by pair, the score minus the score of the title
    with its most-attended word deleted, recomputed through the model's own encode_news."""
    run, split = shipped
    model = run.model
    pairs = faith.scored_pairs(model, split, impressions=3)
    chunk = faith.measure_chunk(model, pairs.tokens, pairs.users, (), rng=np.random.default_rng(0), steps=4)
    with torch.no_grad():
        _, att = model.news_encoder(torch.from_numpy(pairs.tokens.astype(np.int64)), need_weights=True)
    weights = att.pooling.numpy()
    for p in range(len(pairs.rows)):
        real = np.flatnonzero(pairs.tokens[p])
        top = real[np.argmax(weights[p, real])]
        kept = [int(t) for i, t in enumerate(pairs.tokens[p]) if t and i != top]
        with torch.no_grad():
            before = model.encode_news(torch.from_numpy(pairs.tokens[p:p + 1].astype(np.int64)))[0] @ pairs.users[p]
            after = model.encode_news(torch.tensor([kept]))[0] @ pairs.users[p]
        assert chunk.drops["attention"][0][p] == pytest.approx(float(before - after), abs=1e-4)


def test_faithfulness_is_deterministic_and_only_the_random_words_follow_the_seed(shipped):
    run, split = shipped
    first = faith.faithfulness(run.model, split, impressions=15, seed=0, steps=4)
    again = faith.faithfulness(run.model, split, impressions=15, seed=0, steps=4)
    other = faith.faithfulness(run.model, split, impressions=15, seed=1, steps=4)
    assert first == again
    assert first["drop_attention"] == other["drop_attention"] and first["drop_gradients"] == other["drop_gradients"]
    assert first["drop_random"] != other["drop_random"]
    assert first["titles"] > 0 and first["pairs"][0] == first["titles"]
    assert first["pairs"][0] >= first["pairs"][1] >= first["pairs"][2] > 0
    for key in ("drop_attention", "drop_gradients", "drop_random", "change_attention", "change_random"):
        assert len(first[key]) == 3 and all(math.isfinite(v) for v in first[key])
    assert -1.0 <= first["rank_agreement"] <= 1.0
    # the top words by attribution are chosen to lower the score: every k drops it on average
    assert all(v > 0 for v in first["drop_gradients"])


def test_one_pair_for_the_attention_page(shipped):
    """``pair_removal`` with a Recommender's user vector: the top-2 words by attention and by attribution,
    and the score without them, recomputed by deleting the words from the title."""
    from nram_core.recommend import Recommender

    run, split = shipped
    model = run.model
    rec = Recommender(model, split)
    history, (candidates, _) = split.history_of(0), split.candidates_of(0)
    row = next(int(c) for c in candidates if (split.news.tokens[c] != 0).sum() >= 3)
    user = rec.user_vector(history)
    result = faith.pair_removal(model, split.news.tokens[row], user, k=2, steps=8)
    tokens = split.news.tokens[row]
    real = np.flatnonzero(tokens)
    assert result.removed["attention"] == real[np.argsort(-result.attention[real], kind="stable")[:2]].tolist()
    assert result.removed["gradients"] == real[np.argsort(-result.gradients[real], kind="stable")[:2]].tolist()
    assert result.score == pytest.approx(float(rec.score(history, np.array([row]))[0]), abs=1e-4)
    for method, positions in result.removed.items():
        kept = [int(t) for i, t in enumerate(tokens) if t and i not in positions]
        with torch.no_grad():
            expected = float(model.encode_news(torch.tensor([kept]))[0] @ user)
        assert result.without[method] == pytest.approx(expected, abs=1e-4), method
    short = np.zeros_like(tokens)
    short[:2] = tokens[real[:2]]
    assert faith.pair_removal(model, short, user, k=2).without == {m: None for m in faith.METHODS}


def test_a_model_of_another_family_is_refused(shipped):
    from nram_core.config import preset
    from nram_core.lstur import LSTUR

    _, split = shipped
    config, _ = preset("demo", kind="lstur")
    model = LSTUR(dataclasses.replace(config, vocab_size=50, num_categories=3, num_subcategories=3, num_users=3))
    with pytest.raises(DataError, match="NRAM"):
        faith.faithfulness(model, split, impressions=2)


# ---- the command -----------------------------------------------------------------------------------
@pytest.mark.slow  # two runs of the command, each reading the demo corpus
def test_cli_prints_the_same_finite_line_twice(demo_corpus, capsys):
    lines = []
    for _ in range(2):
        code, out, err = run_cli(capsys, "faithfulness", "--run", SHIPPED, "--data", demo_corpus,
                                 "--impressions", 10, "--seed", 3, "--steps", 4)
        assert code == 0, err
        lines.append(out)
    assert lines[0] == lines[1] and lines[0].count("\n") == 1
    record = json.loads(lines[0])
    for key in ("drop_attention", "drop_gradients", "drop_random"):
        assert len(record[key]) == 3 and all(isinstance(v, float) and math.isfinite(v) for v in record[key])
    assert math.isfinite(record["rank_agreement"]) and record["titles"] > 0 and record["impressions"] == 10
    assert record["seed"] == 3 and record["ig_steps"] == 4


def test_cli_refuses_a_bad_run_and_bad_flags_in_one_line(demo_corpus, tmp_path, capsys):
    assert refused(*run_cli(capsys, "faithfulness", "--run", tmp_path / "missing", "--data", demo_corpus))
    assert refused(*run_cli(capsys, "faithfulness", "--run", SHIPPED, "--data", demo_corpus, "--steps", 1))
    assert refused(*run_cli(capsys, "faithfulness", "--run", SHIPPED, "--data", demo_corpus, "--seed", -1))
