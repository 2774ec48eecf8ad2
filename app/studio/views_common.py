"""Small table and widget helpers shared by several pages."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from nram_core.recommend import Ranked

from .context import Ctx
from .widgets import keep_choice

RANKED_COLUMNS = {
    "score": st.column_config.NumberColumn("score", format="%.4f", help="user vector · news vector"),
    "probability": st.column_config.ProgressColumn("probability", format="%.3f", min_value=0.0, max_value=1.0,
                                                   help="sigmoid(score)"),
    "title": st.column_config.TextColumn("title", width="large"),
}


def history_table(news: pd.DataFrame, history: np.ndarray) -> pd.DataFrame:
    rows = np.asarray(history, dtype=np.int64)[::-1]
    table = news.iloc[rows][["title", "category", "subcategory", "news_id"]].reset_index(drop=True)
    table.insert(0, "#", np.arange(1, len(rows) + 1))
    return table


def ranked_table(news: pd.DataFrame, ranked: Ranked) -> pd.DataFrame:
    rows = np.asarray(ranked.rows, dtype=np.int64)
    table = news.iloc[rows][["title", "category", "subcategory", "news_id"]].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(rows) + 1))
    if ranked.labels is not None:
        table.insert(1, "clicked", np.where(np.asarray(ranked.labels) > 0, "✓", ""))
    table["score"] = np.asarray(ranked.scores, dtype=float)
    table["probability"] = np.asarray(ranked.probabilities, dtype=float)
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
