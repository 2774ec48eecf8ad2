"""MIND-large's code paths at a reduced, "large-like" scale: the chunked reader, the summaries
stored with the prepared cache. The full-scale figures come from the bench commands in
docs/benchmarks.md; here the chunk sizes shrink so that a small corpus crosses many chunks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nram_core.data import mind, stats
from nram_core.data.layout import resolve_layout
from nram_core.data.split import load_corpus, load_split, build_vocab


def _arrays(split) -> dict:
    b = split.behaviors
    out = {k: np.asarray(getattr(b, k)) for k in ("impression_ids", "times", "history_offsets", "history",
                                                   "candidate_offsets", "candidates", "labels")}
    out["users"] = np.asarray(split.users)
    return out


def test_reading_in_chunks_of_rows_gives_the_same_arrays_and_reports_progress(demo_corpus, monkeypatch):
    whole = load_corpus(resolve_layout(demo_corpus), title_len=20, cache=False).train
    seen: list[tuple[str, int, int]] = []
    monkeypatch.setattr(mind, "_CHUNK_ROWS", 7)
    monkeypatch.setattr(mind, "_PROGRESS_EVERY", 1000)
    chunked = load_corpus(resolve_layout(demo_corpus), title_len=20, cache=False, splits=("train",),
                          progress=lambda *a: seen.append(a)).train
    for name, array in _arrays(whole).items():
        other = _arrays(chunked)[name]
        assert array.dtype == other.dtype and np.array_equal(array, other), name
    assert chunked.user_ids == whole.user_ids == sorted(set(chunked.user_ids))
    assert [r.to_dict() for r in chunked.reports] == [r.to_dict() for r in whole.reports]
    behaviors = [(done, total) for path, done, total in seen if path.endswith("behaviors.tsv")]
    size = (demo_corpus / "train" / "behaviors.tsv").stat().st_size
    assert len(behaviors) >= whole.num_impressions // 1000  # called along the way, not only at the end
    assert [d for d, _ in behaviors] == sorted(d for d, _ in behaviors) and behaviors[-1] == (size, size)


def _brute_force(split) -> dict:
    """The Overview's figures the slow way: a pandas pass over every impression and candidate."""
    b, news = split.behaviors, split.news
    rows = []
    for i in range(split.num_impressions):
        lo, hi = b.candidate_offsets[i], b.candidate_offsets[i + 1]
        rows.append({"user": split.user_ids[split.users[i]], "time": int(b.times[i]), "impression": i,
                     "history": int(b.history_offsets[i + 1] - b.history_offsets[i]),
                     "clicks": int((b.labels[lo:hi] == 1).sum()), "skips": int((b.labels[lo:hi] == 0).sum())})
    frame = pd.DataFrame(rows)
    latest = frame.sort_values(["user", "time"], kind="stable").groupby("user").tail(1).set_index("user")
    categories = np.asarray(news.categories, dtype=object)[news.category[b.candidates]]
    ctr = pd.DataFrame({"category": categories, "clicked": b.labels == 1}).groupby("category")["clicked"]
    return {
        "impressions": frame.groupby("user").size(), "clicks": frame.groupby("user")["clicks"].sum(),
        "history": latest["history"], "scorable": (latest["clicks"] > 0) & (latest["skips"] > 0),
        "latest": latest["impression"], "shown": ctr.size(), "clicked": ctr.sum().astype(int),
        "per_hour": pd.Series(b.times // 3600 * 3600).value_counts(),
        "news": pd.Series(np.asarray(news.categories, dtype=object)[news.category[1:]]).value_counts(),
    }


def test_stored_summaries_match_a_count_over_every_row_and_are_mapped_on_a_warm_start(demo_corpus, monkeypatch):
    monkeypatch.setattr(stats, "_BLOCK", 1000)  # count clicks by category over many blocks
    layout = resolve_layout(demo_corpus)
    vocab = build_vocab(layout.train, min_count=1)
    cold = load_split("dev", layout.dev, vocab, title_len=20)
    summary, users = cold.overview()
    truth = _brute_force(cold)
    ids = pd.Index(cold.user_ids)
    for name in ("impressions", "clicks", "history", "scorable", "latest"):
        assert np.array_equal(getattr(users, name), truth[name].reindex(ids).to_numpy()), name
    assert summary.shown_per_category == truth["shown"].to_dict()
    assert summary.clicks_per_category == {k: v for k, v in truth["clicked"].to_dict().items() if v}
    assert summary.impressions_per_hour == truth["per_hour"].to_dict()
    assert summary.news_per_category == truth["news"].to_dict()
    assert summary.clicks == int((cold.behaviors.labels == 1).sum()) and summary.users == len(ids)

    warm = load_split("dev", layout.dev, vocab, title_len=20)  # from the cache this time
    assert warm.overview_data is not None and isinstance(warm.overview_data[1].history, np.memmap)
    assert warm.overview()[0] == summary
    for name in ("impressions", "clicks", "history", "scorable", "latest"):
        assert np.array_equal(getattr(warm.overview()[1], name), getattr(users, name)), name


@pytest.mark.parametrize("broken", ["stats.json", "users_history.npy"])
def test_a_cache_entry_with_damaged_summaries_is_prepared_again(demo_corpus, broken):
    from nram_core.fileio import nram_home

    layout = resolve_layout(demo_corpus)
    vocab = build_vocab(layout.train, min_count=1)
    first = load_split("dev", layout.dev, vocab, title_len=20)
    entry = next(p for p in (nram_home() / "prepared").iterdir() if (p / "stats.json").is_file())
    (entry / broken).write_bytes(b"{not what was written")
    again = load_split("dev", layout.dev, vocab, title_len=20)
    assert again.overview_data is not None  # prepared again, and the new entry replaced the damaged one
    assert (entry / "stats.json").read_bytes() != b"{not what was written"
    assert isinstance(load_split("dev", layout.dev, vocab, title_len=20).overview_data[1].history, np.memmap)
    assert again.overview()[0] == first.overview()[0]
    assert np.array_equal(again.overview()[1].history, first.overview()[1].history)
