"""Small table and widget helpers shared by several pages, their column widths, and the Attention
page's per-head summary (computed once per model and split)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from nram_core.recommend import Ranked

from . import cache
from .context import Ctx
from .widgets import keep_choice

if TYPE_CHECKING:
    from nram_core.attention_stats import HeadSummary

# Widths in pixels, so that the columns a reader compares (rank, click, title, scores) fit the main area
# at 1280 px with the sidebar open (about 820 px); category, subcategory and id come after them.
RANKED_COLUMNS = {
    "rank": st.column_config.NumberColumn("rank", width=48),
    "clicked": st.column_config.TextColumn("clicked", width=62, help="✓: the user really clicked it"),
    "title": st.column_config.TextColumn("title", width=420),
    "score": st.column_config.NumberColumn("score", format="%.4f", width=72, help="user vector · news vector"),
    "probability": st.column_config.ProgressColumn("probability", format="%.3f", min_value=0.0, max_value=1.0,
                                                   width=96, help="sigmoid(score)"),
    "category": st.column_config.TextColumn("category", width=110),
    "subcategory": st.column_config.TextColumn("subcategory", width=170),
}
HISTORY_COLUMNS = {
    "#": st.column_config.NumberColumn("#", width=40, help="1 = the latest click"),
    "title": st.column_config.TextColumn("title", width=480),
    "category": st.column_config.TextColumn("category", width=110),
    "subcategory": st.column_config.TextColumn("subcategory", width=170),
}


def history_table(news: pd.DataFrame, history: np.ndarray) -> pd.DataFrame:
    rows = np.asarray(history, dtype=np.int64)[::-1]
    table = news.iloc[rows][["title", "category", "subcategory", "news_id"]].reset_index(drop=True)
    table.insert(0, "#", np.arange(1, len(rows) + 1))
    return table


def ranked_table(news: pd.DataFrame, ranked: Ranked) -> pd.DataFrame:
    """rank, clicked (when the labels are known), title, score, probability, then category,
    subcategory and id: what a reader compares comes first, so that it is on screen."""
    rows = np.asarray(ranked.rows, dtype=np.int64)
    table = news.iloc[rows][["title"]].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(rows) + 1))
    if ranked.labels is not None:
        table.insert(1, "clicked", np.where(np.asarray(ranked.labels) > 0, "✓", ""))
    table["score"] = np.asarray(ranked.scores, dtype=float)
    table["probability"] = np.asarray(ranked.probabilities, dtype=float)
    for column in ("category", "subcategory", "news_id"):
        table[column] = news[column].to_numpy()[rows]
    return table


def impression_label(c: Ctx, imp: int) -> str:
    b = c.split.behaviors
    when = pd.to_datetime(int(b.times[imp]), unit="s").strftime("%Y-%m-%d %H:%M")
    lo, hi = b.candidate_offsets[imp], b.candidate_offsets[imp + 1]
    clicks = int(b.labels[lo:hi].sum())
    return f"#{b.impression_id_texts(imp, imp + 1)[0]} · {when} · {hi - lo} candidates · {clicks} clicked"


def impression_picker(c: Ctx, *, label: str = "Impression") -> int:
    """Select one of the user's impressions (newest first); the choice is shared by every page."""
    options = [int(i) for i in c.impressions[::-1]]
    keep_choice("impression_choice", options)
    return int(st.selectbox(label, options, key="impression_choice", format_func=lambda i: impression_label(c, i),
                            help="The user's real impressions, newest first: the candidates shown and which "
                                 "were clicked."))


# ---- the self-attention heads over the whole split ----------------------------------------------------
def head_summaries(c: Ctx) -> tuple[list[HeadSummary], int]:
    """``nram_core.attention_stats.head_summaries`` of the sidebar's model on its split, once per
    model and split (``cache.head_summaries``), and how many titles it read."""
    from nram_core.attention_stats import HEAD_SAMPLE

    return cache.head_summaries(c.rec, c.words), min(len(c.split.news) - 1, HEAD_SAMPLE)


def head_table(summaries: list[HeadSummary], *, words: int = 4) -> pd.DataFrame:
    """One row per head: the common token it mostly attends to (if any), its top ``words`` and its
    top ``words`` besides stop words, each with its share of the head's weight."""
    def listed(pairs) -> str:
        return " · ".join(f"'{w}' {share:.0%}" for w, share in pairs[:words])

    return pd.DataFrame({
        "head": [f"head {s.head + 1}" for s in summaries],
        "mostly one common token": [f"'{s.dominant}' {s.dominant_share:.0%} ({s.uniform_share:.0%} if uniform)"
                                    if s.dominant else "" for s in summaries],
        "top words (share of its weight)": [listed(s.top_words) for s in summaries],
        "besides stop words": [listed(s.top_content_words) for s in summaries],
    })


HEAD_COLUMNS = {
    "head": st.column_config.TextColumn("head", width=64),
    "mostly one common token": st.column_config.TextColumn(
        "mostly one common token", width=176,
        help="A common token (a stop word, or 5% or more of the words) that takes a third or more of the head's "
             "weight and at least twice its share under uniform attention"),
    "top words (share of its weight)": st.column_config.TextColumn("top words (share of its weight)", width=280),
    "besides stop words": st.column_config.TextColumn("besides stop words", width=280),
}
