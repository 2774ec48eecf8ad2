"""Can the studio's pictures be trusted (issue 28)? What the pages draw of it: the removal test of one
candidate's word attention (``nram_core.faithfulness.pair_removal``) with its gradient attribution beside
the attention shading, and the beyond-accuracy figures (``nram_core.beyond``) of two rankings side by side.

The figures come from ``cache`` (``pair_removal`` per model, history and candidate; ``beyond_figures``
once per model and split); the functions here only word and draw them.
"""
from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from . import cache, charts, registry

if TYPE_CHECKING:
    from nram_core.faithfulness import PairRemoval
    from nram_core.recommend import Recommender

    from .context import Ctx
    from .registry import ModelEntry

REMOVED = 2  # words removed from the candidate's title: the page's "two most-attended words"
BEYOND_TOP = 10  # the list length of the beyond-accuracy figures (the suites' too)
POPULARITY = "popularity"
NOT_NRAM = ("The removal test of the word attention (is the shading faithful?) is NRAM's so far: "
            "this {family} model is not measured.")
NO_CLICK = "A user with no click has no user vector to test the shading against."
SCORE_ERRORS = (ValueError, RuntimeError, OSError)  # DataError is a ValueError


# ---- faithfulness: one candidate's removal test ------------------------------------------------------
def markdown_text(text: str) -> str:
    r"""``text`` with the characters Markdown (and Streamlit's $math$) would read escaped: a title word such
    as '$5' or '*' is shown as it is.

    >>> print(markdown_text("'$5', 'a_b' and *"))
    '\$5', 'a\_b' and \*
    """
    return re.sub(r"([\\`*_\[\]$<>#|~])", r"\\\1", text)


def _quoted(words: list[str], positions: list[int]) -> str:
    return ", ".join(f"'{words[p]}'" for p in positions)


def faithfulness_text(removal: PairRemoval, words: list[str]) -> str:
    """The removal test in plain words (the Attention page's statement and the export's line). ``words``:
    the title's words by position (``removal``'s positions index it)."""
    k, score = removal.k, removal.score
    if removal.without["attention"] is None:
        return (f"The title has {len([w for w in words if w])} words: removing {k} would leave too few to test "
                f"(one word must stay), so the shading is not tested on this candidate.")
    moved = {m: removal.without[m] - score for m in ("attention", "random", "gradients")}
    parts = (f"Without its {k} most-attended words ({_quoted(words, removal.removed['attention'])}) the score "
             f"goes from {score:+.3f} to {removal.without['attention']:+.3f} ({moved['attention']:+.3f}); "
             f"without {k} random words ({_quoted(words, removal.removed['random'])}) to "
             f"{removal.without['random']:+.3f} ({moved['random']:+.3f}); without the top {k} by gradients "
             f"({_quoted(words, removal.removed['gradients'])}) to {removal.without['gradients']:+.3f} "
             f"({moved['gradients']:+.3f}).")
    attention, random, gradients = (abs(moved[m]) for m in ("attention", "random", "gradients"))
    if attention > random:
        verdict = (f" Removing the most-attended words moves the score more than removing random words "
                   f"({attention:.3f} against {random:.3f}): for this candidate the shading points at words the "
                   "score depends on")
        verdict += (f", though the gradients find words that move it further ({gradients:.3f})."
                    if gradients > attention else ".")
    else:
        verdict = (f" Removing the most-attended words moves the score no more than removing random words "
                   f"({attention:.3f} against {random:.3f}): for this candidate the shading does not show what "
                   "the score depends on.")
    return parts + verdict


def attribution_colour(value: float) -> str:
    """Background of a word by its attribution scaled to [-1, 1]: green raises the score, red lowers it."""
    value = float(np.clip(value, -1.0, 1.0))
    rgb = (26, 127, 55) if value >= 0 else (207, 34, 46)  # charts.UP, charts.DOWN
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{abs(value) * 0.85:.3f})"


def attribution_title_html(words: list[str], attributions: np.ndarray) -> str:
    """A title with every word's background shaded by its gradient attribution, relative to the title's
    largest in magnitude (hover: the value)."""
    values = np.asarray(attributions, dtype=float)[:len(words)]
    largest = float(np.abs(values).max()) if len(values) else 0.0
    spans = []
    for word, value in zip(words, values):
        scaled = value / largest if largest > 0 else 0.0
        style = (f"background:{attribution_colour(scaled)};color:{'#ffffff' if abs(scaled) > 0.6 else '#1f2328'};"
                 "padding:1px 4px;border-radius:3px;margin:1px;display:inline-block")
        spans.append(f"<span title='{value:+.4f}' style='{style}'>{html.escape(word)}</span>")
    return f"<div style='line-height:1.9'>{''.join(spans) or '<i>(no words)</i>'}</div>"


def attribution_chart(words: list[str], attention: np.ndarray, gradients: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """Per title word (top to bottom in title order), its attention weight beside its gradient attribution
    (green: raises the score, red: lowers it): the data and the Vega-Lite spec for ``st.vega_lite_chart``.
    A plain spec, not Altair: Altair validates a chart against its schema on every rerun (tens of ms)."""
    n = len(words)
    frame = pd.DataFrame({"word": [f"{i + 1}·{w}" for i, w in enumerate(words)],
                          "attention": np.asarray(attention, dtype=float)[:n],
                          "attribution": np.asarray(gradients, dtype=float)[:n]})
    frame["direction"] = np.where(frame["attribution"] >= 0, "raises the score", "lowers the score")
    size = {"width": 220, "height": max(120, 22 * n)}
    word = {"field": "word", "type": "nominal", "sort": None, "title": None}
    spec = {"spacing": 8, "hconcat": [
        {"title": "attention weight", **size, "mark": {"type": "bar", "color": "#d7301f"},
         "encoding": {"y": word, "x": {"field": "attention", "type": "quantitative", "title": "weight"},
                      "tooltip": [{"field": "word"}, {"field": "attention", "format": ".3f"}]}},
        {"title": "gradient attribution", **size, "mark": {"type": "bar"},
         "encoding": {"y": {**word, "axis": None},
                      "x": {"field": "attribution", "type": "quantitative", "title": "integrated gradients"},
                      "color": {"field": "direction", "type": "nominal", "legend": None,
                                "scale": {"domain": ["raises the score", "lowers the score"],
                                          "range": [charts.UP, charts.DOWN]}},
                      "tooltip": [{"field": "word"}, {"field": "attribution", "format": "+.4f"}]}}]}
    return frame, spec


def position_words(c: Ctx, row: int) -> list[str]:
    """The words of news ``row``'s title by position, as the model reads them ('' on padding)."""
    words = c.words
    return [words[t] if t else "" for t in c.split.news.tokens[int(row)]]


def removal_of(rec: Recommender, history: np.ndarray, candidate: int) -> PairRemoval | None:
    """The cached removal test of ``candidate`` for ``history``, or None for a model of another family or a
    history with no click (its user vector says nothing about words)."""
    if rec.kind != "nram" or len(history) == 0:
        return None
    return cache.pair_removal(rec, np.asarray(history, dtype=np.int64), int(candidate), k=REMOVED)


def faithfulness_section(c: Ctx, rec: Recommender, history: np.ndarray, candidate: int) -> None:
    """The Attention page's removal test of the chosen candidate: the statement, then its attention
    shading beside its gradient attribution, and both per word."""
    st.subheader("Is the shading faithful? Remove the words it points at")
    if rec.kind != "nram":
        st.caption(NOT_NRAM.format(family=rec.kind.upper()))
        return
    removal = removal_of(rec, history, candidate)
    if removal is None:
        st.caption(NO_CLICK)
        return
    words = position_words(c, candidate)
    st.markdown(markdown_text(faithfulness_text(removal, words)))
    real = [w for w in words if w]
    left, right = st.columns(2)
    left.markdown("**Attention** (what the shading shows)")
    left.markdown(charts.shaded_title_html(real, removal.attention[:len(real)]), unsafe_allow_html=True)
    right.markdown("**Gradient attribution** (green raises the score, red lowers it)")
    right.markdown(attribution_title_html(real, removal.gradients), unsafe_allow_html=True)
    data, spec = attribution_chart(real, removal.attention, removal.gradients)
    st.vega_lite_chart(data, spec, key="att_attribution")
    from nram_core.faithfulness import spearman

    agreement = spearman(removal.attention[:len(real)], np.abs(removal.gradients[:len(real)]))
    st.caption("Removing a word masks it out of the title, as padding (its vector is not zeroed). The gradient "
               "attribution is integrated gradients of this user's score on the word embeddings (Captum). "
               + (f"Rank agreement of the attention with the attributions' magnitudes on this title: Spearman "
                  f"{agreement:+.2f}. " if np.isfinite(agreement) else "")
               + "One candidate and one random draw: `python -m nram_core faithfulness` measures many.")


def faithfulness_line(c: Ctx, rec: Recommender, history: np.ndarray, candidate: int) -> str:
    """The export's line for ``candidate``: the statement, or why there is none."""
    if rec.kind != "nram":
        return NOT_NRAM.format(family=rec.kind.upper())
    removal = removal_of(rec, history, candidate)
    if removal is None:
        return NO_CLICK
    return faithfulness_text(removal, position_words(c, candidate))


# ---- beyond accuracy: two rankings side by side ------------------------------------------------------
FIGURE_TEXT = {  # figure: (what it measures, which way is what)
    "coverage": ("share of the catalog recommended to anyone", "higher: more of the catalog reaches someone"),
    "gini": ("Gini of how often each news is recommended", "lower: the slots go to the news more evenly"),
    "intra_list_diversity": ("mean cosine distance of the news in a list", "higher: more varied lists"),
    "category_entropy": ("category entropy of a list (bits)", "higher: more categories per list"),
    "calibration_kl": ("KL from a user's history categories to their list's", "lower: lists mirror the history"),
    "novelty": ("self-information of the listed news from train clicks (bits)", "higher: less popular news"),
    "personalisation": ("1 − overlap (Jaccard) of two users' lists", "higher: users get different lists"),
}


def beyond_table(figures: dict[str, dict]) -> pd.DataFrame:
    """The seven figures (``nram_core.beyond.FIGURES``) of each ranking in ``figures`` (label -> the dict
    ``beyond_accuracy`` gives), one column per ranking, with what each figure measures."""
    from nram_core.beyond import FIGURES

    table = pd.DataFrame({"figure": list(FIGURES)})
    for label, values in figures.items():
        table[label] = [values.get(name) for name in FIGURES]
    table["what it measures"] = [FIGURE_TEXT[name][0] for name in FIGURES]
    table["reading"] = [FIGURE_TEXT[name][1] for name in FIGURES]
    return table


def beyond_summary(figures: dict[str, dict]) -> str:
    """What the table says of personalisation and coverage: the first ranking against the second.

    >>> beyond_summary({"A": {"personalisation": 0.98}, "B": {"personalisation": 0.95}})
    'A is more personal than B (personalisation 0.980 against 0.950).'
    >>> beyond_summary({"A": {"coverage": 0.9}, "B": {"coverage": 1.0}})
    'A covers less of the catalog (90.0% against 100.0%).'
    """
    (a, fa), (b, fb) = list(figures.items())[:2]
    said = []
    x, y = fa.get("personalisation"), fb.get("personalisation")
    if x is not None and y is not None:
        how = "more personal than" if x > y else "less personal than" if x < y else "as personal as"
        said.append(f"is {how} {b} (personalisation {x:.3f} against {y:.3f})")
    x, y = fa.get("coverage"), fb.get("coverage")
    if x is not None and y is not None:
        how = "more" if x > y else "less" if x < y else "as much"
        said.append(f"covers {how} of the catalog ({x:.1%} against {y:.1%})")
    return f"{a} {' and '.join(said)}." if said else ""


def _train_args(c: Ctx) -> tuple | None:
    """``cache.beyond_figures``' ``train``: the dataset's train split read as the sidebar's model reads it."""
    if c.train_folder is None or c.model is None:
        return None
    return (c.train_folder, c.model.key, c.model.mtime_ns)


def _titled_train(c: Ctx, title: str) -> tuple | None:
    """The section's title, then ``_train_args``, or None with a line saying why there are no figures."""
    st.subheader(title)
    train = _train_args(c)
    if train is None:
        st.info("The beyond-accuracy figures need the dataset's train split (popularity and novelty count its "
                "clicks): this dataset has none.")
    return train


def _identity(c: Ctx, model: ModelEntry) -> tuple:
    return cache.recommender_identity(*c.recommender_args(model))


def _draw_beyond(c: Ctx, figures: dict[str, dict], *, ruler: str | None, key: str) -> None:
    first = next(iter(figures.values()))
    st.dataframe(beyond_table(figures), hide_index=True, width="stretch", key=key,
                 column_config={**{label: st.column_config.NumberColumn(format="%.3f", width=130) for label in figures},
                                "figure": st.column_config.TextColumn(width=140),
                                "what it measures": st.column_config.TextColumn(width=260),
                                "reading": st.column_config.TextColumn(width=240)})
    summary = beyond_summary(figures)
    if all(f.get("intra_list_diversity") is None for f in figures.values()):
        ruler = None  # the ruler named had no news vectors of its own (NPA): no diversity was measured
    st.caption((summary + " " if summary else "")
               + f"Over the top-{first['top']} lists of {first['lists']:,} users of the {c.split_name} split "
               f"(each user's latest impression with more than {first['top']} candidates), chosen from a pool of "
               f"{first['catalog']:,} news; novelty counts the train clicks. "
               + (f"Intra-list diversity is measured with {ruler}'s news vectors for every column."
                  if ruler else "Intra-list diversity needs news vectors of the model's own: none here."))


def _beyond(c: Ctx, wanted: dict[str, tuple[tuple, dict]], compute, *, ruler: str | None, key: str) -> None:
    """Draw the figures when every ranking's is known; else say why not, wait for a computation under way,
    or offer to compute them. ``wanted``: label -> (``cache.beyond_key``, ``cache.beyond_figures``' keyword
    arguments but the Recommenders); ``compute(label)``: computes one, building the Recommenders it needs."""
    ready = {label: cache.ready_beyond(k) for label, (k, _) in wanted.items()}
    failed = [r for r in ready.values() if isinstance(r, Exception)]
    if failed:
        st.error(registry.shown_text(f"The beyond-accuracy figures cannot be computed: {failed[0]}"))
        return
    if all(r is not None for r in ready.values()):
        _draw_beyond(c, ready, ruler=ruler, key=key)
        return
    if any(cache.beyond_running(k) for k, _ in wanted.values()):

        @st.fragment(run_every=1.0)
        def when_ready() -> None:
            if all(cache.ready_beyond(k) is not None for k, _ in wanted.values()):
                st.rerun()
            st.caption("Computing the beyond-accuracy figures of this split (a few seconds)…")

        when_ready()
        return
    slot = st.empty()
    if slot.button("Compute the beyond-accuracy figures (seconds)", key=f"{key}_compute"):
        slot.empty()  # the table takes the button's place
        try:
            with st.spinner("Ranking every user's top list…"):
                figures = {label: compute(label) for label in wanted}
        except SCORE_ERRORS as exc:
            st.error(registry.shown_text(f"The beyond-accuracy figures cannot be computed: {exc}"))
            return
        _draw_beyond(c, figures, ruler=ruler, key=key)


def overview_beyond(c: Ctx) -> None:
    """The Overview's beyond-accuracy figures: the sidebar's model beside the popularity ranking, on the
    same users. It never builds the model itself unless asked (the Overview needs no torch)."""
    train = _titled_train(c, "Beyond accuracy: the model beside popularity")
    if train is None:
        return
    me = _identity(c, c.model)
    label = c.model.label
    wanted = {label: (cache.beyond_key(me, train, top=BEYOND_TOP, ruler=me), {}),
              POPULARITY: (cache.beyond_key(me, train, top=BEYOND_TOP, ruler=me, popularity=True),
                           {"popularity": True})}

    def compute(which: str) -> dict:
        rec = c.recommender_for(c.model)
        return cache.beyond_figures(rec, train, top=BEYOND_TOP, ruler=rec, **wanted[which][1])

    _beyond(c, wanted, compute, ruler=label, key="ov_beyond")


def compare_beyond(c: Ctx, second: ModelEntry, rec_b: Recommender) -> None:
    """The Compare page's beyond-accuracy figures: model A (the sidebar's) beside model B, on the same
    users, the diversity of both measured with one model's news vectors (A's, or B's when A has none)."""
    train = _titled_train(c, "Beyond accuracy: A beside B")
    if train is None:
        return
    from nram_core.scoring import encodes_news_apart

    recs = {"A": c.rec, "B": rec_b}
    ruler = next((side for side, rec in recs.items() if encodes_news_apart(rec.model)), None)
    ruler_id = None if ruler is None else recs[ruler].identity
    wanted = {side: (cache.beyond_key(rec.identity, train, top=BEYOND_TOP, ruler=ruler_id), {})
              for side, rec in recs.items()}

    def compute(side: str) -> dict:
        return cache.beyond_figures(recs[side], train, top=BEYOND_TOP, ruler=None if ruler is None else recs[ruler])

    names = {"A": c.model.label, "B": second.label}
    _beyond(c, wanted, compute, ruler=None if ruler is None else f"{ruler} ({names[ruler]})", key="compare_beyond")


def warm_up(c: Ctx, rec: Recommender, *, beyond: bool) -> None:
    """What the app's warm-up thread (``context.warm_up``) prepares for these views, off the page: Captum
    imported for an NRAM model's removal test (seconds, once per process), and with ``beyond`` (a split
    small enough to score in seconds) the Overview's beyond-accuracy figures of the model and popularity."""
    if rec.kind == "nram":
        import captum.attr  # noqa: F401 - nram_core.faithfulness imports it on the first removal test
    train = _train_args(c)
    if beyond and train is not None:
        for popularity in (False, True):
            cache.beyond_figures(rec, train, top=BEYOND_TOP, ruler=rec, popularity=popularity)
