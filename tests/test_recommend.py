"""What the studio asks of the core besides scoring: ranked lists and their moves, the news map's
projection, and the vocabulary check."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nram_core.data.split import load_split
from nram_core.data.text import Vocab
from nram_core.news_map import news_map
from nram_core.recommend import Ranked, rank_change, sigmoid
from nram_core.vocab_fit import vocab_fit


def ranked(rows: list[int], scores: list[float]) -> Ranked:
    scores_array = np.asarray(scores, dtype=np.float32)
    return Ranked(rows=np.asarray(rows, dtype=np.int64), scores=scores_array, probabilities=sigmoid(scores_array),
                  labels=np.zeros(len(rows)), metrics={"auc": 0.5})


def test_ranked_lists_give_ranks_scores_and_a_head():
    r = ranked([7, 3, 9, 1], [2.0, 1.5, -0.5, -1.0])
    assert r.rank_of() == {7: 1, 3: 2, 9: 3, 1: 4}
    assert r.score_of() == {7: 2.0, 3: 1.5, 9: -0.5, 1: -1.0}
    head = r.top(2)
    assert head.rows.tolist() == [7, 3] and head.labels is None and head.metrics is None
    assert np.array_equal(head.probabilities, r.probabilities[:2])


def test_rank_change_between_two_rankings():
    before, after = ranked([1, 2, 3, 4], [4, 3, 2, 1]), ranked([3, 1, 5, 2], [4, 3, 2, 1])
    old = before.rank_of()
    moves = [rank_change(old.get(row), rank) for rank, row in enumerate(after.rows.tolist(), start=1)]
    assert moves == ["↑2", "↓1", "new", "↓2"]
    assert rank_change(5, 5) == "="


def test_news_map_is_seeded_and_projects_every_news_alike():
    vectors = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)  # [N,D]
    small = news_map(vectors, max_points=1000)
    assert small.rows.tolist() == list(range(1, 301)) and small.xy.shape == (300, 2)
    sample = news_map(vectors, max_points=100, seed=3)
    again = news_map(vectors, max_points=100, seed=3)
    assert len(sample.rows) == 100 and np.array_equal(sample.rows, again.rows) and np.allclose(sample.xy, again.xy)
    assert not np.array_equal(sample.rows, news_map(vectors, max_points=100, seed=4).rows)
    # a news outside the sample is placed by the same projection as the drawn ones
    assert np.allclose(sample.project(vectors[sample.rows - 1]), sample.xy)
    marked = np.array([sample.rows[0], 1 + np.setdiff1d(np.arange(300), sample.rows - 1)[0]])  # one drawn, one not
    placed = sample.with_news(marked, vectors[marked - 1])
    assert len(placed.rows) == 101 and placed.rows[-1] == marked[1] and np.array_equal(placed.xy[:100], sample.xy)
    assert np.allclose(placed.xy[-1], sample.project(vectors[marked[1] - 1][None])[0])
    assert 0.0 < sample.share[1] <= sample.share[0] < 1.0
    # the drawn points are centred, and their first component carries the most variance
    assert np.allclose(sample.xy.mean(axis=0), 0.0, atol=1e-9)
    assert sample.xy[:, 0].var() >= sample.xy[:, 1].var()


def write_split(folder: Path, titles: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("".join(f"N{i}\tnews\tworld\t{t}\tabstract\thttps://x/{i}\t[]\t[]\n"
                                             for i, t in enumerate(titles, 1)), encoding="utf-8")
    (folder / "behaviors.tsv").write_text("".join(f"{i}\tU{i % 3}\t11/15/2019 9:00:00 AM\tN{i}\tN{i + 1}-1 N{i + 2}-0\n"
                                                  for i in range(1, len(titles) - 1)), encoding="utf-8")
    return folder


TITLES = ["stocks rise on rates", "rates fall again", "storm hits the coast", "coast towns rebuild",
          "team wins the final", "final score surprises"]


def test_vocab_fit_of_the_vocabulary_the_data_builds(tmp_path):
    folder = write_split(tmp_path / "train", TITLES)
    vocab = Vocab.build(TITLES)
    fit = vocab_fit(load_split("train", folder, vocab, title_len=8), vocab, title_len=8, train_folder=folder)
    assert (fit.level, fit.message, fit.same_vocab) == ("ok", "vocabulary fits", True)
    assert fit.unk_rate == 0.0 and fit.truncated == 0.0 and fit.known_titles == 1.0


def test_vocab_fit_knows_a_vocabulary_built_with_the_abstracts(tmp_path):
    """A NAML run's vocabulary holds the train abstracts' words too: it is the one its train folder builds
    with ``abstracts=True``, and not the titles-only one."""
    from nram_core.data.split import build_vocab

    folder = write_split(tmp_path / "train", TITLES)
    with_abstracts = build_vocab(folder, min_count=1, abstracts=True, cache=False)
    assert len(with_abstracts) == len(build_vocab(folder, min_count=1, cache=False)) + 1  # "abstract", their one word
    split = load_split("train", folder, with_abstracts, title_len=8)
    assert vocab_fit(split, with_abstracts, title_len=8, train_folder=folder, abstracts=True).same_vocab is True
    assert vocab_fit(split, with_abstracts, title_len=8, train_folder=folder).same_vocab is False


@pytest.mark.parametrize("titles,title_len,level,says", [
    (["zq1 zq2 rates", "zq3 zq4 coast", "zq5 final zq6", "zq7 zq8 stocks"] * 2, 8, "warn", "map to <unk>"),
    (TITLES, 2, "warn", "are cut"),
    (["zq1 zq2", "zq3 zq4", "zq5 zq6", "zq7 zq8"], 8, "error", "cannot read these titles"),
])
def test_vocab_fit_warns_and_refuses(tmp_path, titles, title_len, level, says):
    vocab = Vocab.build(TITLES)
    folder = write_split(tmp_path / "other", titles)
    fit = vocab_fit(load_split("dev", folder, vocab, title_len=title_len), vocab, title_len=title_len,
                    train_folder=folder)
    assert fit.level == level and says in fit.message, fit
    assert fit.same_vocab is (titles is TITLES)  # the vocabulary these titles build, or another
    if title_len == 2:
        assert fit.truncated == 1.0  # every title has three words or more
    else:
        assert fit.unk_rate > 0.2


def test_vocab_fit_without_a_train_folder_cannot_tell_the_vocabulary(tmp_path):
    vocab = Vocab.build(TITLES)
    folder = write_split(tmp_path / "dev", TITLES)
    fit = vocab_fit(load_split("dev", folder, vocab, title_len=8), vocab, title_len=8)
    assert fit.same_vocab is None and fit.level == "ok"
