"""The shared sidebar (dataset, split, model, user) and the context every page reads.

``build_sidebar()`` runs in main.py on every rerun, before the page; it stores a
``Ctx`` in the session so that pages only call ``ctx()`` and ``need_*()``. Problems
(a bad folder, a model that cannot read the data, an unknown user) are kept as
messages and shown by the page with st.error, never as a traceback.
"""
from __future__ import annotations

import atexit
import bisect
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from nram_core.data.split import Split
from nram_core.fileio import DataError
from nram_core.run_info import RunInfo
from nram_core.user_quality import PICKS, UserQuality, rank_among
from nram_core.vocab_fit import VocabFit

from . import cache, registry, trust
from .registry import DatasetEntry, ModelEntry
from .widgets import keep_choice

if TYPE_CHECKING:
    from nram_core.recommend import Recommender

CTX_KEY = "_nram_ctx"
USER_OPTIONS_CAP = 2000  # users listed in the picker; any other id can still be typed
# Widget values that must survive a page switch (Streamlit drops the state of widgets
# that a run does not draw); main.py re-assigns them on every run.
PERSISTENT_KEYS = ("rec_mode", "impression_choice", "catalog_top", "catalog_category", "att_candidate", "compare_model",
                   "att_title", "att_head", "att_topical", "att_stopwords", "whatif_mode", "whatif_top", "train_preset",
                   "download_size")


@dataclass
class Ctx:
    datasets: list[DatasetEntry]
    models: list[ModelEntry]  # the usable ones
    unusable: list[ModelEntry] = field(default_factory=list)  # listed in the picker with their reason
    dataset: DatasetEntry | None = None
    split_name: str | None = None
    model: ModelEntry | None = None
    info: RunInfo | None = None  # the chosen model's configs, vocabulary and state (no torch needed)
    split: Split | None = None
    rec: Recommender | None = None  # built by need_model(), on the first page that scores
    fit: VocabFit | None = None
    users: pd.DataFrame | None = None
    user: str | None = None
    quality: UserQuality | None = None  # every user's AUC under this model, once it is computed
    pick: str | None = None  # "best", "typical" or "worst" when the user was picked by AUC
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

    @property
    def scores_users(self) -> bool:
        """Whether the chosen model can score this split (so per-user AUC can exist)."""
        return self.model is not None and self.info is not None and not self.model_error and self.split is not None

    def recommender_for(self, model: ModelEntry) -> Recommender:
        """``model`` serving this split (the sidebar's, or the Compare page's second), built once per process."""
        return cache.get_recommender(*self.recommender_args(model))

    def for_user(self, rec: Recommender) -> Recommender:
        """``rec`` serving the sidebar's user: a family that reads who the user is (LSTUR, NPA) gets
        the user's id in its run (0, the unknown user, for a user it never trained on) in every call
        that has no impression to take it from (the catalog, What-if, explanations)."""
        assert self.user is not None
        return rec.for_user(rec.user_id(self.user))

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

    def abstract_words(self, row: int) -> list[str]:
        """The words of news ``row``'s abstract as a model that reads abstracts (NAML) reads them; [] for a
        split read without abstracts."""
        tokens = self.split.news.abstract_tokens
        return [] if tokens is None else [self.words[t] for t in tokens[int(row)] if t]

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
_warm_threads: list[threading.Thread] = []
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
            rec = cache.get_recommender(*args)
            config = c.info.model_config
            if config.kind == "nram" and config.self_attention:  # the Attention page's per-head summary (NRAM's)
                cache.head_summaries(rec, c.words)
            if auto_quality(c):
                cache.get_user_quality(*args)
            trust.warm_up(c, rec, beyond=False)  # Captum imported off the page: the first removal test waits for none
        except Exception:  # noqa: BLE001 - need_model() builds it again on its page and shows the error there
            logging.getLogger(__name__).warning("warm-up of %s failed; the model pages will say why", args[0],
                                                exc_info=True)

    thread = threading.Thread(target=build, name="nram-warm-up", daemon=True)
    with _warm_lock:
        _warm_threads[:] = [*(t for t in _warm_threads if t.is_alive()), thread]
    thread.start()


WARM_UP_EXIT_WAIT_S = 60


@atexit.register
def _finish_warm_ups() -> None:
    """Let a running warm-up end before the interpreter does: a daemon thread stopped in the middle of
    a torch kernel aborts the process at exit ("terminate called without an active exception")."""
    deadline = time.monotonic() + WARM_UP_EXIT_WAIT_S
    with _warm_lock:
        threads = list(_warm_threads)
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))


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


FIT_SHOWN_NOW = "_fit_shown_now"  # the (dataset, model) whose vocabulary warning this run shows


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
    st.session_state[FIT_SHOWN_NOW] = key
    st.warning(registry.shown_text(c.fit.message))
    if registry.public_mode():  # training is off on a public server: no button that leads nowhere
        return
    st.button("Train a model on this dataset", key="fit_train", icon=":material/model_training:",
              on_click=_train_here, args=(c.dataset.label,))


def need_user() -> Ctx:
    c = need_split()
    pick_pending_default(c)
    c = need_model()
    if c.user_error:
        st.error(registry.shown_text(c.user_error))
        st.stop()
    if c.user is None:
        st.info("Pick a user in the sidebar.")
        st.stop()
    return c


# ---- users picked by the model's AUC ---------------------------------------------------------------
AUTO_QUALITY_IMPRESSIONS = 1_000_000  # larger splits: per-user AUC only when asked (scoring takes minutes)
# NPA, with no news vectors apart from the reader (``scoring.encodes_news_apart``), is scored impression by
# impression, every news encoded again in each batch: beyond this many, per-user AUC only when asked.
AUTO_QUALITY_PER_IMPRESSION = 5_000
USER_PENDING = "_user_pending"  # a provisional default user, replaced by the typical one once AUCs are known
PENDING_PICK = "_pending_pick"  # a pick ("best", ...) the sidebar applies before drawing the user box
USER_PICK = "_user_pick"  # how the current user was picked: pick, user id, default or not, model and split
PICK_LABELS = {"best": "Best", "typical": "Typical", "worst": "Worst"}
PICK_WORDS = {"best": "the best", "typical": "a typical (median)", "worst": "the worst"}


def auto_quality(c: Ctx) -> bool:
    """Whether every user's AUC under the chosen model is computed without being asked (in the background,
    and awaited for the default user): splits small enough to score in seconds for this model's family."""
    if c.split is None or c.info is None:
        return False
    per_impression = getattr(c.info.model_config, "kind", "nram") == "npa"
    return c.split.num_impressions <= (AUTO_QUALITY_PER_IMPRESSION if per_impression else AUTO_QUALITY_IMPRESSIONS)


def user_quality(c: Ctx) -> UserQuality | None:
    """Every user's AUC under the chosen model (computed once per model and split, with a spinner), or
    None when the model cannot score the split; kept in ``c.quality``."""
    if c.quality is None and c.scores_users:
        try:
            with st.spinner("Scoring every impression of this split once, to know how the model does for "
                            "each user…"):
                c.quality = cache.get_user_quality(*c.recommender_args(c.model))
        except (DataError, ValueError, RuntimeError, OSError) as exc:
            c.model_error = f"Model {c.model.path.name} cannot score this dataset: {exc}"
    return c.quality


def background_quality(c: Ctx) -> UserQuality | Exception | None:
    """``c.quality``; or the error its computation raised; or None while ``warm_up`` still computes it
    (never waits)."""
    if c.quality is not None or not c.scores_users:
        return c.quality
    return cache.ready_user_quality(c.recommender_args(c.model))


def pick_pending_default(c: Ctx) -> None:
    """When the sidebar waits for the per-user AUC to pick its default user, compute it and pick the
    typical user, on a rerun (the user box is drawn already)."""
    if provisional_user(c) and user_quality(c) is not None:
        rerun_view(c)


def provisional_user(c: Ctx) -> bool:
    """Whether the user is the sidebar's provisional default, waiting for the typical one."""
    return c.user is not None and st.session_state.get(USER_PENDING) == c.user


def rerun_view(c: Ctx) -> None:
    """Rerun the app now that the per-user AUC is known: the sidebar picks its default user (the typical
    one) when it waits for it, and the page draws what needs it. The rerun replaces this view, so the
    once-per-session vocabulary warning is shown again if this run showed it."""
    if provisional_user(c):
        st.session_state[PENDING_PICK] = "typical"
    shown_now = st.session_state.pop(FIT_SHOWN_NOW, None)
    if shown_now is not None:
        st.session_state.get("_fit_warned", set()).discard(shown_now)
    st.rerun()


def user_note(c: Ctx) -> str | None:
    """What a page says about how its user was picked and how the model does for them."""
    figure = user_figure(c)
    if c.pick is None or figure is None:
        return figure
    picked = st.session_state.get(USER_PICK) or {}
    default = " and the default user" if picked.get("default") else ""
    return f"{c.user} is {PICK_WORDS[c.pick]} user by the model's AUC{default}: {figure}."


def user_figure(c: Ctx) -> str | None:
    """``AUC 0.712 on 3 scorable impressions (#812 of 1,620 users with one)``, or why there is none."""
    row = c.split.user_code(c.user) if c.split is not None and c.user is not None else None
    if c.quality is None or row is None:
        return None
    count = int(c.quality.impressions[row])
    if not count:
        return "no AUC: none of their impressions has both a click and a non-click"
    place, total = rank_among(c.quality.auc, c.quality.impressions, row)
    return (f"AUC {c.quality.auc[row]:.3f} on {count:,} scorable impression{'s' if count != 1 else ''} "
            f"(#{place:,} of {total:,} users with one)")


def _pickable(c: Ctx, among: np.ndarray) -> np.ndarray:
    """Users a pick may choose: in the history filter, with clicks (a cold user's scores all tie, so
    their AUC measures the listed order, not the model)."""
    return among & (c.users["history"].to_numpy() > 0)


def _apply_pick(c: Ctx, pick: str, *, among: np.ndarray, sb, default: bool = False) -> bool:
    """Set the session's user to the ``pick`` by AUC (before the user box is drawn); False if none
    (said in the sidebar, unless it was for the ``default``)."""
    with sb:
        quality = user_quality(c)
    if quality is None:
        return False
    chosen = quality.picks(_pickable(c, among)) or quality.picks(among)
    if pick not in chosen:
        if not default:
            sb.warning("No user in this history range has an impression with both a click and a non-click.")
        return False
    user = c.split.user_ids[chosen[pick]]
    st.session_state["user"] = user
    st.session_state[USER_PICK] = {"pick": pick, "user": user, "default": default, "scope": _pick_scope(c)}
    return True


def _pick_scope(c: Ctx) -> tuple:
    """What a pick by AUC holds for: this model (and weights) on this split."""
    return c.key


def _default_user_choice(c: Ctx, among: np.ndarray, sb) -> None:
    """No user chosen yet: the typical one by AUC when it is known. Until it is (the background
    warm-up computes it; ``need_user`` and the Overview wait for it and rerun), and where it cannot be
    known, a user with clicks and a scorable impression, provisional while the typical one can come."""
    pool = among if among.any() else np.ones(len(c.users), dtype=bool)
    if c.quality is not None and _apply_pick(c, "typical", among=pool, sb=sb, default=True):
        return
    st.session_state["user"] = _default_user(c.users, pool)
    if c.scores_users and c.quality is None and auto_quality(c):
        st.session_state[USER_PENDING] = st.session_state["user"]


def _pick_widgets(c: Ctx, among: np.ndarray, sb) -> None:
    """Best / Typical / Worst buttons and the spread of per-user AUC they choose from."""
    if not c.scores_users:
        return
    cols = sb.columns(len(PICKS))
    for col, pick in zip(cols, PICKS):
        col.button(PICK_LABELS[pick], key=f"pick_{pick}", width="stretch",
                   on_click=st.session_state.__setitem__, args=(PENDING_PICK, pick),
                   help=f"Pick {PICK_WORDS[pick]} user by the model's AUC on their impressions that have both "
                        "a click and a non-click (users with clicks in the history filter).")
    if c.quality is None:
        sb.caption("Users by the model's AUC: computed on the first pick (every impression scored once).")
        return
    chosen = c.quality.picks(_pickable(c, among))
    if chosen:
        auc = c.quality.auc
        # The typical user's own AUC: the middle one among the users this filter lets the buttons pick
        # (the Overview's median interpolates over every scored user, so the two may differ).
        sb.caption("AUC of the users the buttons pick: best {:.3f} · typical {:.3f} · worst {:.3f}".format(
            *(auc[chosen[p]] for p in PICKS)))


def cold_user_note(c: Ctx) -> None:
    if len(c.history) == 0:
        st.info(f"**{c.user} is a cold user**: no clicks in the history. " + cold_scoring_text(c.rec))


def cold_scoring_text(rec: Recommender | None) -> str:
    """How the model scores a history with no click, in words."""
    if rec is None or rec.cold_users_tie:
        return ("The user vector is zero, so every candidate gets the same score (0, probability 0.5). Equal "
                "scores keep their listed order (the tie rule), so the ranking and its metrics show only where "
                "the clicks were listed.")
    if rec.kind == "lstur":
        return ("LSTUR's GRU takes one step on an empty input from the user's long-term vector, so the candidates "
                "are still ranked, by what the model learned of this user id (or of the unknown user).")
    return ("The model uses its learned empty-history user vector, trained on the cold users of train: the "
            "candidates are ranked by what suits a user with no clicks.")


def user_identity_note(c: Ctx, rec: Recommender) -> str | None:
    """For a family that reads who the user is (LSTUR, NPA): whether the model knows the sidebar's user,
    and how it scores one it does not (the unknown user, id 0); None for the other families."""
    if not rec.reads_users or c.user is None:
        return None
    if rec.user_id(c.user):
        return (f"{rec.kind.upper()} reads who the user is: {c.user} was in its training data, so their learned "
                "user embedding is used.")
    return (f"{rec.kind.upper()} reads who the user is: {c.user} was not in its training data, so they are scored "
            "as the unknown user (id 0), the generic user that masked training samples taught it.")


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
    st.session_state.pop(FIT_SHOWN_NOW, None)  # a new run: no warning shown in it yet
    datasets = cache.datasets()
    listed = cache.models()
    c = Ctx(datasets=datasets, models=[m for m in listed if m.ok], unusable=[m for m in listed if not m.ok])
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

    _model_widgets(c, sb)

    _load(c)
    _user_widgets(c, sb)
    return c


def _model_label(model: ModelEntry) -> str:
    return model.label if model.ok else f"⚠ {model.label}: {registry.shown_text(model.error or '')}"


def _model_widgets(c: Ctx, sb) -> None:
    """The model picker: usable models first (the default is the first), then the folders that cannot
    be served, each with its reason; picking one of those says why on every page."""
    listed = c.models + c.unusable
    by_model = {m.key: m for m in listed}
    pending = st.session_state.pop(PENDING_MODEL, None)
    if pending in by_model:  # "Use this model" on the Train page
        st.session_state["model"] = pending
    if not listed:
        sb.caption("No model yet: train one on the Train page.")
        return
    keep_choice("model", list(by_model))
    sb.selectbox("Model", list(by_model), key="model", format_func=lambda k: _model_label(by_model[k]),
                 help="The shipped demo model; runs under NRAM_HOME/runs, the folders of NRAM_RUNS_DIRS and "
                      "`-- --runs DIR`; and the experiment suites' runs, by suite, model and seed. "
                      "⚠ marks a folder that cannot be used, with why.")
    c.model = by_model[st.session_state["model"]]
    if not c.model.ok:
        c.model_error = f"This model cannot be used: {c.model.error}"
        sb.warning(registry.shown_text(c.model.error or ""))
    elif len(c.model.label) > 26:  # the picker cuts long run names: say it in full below it
        sb.caption(c.model.label)


def _load(c: Ctx) -> None:
    if c.dataset_error or c.split_name is None:
        return
    folder = str(c.dataset.folder(c.split_name))
    if c.model is not None and c.model.ok:
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
    ready = cache.ready_user_quality(c.recommender_args(c.model)) if c.scores_users else None
    c.quality = ready if isinstance(ready, UserQuality) else None
    pick = st.session_state.pop(PENDING_PICK, None)
    provisional = st.session_state.get(USER_PENDING) is not None \
        and st.session_state.get(USER_PENDING) == st.session_state.get("user")
    if pick is None and provisional and c.quality is not None:  # known now: the default becomes the typical user
        pick = "typical"
    if pick in PICKS:  # a Best/Typical/Worst button, or the default waiting for the per-user AUC
        _apply_pick(c, pick, among=among, sb=sb, default=provisional and pick == "typical")
    if "user" not in st.session_state or st.session_state["user"] is None:
        _default_user_choice(c, among, sb)
    chosen = st.session_state.get("user")
    if chosen is not None and chosen not in options:
        options = [chosen] + options
    sb.selectbox("User id", options, key="user", accept_new_options=True, placeholder="type a user id",
                 help=f"{matching:,} users match the filter" + (" and the search" if searched else "")
                      + f" (the list shows {min(matching, USER_OPTIONS_CAP):,}); any id can be entered.")
    if st.session_state.get(USER_PENDING) != st.session_state.get("user"):  # another user chosen: none awaited
        st.session_state.pop(USER_PENDING, None)
    elif st.session_state.get(USER_PENDING) is not None:
        sb.caption("Provisional: the default user is a typical one, the median user by the model's AUC, picked "
                   "once every impression of the split has been scored (a few seconds, in the background).")
    any_user = sb.toggle("Random: any user", key="random_any",
                         help="Off: Random user draws users with clicks whose latest impression has both a click "
                              "and a non-click. On: any user, cold ones included.")
    sb.button("Random user", icon=":material/casino:", on_click=_pick_random_user, args=(table, among, any_user),
              key="random_user", disabled=not among.any(), width="stretch")
    _pick_widgets(c, among, sb)
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
    picked = st.session_state.get(USER_PICK) or {}
    if picked.get("user") == user and picked.get("scope") == _pick_scope(c):
        c.pick = picked["pick"]
    sb.caption(f"{int(history[row])} clicks in history · {int(table['impressions'].iat[row])} impressions")
    note = user_note(c)
    if note:
        sb.caption(note)
