"""Every ``st.cache_*`` of the app, and nothing else: thin wrappers around ``nram_core``, ``tables``
and ``registry``.

Models, splits and Recommenders are process-wide resources (``st.cache_resource``) keyed by the
model folder, the mtime of its weights and the split folder, so that a retrained run or another
dataset never gets a stale object. Answers (tables, rankings, explanations) are ``st.cache_data``:
a split's tables take the ``Ctx.key`` that identifies the split as read next to the split itself
(``_split``, not hashed); a Recommender is hashed by its ``identity``, so scoring takes no key.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from nram_core.data.split import Split, build_vocab, load_split
from nram_core.news_map import MAP_POINTS, NewsMap
from nram_core.news_map import news_map as project_news
from nram_core.run_info import RunInfo, read_run_info
from nram_core.synth import read_truth as synth_truth
from nram_core.user_quality import UserQuality
from nram_core.vocab_fit import VocabFit
from nram_core.vocab_fit import vocab_fit as fit_of

from . import registry, tables

if TYPE_CHECKING:  # torch is imported on first use: the Overview page and the sidebar never need it
    from nram_core.checkpoint import Run
    from nram_core.faithfulness import PairRemoval
    from nram_core.model import Explanation
    from nram_core.recommend import Ranked, Recommender

DEFAULT_TITLE_LEN = 30  # for browsing a dataset before any model is chosen


@st.cache_data(ttl=30, max_entries=16, show_spinner=False)
def _datasets(stamp: tuple) -> list:
    return registry.discover_datasets()


def datasets() -> list:
    """The picker's datasets, re-validated when a source changes (and every 30 s): validating a
    zipped dataset reads the whole archive, far too slow for every rerun."""
    import os
    import sys

    from nram_core.fileio import nram_home

    try:
        registered = registry.registry_path().stat().st_mtime_ns
    except OSError:
        registered = 0
    demo_ready = (registry.demo_corpus_dir() / "truth.json").is_file()
    stamp = (str(nram_home()), os.environ.get("NRAM_DATA_DIRS", ""), tuple(sys.argv[1:]), registered, demo_ready)
    return _datasets(stamp)


@st.cache_data(max_entries=512, show_spinner=False)
def _check_run(path: str, stamp: tuple) -> registry.RunCheck:
    return registry.check_run(Path(path))


def _checked_run(path: Path) -> registry.RunCheck:
    """``registry.check_run``, read again only when one of the files it reads changes: a run's
    vocabulary and weights header are read once, not on every rerun."""
    return _check_run(str(path), registry.run_stamp(path))


def models() -> list:
    """The model picker's entries (``registry.discover_models``); each folder checked once per version."""
    return registry.discover_models(check=_checked_run)


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
def get_recommender(model_path: str, model_mtime: int, split_name: str, folder: str,
                    train_folder: str | None) -> Recommender:
    """The model at ``model_path`` (weights of ``model_mtime``) serving a split, its news encoded once.
    Its ``identity`` keys the cached scoring below, so callers never pass a key."""
    from nram_core.recommend import Recommender

    run = get_run(model_path, model_mtime)
    split = get_split(split_name, folder, train_folder, model_path, model_mtime)
    return Recommender(run.model, split, identity=recommender_identity(model_path, model_mtime, split_name, folder,
                                                                       train_folder))


def recommender_identity(model_path: str, model_mtime: int, split_name: str, folder: str,
                         train_folder: str | None) -> tuple:
    """The ``identity`` of ``get_recommender``'s Recommender for the same arguments, known without building it."""
    return (model_path, model_mtime, folder, split_name)


QUALITY_KEPT = 6
_quality_ready: dict[tuple, UserQuality | Exception] = {}  # what get_user_quality gave, newest last


@st.cache_resource(max_entries=6, show_spinner=False)
def get_user_quality(model_path: str, model_mtime: int, split_name: str, folder: str,
                     train_folder: str | None) -> UserQuality:
    """Every user's AUC on the split (``Recommender.user_quality``), once per model and split: the
    same arguments as ``get_recommender``, whose news vectors it reuses."""
    args = (model_path, model_mtime, split_name, folder, train_folder)
    try:
        quality = get_recommender(*args).user_quality()
    except Exception as exc:
        _quality_ready[args] = exc  # a page waiting for it says why instead of waiting on
        raise
    _quality_ready[args] = quality
    while len(_quality_ready) > QUALITY_KEPT:
        _quality_ready.pop(next(iter(_quality_ready)))
    return quality


def ready_user_quality(args: tuple) -> UserQuality | Exception | None:
    """What ``get_user_quality(*args)`` gave when this process has computed it already (the error, when
    it failed), else None. It never waits: a first start draws the sidebar and the Overview at once,
    while ``context.warm_up`` computes it in the background."""
    return _quality_ready.get(tuple(args))


@st.cache_data(max_entries=4, show_spinner=False)
def read_truth(path: str) -> dict:
    """The truth.json at ``path`` (a generated corpus's), or {} when it cannot be read."""
    return synth_truth(Path(path).parent) or {}


# ---- per split (and model): ``key`` identifies the split as read, see ``context.Ctx.key`` ----------
@st.cache_data(max_entries=8, show_spinner=False)
def user_table(_split: Split, key: tuple) -> pd.DataFrame:
    return tables.user_table(_split)


@st.cache_data(max_entries=8, show_spinner=False)
def news_frame(_split: Split, key: tuple) -> pd.DataFrame:
    return tables.news_frame(_split)


@st.cache_data(max_entries=8, show_spinner=False)
def split_stats(_split: Split, key: tuple) -> dict:
    return tables.split_stats(_split)


@st.cache_data(max_entries=8, show_spinner=False)
def _lowered_titles(_split: Split, key: tuple) -> pd.Series:
    return pd.Series(_split.news.titles).str.lower()


def search_titles(split: Split, key: tuple, query: str) -> list[int]:
    """``tables.title_matches`` over the split's titles, lower-cased once."""
    return tables.title_matches(_lowered_titles(split, key), query)


@st.cache_data(max_entries=8, show_spinner=False)
def vocab_fit(_info: RunInfo, _split: Split, key: tuple, train_folder: str | None) -> VocabFit:
    """``nram_core.vocab_fit`` of the split (read with this model's vocabulary) and the model."""
    return fit_of(_split, _info.vocab, title_len=_info.model_config.title_len,
                  train_folder=None if train_folder is None else Path(train_folder),
                  min_count=_info.train_config.min_word_count)


# ---- runs and suites on disk: re-read when a state.json or results.csv changes ----------------------
@st.cache_data(ttl=5, show_spinner=False)
def _runs_table(stamp: tuple) -> pd.DataFrame:
    return tables.runs_table([Path(folder) for folder, _ in stamp])


def runs_table() -> pd.DataFrame:
    """``tables.runs_table`` of every run folder (``registry.list_run_folders``)."""
    stamp = tuple((str(p), (p / "state.json").stat().st_mtime_ns if (p / "state.json").exists() else 0)
                  for p in registry.list_run_folders())
    return _runs_table(stamp)


@st.cache_data(show_spinner=False)
def _suite_tables(folder: str, stamp: float) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    return tables.suite_tables(Path(folder))


def suite_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """``tables.suite_tables`` of a suite folder, re-read when its results.csv changes."""
    results = folder / "results.csv"
    return _suite_tables(str(folder), results.stat().st_mtime if results.is_file() else 0.0)


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
def _identity(rec: Recommender) -> tuple:
    """What a Recommender is hashed by (run folder, weights' mtime, split): its tensors are never read."""
    if not rec.identity:  # two of them would share every cached answer
        raise ValueError("a Recommender without an identity cannot be cached: build it with get_recommender")
    return rec.identity


BY_IDENTITY = {"nram_core.recommend.Recommender": _identity}


@st.cache_data(max_entries=512, show_spinner=False, hash_funcs=BY_IDENTITY)
def rank_impression(rec: Recommender, impression: int, history: np.ndarray | list[int] | None = None) -> Ranked:
    """``Recommender.rank_impression``, cached."""
    return rec.rank_impression(int(impression), history=None if history is None else np.asarray(history, np.int64))


@st.cache_data(max_entries=512, show_spinner=False, hash_funcs=BY_IDENTITY)
def rank_catalog(rec: Recommender, history: np.ndarray | list[int], *, top: int = 10, category: str | None = None,
                 exclude_history: bool = True) -> Ranked:
    """``Recommender.rank_catalog``, cached."""
    return rec.rank_catalog(np.asarray(history, dtype=np.int64), top=int(top), category=category,
                            exclude_history=bool(exclude_history))


@st.cache_data(max_entries=256, show_spinner=False, hash_funcs=BY_IDENTITY)
def catalog_scores(rec: Recommender, history: np.ndarray | list[int]) -> np.ndarray:
    """``Recommender.catalog_scores``, cached."""
    return rec.catalog_scores(np.asarray(history, dtype=np.int64))


@st.cache_data(max_entries=256, show_spinner=False, hash_funcs=BY_IDENTITY)
def explain(rec: Recommender, history: np.ndarray | list[int], candidates: np.ndarray | list[int]) -> Explanation:
    """``Recommender.explain``, cached."""
    return rec.explain(np.asarray(history, dtype=np.int64), np.asarray(candidates, dtype=np.int64))


@st.cache_data(max_entries=8, show_spinner=False, hash_funcs=BY_IDENTITY)
def news_map(rec: Recommender, seed: int = 0) -> NewsMap:
    """``nram_core.news_map`` of every news vector of the recommender's split, cached."""
    return project_news(rec.vectors(), max_points=MAP_POINTS, seed=seed)


@st.cache_data(max_entries=8, show_spinner="Reading what each attention head looks at across the split…",
               hash_funcs=BY_IDENTITY)
def head_summaries(rec: Recommender, words: tuple[str, ...]) -> list:
    """``nram_core.attention_stats.head_summaries`` of the recommender's model on its split, cached
    (``context.warm_up`` computes it in the background for a model with self-attention)."""
    from nram_core.attention_stats import HEAD_SAMPLE, head_summaries as summarise
    from nram_core.data.text import Vocab

    return summarise(rec.model, rec.split, Vocab(words), max_news=HEAD_SAMPLE)


# ---- can the recommendations be trusted (issue 28): faithfulness and beyond accuracy ---------------------
@st.cache_data(max_entries=256, show_spinner=False, hash_funcs=BY_IDENTITY)
def pair_removal(rec: Recommender, history: np.ndarray | list[int], candidate: int, *, k: int = 2,
                 seed: int = 0) -> PairRemoval:
    """``nram_core.faithfulness.pair_removal`` of news row ``candidate`` for the user vector of ``history``
    (an NRAM model's), cached per model, split, history and candidate."""
    from nram_core.faithfulness import pair_removal as remove
    from nram_core.scoring import category_ids, model_device

    user = rec.user_vector(np.asarray(history, dtype=np.int64))  # [D]
    row = np.array([int(candidate)])
    categories = category_ids(rec.split.news, row, model_device(rec.model)) if rec.config.use_categories else ()
    return remove(rec.model, rec.split.news.tokens[int(candidate)], user, categories=categories, k=k, seed=seed)


BEYOND_KEPT = 32
_beyond_ready: dict[tuple, dict | Exception] = {}  # what beyond_figures gave (the error, when it failed), newest last
_beyond_running: set[tuple] = set()  # beyond_figures computing now (in a page or in the background)


def beyond_key(identity: tuple, train: tuple, *, top: int = 10, ruler: tuple | None = None,
               popularity: bool = False) -> tuple:
    """What ``ready_beyond`` looks ``beyond_figures`` up by: the identities of the Recommender and of the
    ruler (``recommender_identity``) and the other arguments, so that a page asks without building either."""
    return (tuple(identity), tuple(train), int(top), None if ruler is None else tuple(ruler), bool(popularity))


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=BY_IDENTITY)
def beyond_figures(rec: Recommender, train: tuple, *, top: int = 10, ruler: Recommender | None = None,
                   popularity: bool = False) -> dict:
    """``nram_core.beyond.beyond_accuracy`` of ``rec``'s top-``top`` lists on its split (``popularity``:
    of the popularity ranking's, on the same users), the intra-list diversity measured with ``ruler``'s
    news vectors (None, or a ruler that has none of its own: that figure is None). ``train``: ``(folder,
    model_path, model_mtime)`` of the train split, read as ``get_split`` reads it (its clicks make
    popularity and novelty). Recorded for ``ready_beyond``; a failure is recorded, then raised."""
    from nram_core.baselines import Popularity
    from nram_core.beyond import beyond_accuracy
    from nram_core.scoring import encodes_news_apart

    key = beyond_key(_identity(rec), train, top=top, ruler=None if ruler is None else _identity(ruler),
                     popularity=popularity)
    folder, model_path, model_mtime = train
    _beyond_running.add(key)
    try:
        train_split = get_split("train", folder, folder, model_path, model_mtime)
        vectors = ruler.news_vectors if ruler is not None and encodes_news_apart(ruler.model) else None
        if popularity:
            figures = beyond_accuracy(Popularity(train_split), rec.split, train_split, top=top, vectors=vectors)
        else:
            figures = beyond_accuracy(rec.model, rec.split, train_split, top=top, vectors=vectors,
                                      news_vectors=rec.news_vectors if encodes_news_apart(rec.model) else None)
    except Exception as exc:
        _beyond_ready[key] = exc  # a page says why instead of offering to compute it again
        raise
    else:
        _beyond_ready[key] = figures
    finally:
        _beyond_running.discard(key)
        while len(_beyond_ready) > BEYOND_KEPT:
            _beyond_ready.pop(next(iter(_beyond_ready)))
    return figures


def ready_beyond(key: tuple) -> dict | Exception | None:
    """What ``beyond_figures`` gave for ``key`` (``beyond_key``) when this process has computed it (the
    error, when it failed), else None. It never computes."""
    return _beyond_ready.get(key)


def beyond_running(key: tuple) -> bool:
    """Whether ``beyond_figures`` for ``key`` is being computed now (by another session or the warm-up)."""
    return key in _beyond_running
