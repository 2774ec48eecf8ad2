"""The shared sidebar (dataset, split, model, user) and the context every page reads.

``build_sidebar()`` runs in main.py on every rerun, before the page; it stores a
``Ctx`` in the session so that pages only call ``ctx()`` and ``need_*()``. Problems
(a bad folder, a model that cannot read the data, an unknown user) are kept as
messages and shown by the page with st.error, never as a traceback.
"""
from __future__ import annotations

import bisect
import logging
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from nram_core.data.split import Split
from nram_core.fileio import DataError
from nram_core.run_info import RunInfo
from nram_core.vocab_fit import VocabFit

from . import cache, registry
from .registry import DatasetEntry, ModelEntry
from .widgets import keep_choice

if TYPE_CHECKING:
    from nram_core.recommend import Recommender

CTX_KEY = "_nram_ctx"
USER_OPTIONS_CAP = 2000  # users listed in the picker; any other id can still be typed
# Widget values that must survive a page switch (Streamlit drops the state of widgets
# that a run does not draw); main.py re-assigns them on every run.
PERSISTENT_KEYS = ("rec_mode", "impression_choice", "catalog_top", "catalog_category", "att_candidate", "compare_model",
                   "att_title", "att_head", "att_topical", "whatif_mode", "whatif_top", "train_preset",
                   "download_size")


@dataclass
class Ctx:
    datasets: list[DatasetEntry]
    models: list[ModelEntry]
    dataset: DatasetEntry | None = None
    split_name: str | None = None
    model: ModelEntry | None = None
    info: RunInfo | None = None  # the chosen model's configs, vocabulary and state (no torch needed)
    split: Split | None = None
    rec: Recommender | None = None  # built by need_model(), on the first page that scores
    fit: VocabFit | None = None
    users: pd.DataFrame | None = None
    user: str | None = None
    impressions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    history: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dataset_error: str | None = None
    model_error: str | None = None
    user_error: str | None = None

    @property
    def key(self) -> tuple:
        """Identifies the split as read (its folder, and the model whose vocabulary encoded it)."""
        usable = self.dataset is not None and self.dataset.ok and self.split_name
        folder = str(self.dataset.folder(self.split_name)) if usable else ""
        model = (self.model.key, self.model.mtime_ns) if self.model else ("", 0)
        return (folder, self.split_name or "", *model)

    @property
    def train_folder(self) -> str | None:
        if self.dataset is None or self.dataset.layout is None or self.dataset.layout.train is None:
            return None
        return str(self.dataset.layout.train)

    def recommender_args(self, model: ModelEntry) -> tuple:
        """What ``cache.get_recommender`` takes (and caches on) for ``model`` serving this split."""
        assert self.dataset is not None and self.split_name is not None
        return (model.key, model.mtime_ns, self.split_name, str(self.dataset.folder(self.split_name)),
                self.train_folder)

    def recommender_for(self, model: ModelEntry) -> Recommender:
        """``model`` serving this split (the sidebar's, or the Compare page's second), built once per process."""
        return cache.get_recommender(*self.recommender_args(model))

    @property
    def truth(self) -> dict:
        path = self.dataset.truth_path if self.dataset else None
        return cache.read_truth(str(path)) if path else {}

    @property
    def words(self) -> tuple[str, ...]:
        assert self.info is not None
        return self.info.vocab.words

    def title_words(self, row: int) -> list[str]:
        """The words of news ``row``'s title as the model reads them (its vocabulary, its title length)."""
        words = self.words
        return [words[t] for t in self.split.news.tokens[int(row)] if t]

    def news(self) -> pd.DataFrame:
        """Titles, ids and category names by news row (``tables.news_frame``)."""
        assert self.split is not None
        return cache.news_frame(self.split, self.key)

    def stats(self) -> dict:
        """The split's figures and the tables behind the Overview charts (``tables.split_stats``)."""
        assert self.split is not None
        return cache.split_stats(self.split, self.key)

    def search_titles(self, query: str) -> list[int]:
        """News rows whose title contains ``query`` (case-insensitive), at most 25."""
        assert self.split is not None
        return cache.search_titles(self.split, self.key, query)


def ctx() -> Ctx:
    return st.session_state[CTX_KEY]


# ---- what pages require ----------------------------------------------------------------------
def need_split() -> Ctx:
    c = ctx()
    if c.dataset_error or c.split is None:
        st.error(registry.shown_text(c.dataset_error or "No dataset selected."))
        st.stop()
    return c


def load_recommender(c: Ctx) -> None:
    """Build the model and encode every news once (cached), or keep why that failed in ``c.model_error``."""
    if c.rec is not None or c.model_error or c.info is None or c.split is None:
        return
    try:
        c.rec = c.recommender_for(c.model)
    except (DataError, ValueError, RuntimeError, OSError) as exc:
        c.model_error = f"Model {c.model.path.name} cannot score this dataset: {exc}"


_warm_lock = threading.Lock()
_warmed: set[tuple] = set()


def warm_up(c: Ctx) -> None:
    """Build the chosen model's Recommender in a background thread, once per model and split.

    The sidebar and the Overview need no torch, so a first start shows them at once; meanwhile
    this thread imports torch, loads the weights and encodes every news, so that the pages that
    score find the Recommender in the cache. Building it inside the script run instead would
    hold the page back: the browser shows the Overview only when that run ends.
    """
    if c.info is None or c.model_error or c.split is None:
        return
    args = c.recommender_args(c.model)
    with _warm_lock:
        if args in _warmed:
            return
        _warmed.add(args)

    def build() -> None:
        try:
            cache.get_recommender(*args)
        except Exception:  # noqa: BLE001 - need_model() builds it again on its page and shows the error there
            logging.getLogger(__name__).warning("warm-up of %s failed; the model pages will say why", args[0],
                                                exc_info=True)

    threading.Thread(target=build, name="nram-warm-up", daemon=True).start()


def need_model() -> Ctx:
    c = need_split()
    if c.model is None and not c.model_error:
        st.info("No trained model yet. Train one on the **Train** page; it will appear in the model picker.")
        st.stop()
    with st.spinner("Loading the model and encoding every news once…"):  # shown only if it takes > 0.5 s
        load_recommender(c)
    if c.model_error or c.rec is None:
        st.error(registry.shown_text(c.model_error or "The model could not be loaded."))
        st.stop()
    fit_warning(c)
    return c


TRAIN_PREFILL = "_train_prefill"  # a run name the Train page's form starts with


def _train_here(label: str) -> None:
    st.session_state[TRAIN_PREFILL] = label
    st.session_state["_goto_train"] = True  # the button is gone on the rerun (shown once): switch from here


def fit_warning(c: Ctx) -> None:
    """The model-vs-data warning (many title words unknown to the model), once per dataset and
    model in a session, with its fix: a button to the Train page, its run name prefilled."""
    if st.session_state.pop("_goto_train", False):
        st.switch_page("views/train.py")
    if c.fit is None or c.fit.level != "warn" or c.model is None or c.dataset is None:
        return
    shown = st.session_state.setdefault("_fit_warned", set())
    key = (c.dataset.key, c.model.key)
    if key in shown:
        return
    shown.add(key)
    st.warning(registry.shown_text(c.fit.message))
    if registry.public_mode():  # training is off on a public server: no button that leads nowhere
        return
    st.button("Train a model on this dataset", key="fit_train", icon=":material/model_training:",
              on_click=_train_here, args=(c.dataset.label,))


def need_user() -> Ctx:
    c = need_model()
    if c.user_error:
        st.error(registry.shown_text(c.user_error))
        st.stop()
    if c.user is None:
        st.info("Pick a user in the sidebar.")
        st.stop()
    return c


def cold_user_note(c: Ctx) -> None:
    if len(c.history) == 0:
        st.info(f"**{c.user} is a cold user**: no clicks in the history, so the user vector is zero and every "
                "candidate gets the same score (0, probability 0.5). Equal scores keep their listed order (the "
                "tie rule), so the ranking and its metrics show only where the clicks were listed.")


# ---- the sidebar -----------------------------------------------------------------------------
PENDING_MODEL = "_pending_model"  # a run folder the sidebar should switch to on its next draw


def _showcase_mask(table: pd.DataFrame, among: np.ndarray) -> np.ndarray:
    """Of the users in ``among`` (a boolean mask over ``table``), those worth showing: clicks in their
    history and a latest impression with both a click and a non-click, so every metric and chart
    has something to say; where a split has none (a thin sample), those whose impression can at
    least be scored, then those with clicks, then anyone."""
    history = table["history"].to_numpy()
    scorable = table["scorable"].to_numpy()
    for chosen in (among & (history > 0) & scorable, among & scorable, among & (history > 0)):
        if chosen.any():
            return chosen
    return among


def _pick_random_user(table: pd.DataFrame, among: np.ndarray, any_user: bool) -> None:
    """Runs as the button's callback: the pool is drawn only when the button is pressed."""
    pool = np.flatnonzero(among if any_user else _showcase_mask(table, among))
    if len(pool):
        st.session_state["user"] = str(table["user"].iat[int(pool[random.randrange(len(pool))])])


def _default_user(table: pd.DataFrame, among: np.ndarray) -> str | None:
    if not among.any():
        return None
    showcase = _showcase_mask(table, among)
    rich = showcase & (table["history"].to_numpy() >= 10)
    return str(table["user"].iat[int(np.argmax(rich if rich.any() else showcase))])


def _prefix_rows(user_ids: list[str], prefix: str) -> range:
    """Rows whose id starts with ``prefix``: one contiguous range of the sorted ids."""
    return range(bisect.bisect_left(user_ids, prefix), bisect.bisect_left(user_ids, prefix + "\U0010ffff"))


def build_sidebar() -> Ctx:
    datasets = cache.datasets()
    models = registry.discover_models()
    c = Ctx(datasets=datasets, models=models)
    sb = st.sidebar

    by_key = {d.key: d for d in datasets}
    keep_choice("dataset", list(by_key))
    sb.selectbox("Dataset", list(by_key), key="dataset",
                 format_func=lambda k: by_key[k].label if by_key[k].ok else f"⚠ {by_key[k].label}",
                 help="The built-in demo corpus, folders from NRAM_DATA_DIRS or `-- --data DIR`, "
                      "and folders registered on the Data page.")
    c.dataset = by_key[st.session_state["dataset"]]
    if not c.dataset.ok:
        c.dataset_error = f"This dataset cannot be used: {c.dataset.error}"
    splits = c.dataset.splits()
    if splits:
        keep_choice("split", splits)
        sb.radio("Split", splits, key="split", horizontal=True,
                 help="dev: the held-out day the model is evaluated on; train: what it learned from.")
        c.split_name = st.session_state["split"]

    model_keys = [m.key for m in models]
    by_model = {m.key: m for m in models}
    pending = st.session_state.pop(PENDING_MODEL, None)
    if pending in by_model:  # "Use this model" on the Train page
        st.session_state["model"] = pending
    if model_keys:
        keep_choice("model", model_keys)
        sb.selectbox("Model", model_keys, key="model", format_func=lambda k: by_model[k].label,
                     help="The shipped demo model and every run under NRAM_HOME/runs.")
        c.model = by_model[st.session_state["model"]]
        if len(c.model.label) > 26:  # the picker cuts long run names: say it in full below it
            sb.caption(c.model.label)
    else:
        sb.caption("No model yet: train one on the Train page.")

    _load(c)
    _user_widgets(c, sb)
    return c


def _load(c: Ctx) -> None:
    if c.dataset_error or c.split_name is None:
        return
    folder = str(c.dataset.folder(c.split_name))
    if c.model is not None:
        try:
            c.info = cache.get_run_info(c.model.key, c.model.mtime_ns)
        except (DataError, ValueError, OSError) as exc:
            c.model_error = f"Model {c.model.path} cannot be loaded: {exc}"
    model_path = c.model.key if c.info is not None else None
    mtime = c.model.mtime_ns if c.info is not None else 0
    slot = st.empty()  # a progress bar, drawn only while a split is read for the first time

    def reading(path: str, done: int, total: int) -> None:
        slot.progress(min(1.0, done / max(total, 1)),
                      text=f"Preparing {Path(path).parent.name}/{Path(path).name} once: {done >> 20:,} of "
                           f"{total >> 20:,} MB read (later starts map the prepared arrays)")

    try:
        c.split = cache.split_with_progress((c.split_name, folder, c.train_folder, model_path, mtime), reading)
    except (DataError, OSError) as exc:
        c.dataset_error = f"{c.dataset.label}: {exc}"
        return
    finally:
        slot.empty()
    if c.split.num_impressions == 0:
        c.dataset_error = f"{folder}: no usable impressions (see the skipped rows on the Overview page)."
        return
    if c.info is None:
        return
    c.fit = cache.vocab_fit(c.info, c.split, c.key, c.train_folder)
    if c.fit.level == "error":
        c.model_error = c.fit.message


def _user_widgets(c: Ctx, sb) -> None:
    if c.split is None:
        return
    c.users = cache.user_table(c.split, c.key)
    sb.divider()
    sb.markdown("**User**")
    table = c.users
    user_ids = c.split.user_ids  # sorted, in the table's row order
    history = table["history"].to_numpy()
    top = int(history.max()) if len(table) else 0
    bounds = (0, max(top, 1))
    current = st.session_state.get("history_range")
    if (not isinstance(current, (tuple, list)) or len(current) != 2
            or not (bounds[0] <= current[0] <= current[1] <= bounds[1])):
        st.session_state["history_range"] = bounds
    lo, hi = sb.slider("History length (clicks)", bounds[0], bounds[1], key="history_range",
                       help="Only list users whose history, as of their latest impression, has this many clicks.")
    among = (history >= lo) & (history <= hi)  # [U] bool
    matching = int(among.sum())
    searched = len(table) > USER_OPTIONS_CAP
    listed = np.flatnonzero(among)[:USER_OPTIONS_CAP]
    if searched:  # too many to list: find them by the start of their id, searched on the server
        query = sb.text_input("Find a user id", key="user_query", placeholder="the first characters, e.g. U12",
                              help=f"Searches all {len(table):,} users (by the start of the id); the list below "
                                   f"shows the first {USER_OPTIONS_CAP:,} that match.").strip()
        if query:
            rows = _prefix_rows(user_ids, query)
            if not len(rows) and query != query.upper():  # "u12" means U12
                rows = _prefix_rows(user_ids, query.upper())
            found = np.arange(rows.start, rows.stop)
            listed = found[among[found]][:USER_OPTIONS_CAP]
            matching = int(among[found].sum())
    options = [user_ids[i] for i in listed]
    scope = (c.dataset.key, c.split_name)
    previous = st.session_state.get("_user_scope")
    if previous != scope:  # another dataset or split: start from its default user
        st.session_state["_user_scope"] = scope
        if previous is not None and c.split.user_code(str(st.session_state.get("user"))) is None:
            st.session_state["user"] = None
    if "user" not in st.session_state or st.session_state["user"] is None:
        st.session_state["user"] = _default_user(table, among if among.any() else np.ones(len(table), dtype=bool))
    chosen = st.session_state.get("user")
    if chosen is not None and chosen not in options:
        options = [chosen] + options
    sb.selectbox("User id", options, key="user", accept_new_options=True,
                 placeholder="type a user id",
                 help=f"{matching:,} users match the filter" + (" and the search" if searched else "")
                      + f" (the list shows {min(matching, USER_OPTIONS_CAP):,}); any id can be entered.")
    any_user = sb.toggle("Random: any user", key="random_any",
                         help="Off: Random user draws users with clicks whose latest impression has both a click "
                              "and a non-click. On: any user, cold ones included.")
    sb.button("Random user", icon=":material/casino:", on_click=_pick_random_user, args=(table, among, any_user),
              key="random_user", disabled=not among.any(), width="stretch")
    if not among.any():
        sb.warning("No user has a history length in this range.")
    elif matching == 0:
        sb.warning("No user in this history range has an id that starts with that.")
    user = st.session_state.get("user")
    if user is None:
        return
    user = str(user).strip()
    c.user = user
    row = c.split.user_code(user)  # the user's row in the table, whose rows follow the sorted ids
    if row is None:
        c.user_error = (f"Unknown user id {user!r}: it has no impression in the {c.split_name} split of "
                        f"{c.dataset.label}. Pick one from the list or press Random user.")
        sb.error(f"Unknown user id {user!r}")
        return
    try:
        c.impressions = c.split.user_impressions(user)
        c.history = c.split.history_of(int(c.impressions[-1]))  # as of the latest impression
    except DataError as exc:
        c.user_error = str(exc)
        return
    sb.caption(f"{int(history[row])} clicks in history · {int(table['impressions'].iat[row])} impressions")
