"""Cached loading: models and Recommenders with st.cache_resource, tables with st.cache_data.

Every key holds the model folder plus the mtime of its weights and the split folder, so
a retrained run or another dataset never gets a stale object. Objects that cannot be
hashed are passed as ``_arg`` (ignored by the cache) next to the key that identifies them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from nram_core.data.split import Split, build_vocab, load_split
from nram_core.data.text import UNK_ID, tokenize
from nram_core.fileio import DataError
from nram_core.synth import read_truth as synth_truth
from nram_core.run_info import RunInfo, read_run_info

if TYPE_CHECKING:  # torch is imported on first use: the Overview page and the sidebar never need it
    from nram_core.checkpoint import Run
    from nram_core.recommend import Recommender

DEFAULT_TITLE_LEN = 30  # for browsing a dataset before any model is chosen


@st.cache_data(ttl=30, max_entries=16, show_spinner=False)
def _datasets(stamp: tuple) -> list:
    from . import registry

    return registry.discover_datasets()


def datasets() -> list:
    """The picker's datasets, re-validated when a source changes (and every 30 s): validating a
    zipped dataset reads the whole archive, far too slow for every rerun."""
    import os
    import sys

    from nram_core.fileio import nram_home

    from . import registry

    try:
        registered = registry.registry_path().stat().st_mtime_ns
    except OSError:
        registered = 0
    demo_ready = (registry.demo_corpus_dir() / "truth.json").is_file()
    stamp = (str(nram_home()), os.environ.get("NRAM_DATA_DIRS", ""), tuple(sys.argv[1:]), registered, demo_ready)
    return _datasets(stamp)


@st.cache_resource(max_entries=6, show_spinner=False)
def get_run_info(path: str, mtime_ns: int) -> RunInfo:
    """Configs, vocabulary, state and size of a run, read without torch."""
    return read_run_info(path)


# No spinners on the model loaders: the warm-up thread calls them outside any page, and a page
# that has to wait for them shows its own (context.need_model).
@st.cache_resource(max_entries=6, show_spinner=False)
def get_run(path: str, mtime_ns: int) -> Run:
    from nram_core.checkpoint import load_run

    return load_run(path, device="cpu")


def _read_split(split_name: str, folder: str, train_folder: str | None, model_path: str | None,
                model_mtime: int, progress=None) -> Split:
    """The split encoded with the model's vocabulary and title length (or the data's own without a
    model): mapped from the prepared cache, or read (``progress`` hears how far) and prepared."""
    if model_path is not None:
        return get_run_info(model_path, model_mtime).load_split(split_name, Path(folder), progress=progress)
    vocab = build_vocab(Path(train_folder or folder), min_count=1, progress=progress)
    return load_split(split_name, Path(folder), vocab, title_len=DEFAULT_TITLE_LEN, progress=progress)


@st.cache_resource(max_entries=6, show_spinner="Reading the dataset…")
def get_split(split_name: str, folder: str, train_folder: str | None, model_path: str | None,
              model_mtime: int, _loaded: Split | None = None) -> Split:
    """``_read_split``, once per process; ``_loaded`` hands in a split ``split_with_progress`` read."""
    return _loaded if _loaded is not None else _read_split(split_name, folder, train_folder, model_path, model_mtime)


_served: set[tuple] = set()  # get_split arguments this process has loaded (and shown progress for)


def split_with_progress(args: tuple, progress) -> Split:
    """``get_split(*args)``, but a first load reads outside the cached function, so that its progress
    can be drawn on the page (an element drawn from inside a cached function is replayed on every
    later call)."""
    if args in _served:
        return get_split(*args)
    split = get_split(*args, _loaded=_read_split(*args, progress=progress))
    _served.add(args)
    return split


@st.cache_resource(max_entries=6, show_spinner=False)
def get_recommender(split_name: str, folder: str, train_folder: str | None, model_path: str,
                    model_mtime: int) -> Recommender:
    from nram_core.recommend import Recommender

    run = get_run(model_path, model_mtime)
    split = get_split(split_name, folder, train_folder, model_path, model_mtime)
    return Recommender(run.model, split)


@st.cache_data(max_entries=4, show_spinner=False)
def read_truth(path: str) -> dict:
    """The truth.json at ``path`` (a generated corpus's), or {} when it cannot be read."""
    return synth_truth(Path(path).parent) or {}


# ---- tables ---------------------------------------------------------------------------------
@st.cache_data(max_entries=8, show_spinner=False)
def user_table(_split: Split, key: tuple) -> pd.DataFrame:
    """One row per user, in ``Split.user_ids`` order (sorted ids): impressions, clicks, history length
    as of the latest impression, and whether that impression can be scored (a click and a
    non-click). From the summaries stored with the prepared split (``nram_core.data.stats``)."""
    users = _split.overview()[1]
    return pd.DataFrame({
        "user": _split.user_ids,
        "impressions": np.asarray(users.impressions),
        "history": np.asarray(users.history),
        "clicks": np.asarray(users.clicks),
        "scorable": np.asarray(users.scorable),
    })


@dataclass(frozen=True)
class Fit:
    """How well a model's vocabulary covers a dataset's titles."""

    unk_rate: float  # share of title words that map to <unk>
    truncated: float  # share of titles longer than the model's title_len
    known_titles: float  # share of titles with at least one known word
    same_vocab: bool | None  # the model's vocabulary equals the one this data's train split gives
    level: str  # ok | warn | error
    message: str


@st.cache_data(max_entries=8, show_spinner=False)
def vocab_fit(_info: RunInfo, _split: Split, key: tuple, train_folder: str | None) -> Fit:
    tokens = _split.news.tokens[1:]
    real = tokens > 0
    n_words = int(real.sum())
    unk_rate = float((tokens == UNK_ID).sum() / n_words) if n_words else 1.0
    known_titles = float(((tokens > UNK_ID).any(axis=1)).mean()) if len(tokens) else 0.0
    title_len = _info.model_config.title_len
    lengths = np.fromiter((len(tokenize(t)) for t in _split.news.titles[1:]), dtype=np.int64,
                          count=len(_split.news.titles) - 1)
    truncated = float((lengths > title_len).mean()) if len(lengths) else 0.0
    same = None
    if train_folder is not None:
        try:
            data_vocab = build_vocab(Path(train_folder), min_count=_info.train_config.min_word_count)
            same = data_vocab.digest == _info.vocab.digest
        except (DataError, OSError):
            same = None
    problems = []
    level = "ok"
    if n_words == 0 or known_titles < 0.05 or unk_rate > 0.95:
        level = "error"
        problems.append(f"{unk_rate:.0%} of the title words of this dataset map to <unk> in the model's "
                        f"vocabulary ({len(_info.vocab):,} words): this model was trained on other data and "
                        "cannot read these titles. Pick another model, or train one on this dataset.")
    else:
        if unk_rate > 0.2:
            level = "warn"
            problems.append(f"{unk_rate:.0%} of the title words map to <unk>: the model's vocabulary comes "
                            "from other data, so those words carry no meaning for it.")
        if truncated > 0.2:
            level = "warn"
            problems.append(f"{truncated:.0%} of the titles are longer than the model's title length "
                            f"({title_len} words) and are cut.")
    if level == "ok":
        message = "vocabulary fits" + ("" if same in (None, True) else " (built from other data)")
    else:
        message = " ".join(problems)
    return Fit(unk_rate=unk_rate, truncated=truncated, known_titles=known_titles, same_vocab=same, level=level,
               message=message)


@st.cache_data(max_entries=8, show_spinner=False)
def news_frame(_split: Split, key: tuple) -> pd.DataFrame:
    """Titles, ids and category names by news row (row 0 is padding)."""
    news = _split.news
    cats = np.asarray(news.categories, dtype=object)
    subs = np.asarray(news.subcategories, dtype=object)
    frame = pd.DataFrame({
        "news_id": news.ids,
        "title": news.titles,
        "category": cats[news.category] if len(cats) else "",
        "subcategory": subs[news.subcategory] if len(subs) else "",
    })
    frame.loc[0, ["category", "subcategory"]] = ""
    return frame


@st.cache_data(max_entries=8, show_spinner=False)
def split_stats(_split: Split, key: tuple) -> dict:
    """Dataset figures and the tables behind the Overview charts, from the summaries stored with the
    prepared split: no pass over its millions of candidates on a page view."""
    summary, users = _split.overview()
    by_cat = (pd.Series(summary.news_per_category, dtype=np.int64).rename_axis("category").reset_index(name="news")
              .sort_values("news", ascending=False, kind="stable"))
    shown = pd.Series(summary.shown_per_category, dtype=np.int64)
    clicked = pd.Series(summary.clicks_per_category, dtype=np.int64).reindex(shown.index, fill_value=0)
    ctr = (pd.DataFrame({"category": shown.index, "ctr": clicked.to_numpy() / shown.to_numpy(),
                         "clicks": clicked.to_numpy(), "shown": shown.to_numpy()})
           .sort_values("ctr", ascending=False, kind="stable"))
    per_hour = pd.DataFrame({"hour": pd.to_datetime(list(summary.impressions_per_hour), unit="s"),
                             "impressions": list(summary.impressions_per_hour.values())})
    per_day = (per_hour.groupby(per_hour["hour"].dt.normalize())["impressions"].sum().rename_axis("day")
               .reset_index())
    reports = []
    for r in _split.reports:
        # "dropped" before the long "why": on a narrow window the last column is the one cut off
        reports.append({"file": Path(r.file).name, "rows": r.rows, "kept": r.kept, "skipped": r.total_skipped,
                        "dropped": "; ".join(f"{count} {what}" for what, count in sorted(r.dropped.items())),
                        "why": "; ".join(f"{reason}: {count} (first at line "
                                         f"{', '.join(map(str, r.first_lines.get(reason, [])))})"
                                         for reason, count in sorted(r.skipped.items()))})
    history = np.asarray(users.history)
    return {
        "news": summary.news,
        "users": summary.users,
        "impressions": summary.impressions,
        "clicks": summary.clicks,
        "candidates": summary.candidates,
        "ctr": summary.ctr,
        "cold_users": int((history == 0).sum()),
        "mean_history": float(history.mean()) if len(history) else 0.0,
        "by_category": by_cat,
        "ctr_by_category": ctr,
        "per_day": per_day,
        "per_hour": per_hour,
        "history_lengths": history,
        "reports": pd.DataFrame(reports),
    }


@st.cache_data(max_entries=8, show_spinner=False)
def title_index(_split: Split, key: tuple) -> pd.Series:
    """Lower-cased titles for the what-if search."""
    return pd.Series(_split.news.titles).str.lower()


def search_titles(split: Split, key: tuple, query: str, limit: int = 25) -> list[int]:
    query = query.strip().lower()
    if not query:
        return []
    titles = title_index(split, key)
    hits = np.flatnonzero(titles.str.contains(query, regex=False).to_numpy())
    return [int(h) for h in hits if h][:limit]


@st.cache_resource
def _jobs() -> dict:
    """The app's two background jobs, shared by every session and by each other: one job at a time
    on this server."""
    from .jobs import BackgroundJob, JobSlot

    slot = JobSlot()
    return {"train": BackgroundJob("training run", slot), "suite": BackgroundJob("suite", slot)}


def training_job():
    """The one training job of this app process."""
    return _jobs()["train"]


def suite_job():
    """The one experiment-suite job of this app process."""
    return _jobs()["suite"]


# ---- cached scoring: a rerun that only changes the view (a head, a chart) recomputes nothing ----------
def _rows(history) -> tuple[int, ...] | None:
    return None if history is None else tuple(int(r) for r in history)


@st.cache_data(max_entries=512, show_spinner=False)
def _rank_impression(_rec: Recommender, key: tuple, impression: int, history: tuple[int, ...] | None):
    rows = None if history is None else np.asarray(history, dtype=np.int64)
    return _rec.rank_impression(impression, history=rows)


def rank_impression(rec: Recommender, key: tuple, impression: int, history=None):
    return _rank_impression(rec, key, int(impression), _rows(history))


@st.cache_data(max_entries=512, show_spinner=False)
def _rank_catalog(_rec: Recommender, key: tuple, history: tuple[int, ...], top: int, category: str | None,
                  exclude_history: bool):
    return _rec.rank_catalog(np.asarray(history, dtype=np.int64), top=top, category=category,
                             exclude_history=exclude_history)


def rank_catalog(rec: Recommender, key: tuple, history, *, top: int = 10, category: str | None = None,
                 exclude_history: bool = True):
    return _rank_catalog(rec, key, _rows(history), int(top), category, bool(exclude_history))


@st.cache_data(max_entries=256, show_spinner=False)
def _catalog_scores(_rec: Recommender, key: tuple, history: tuple[int, ...]) -> np.ndarray:
    return _rec.catalog_scores(np.asarray(history, dtype=np.int64))


def catalog_scores(rec: Recommender, key: tuple, history) -> np.ndarray:
    return _catalog_scores(rec, key, _rows(history))


@st.cache_data(max_entries=256, show_spinner=False)
def _explain(_rec: Recommender, key: tuple, history: tuple[int, ...], candidates: tuple[int, ...]):
    return _rec.explain(np.asarray(history, dtype=np.int64), np.asarray(candidates, dtype=np.int64))


def explain(rec: Recommender, key: tuple, history, candidates):
    return _explain(rec, key, _rows(history), _rows(candidates))


MAP_POINTS = 20_000  # news drawn on the map at most; more is a sample (said on the page)


@dataclass(frozen=True)
class NewsMap:
    rows: np.ndarray  # [n] news rows drawn (1-based)
    xy: np.ndarray  # [n,2]
    share: np.ndarray  # [2] the components' share of the variance
    mean: np.ndarray  # [D]
    components: np.ndarray  # [2,D]

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """[m,D] -> [m,2] with the same projection (news outside the drawn sample)."""
        return (np.asarray(vectors, dtype=np.float64) - self.mean) @ self.components.T


@st.cache_data(max_entries=8, show_spinner=False)
def _news_map(_rec: Recommender, key: tuple, seed: int) -> NewsMap:
    return news_map(_rec.news_vectors[1:].float().cpu().numpy(), max_points=MAP_POINTS, seed=seed)


def news_map_points(rec: Recommender, key: tuple, seed: int = 0) -> NewsMap:
    """The news map of a split and model (``news_map``), cached."""
    return _news_map(rec, key, seed)


def news_map(vectors: np.ndarray, *, max_points: int, seed: int = 0) -> NewsMap:
    """PCA of news vectors [N,D] to 2-D, fitted and drawn on a seeded sample of at most
    ``max_points`` news.

    >>> m = news_map(np.eye(4)[[0, 0, 1, 2]] * 5.0, max_points=10)
    >>> m.rows.tolist(), m.xy.shape, bool(m.share.sum() <= 1.0), m.project(np.zeros((1, 4))).shape
    ([1, 2, 3, 4], (4, 2), True, (1, 2))
    """
    n, dim = vectors.shape
    rows = np.arange(n)
    if n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
    sample = vectors[rows].astype(np.float64)
    mean = sample.mean(axis=0)  # [D]
    _, singular, basis = np.linalg.svd(sample - mean, full_matrices=False)  # basis [min(n,D),D]
    components = np.zeros((2, dim))
    components[: min(2, len(basis))] = basis[:2]
    total = float((singular ** 2).sum()) or 1.0
    share = np.zeros(2)
    share[: min(2, len(singular))] = (singular[:2] ** 2) / total
    return NewsMap(rows=rows + 1, xy=(sample - mean) @ components.T, share=share, mean=mean,
                   components=components)  # xy: [n,D] -> [n,2]
