"""Compare: two models rank the same impression of the same user, side by side."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from nram_core.fileio import DataError
from nram_core.recommend import rank_change

from studio import cache, registry, views_common as vc
from studio.context import need_user
from studio.widgets import keep_choice

c = need_user()
st.title("Compare")
others = [m for m in c.models if m.key != c.model.key]
if not others:
    st.info("Only one model is available. Train another on the Train page (for example NRAM without "
            "self-attention, or the same model for fewer epochs) to compare it with this one.")
    st.stop()
by_key = {m.key: m for m in others}
keep_choice("compare_model", list(by_key))
second_key = st.selectbox("Compare the sidebar's model with", list(by_key), key="compare_model",
                          format_func=lambda k: by_key[k].label)
second = by_key[second_key]
try:
    rec_b = c.recommender_for(second)
except (DataError, ValueError, RuntimeError, OSError) as exc:
    st.error(registry.shown_text(f"Model {second.label} cannot score this dataset: {exc}"))
    st.stop()

imp = vc.impression_picker(c)
a = cache.rank_impression(c.rec, imp)
b = cache.rank_impression(rec_b, imp)
st.caption(f"User **{c.user}** · A = {c.model.label} (the sidebar's model) · B = {second.label}. Both rank the "
           "same candidates with the same history; the news rows are the dataset's, so they line up.")

metric_names = (("AUC", "auc"), ("MRR", "mrr"), ("nDCG@5", "ndcg@5"), ("nDCG@10", "ndcg@10"))
cols = st.columns(len(metric_names))
for col, (name, key) in zip(cols, metric_names):
    if a.metrics and b.metrics:
        col.metric(f"{name}: A → B", f"{a.metrics[key]:.3f} → {b.metrics[key]:.3f}",
                   delta=f"{b.metrics[key] - a.metrics[key]:+.3f}")
    else:
        col.metric(name, "–")
if not (a.metrics and b.metrics):
    st.info("This impression's metrics need at least one click and one non-click among its candidates.")

news = c.news()
rank_a, rank_b, score_b = a.rank_of(), b.rank_of(), b.score_of()
rows = np.asarray(a.rows, dtype=np.int64)
labels = dict(zip(a.rows.tolist(), a.labels.tolist())) if a.labels is not None else {}
table = pd.DataFrame({
    "rank A": [rank_a[int(r)] for r in rows],
    "rank B": [rank_b[int(r)] for r in rows],
    "B vs A": [rank_change(rank_a[int(r)], rank_b[int(r)]) for r in rows],
    "clicked": ["✓" if labels.get(int(r), 0) > 0 else "" for r in rows],
    "title": news["title"].to_numpy()[rows],
    "category": news["category"].to_numpy()[rows],
    "score A": np.asarray(a.scores, dtype=float),
    "score B": [score_b[int(r)] for r in rows],
})
st.dataframe(table, hide_index=True, width="stretch", key="compare_table",
             column_config={"title": st.column_config.TextColumn("title", width="large"),
                            "score A": st.column_config.NumberColumn(format="%.4f"),
                            "score B": st.column_config.NumberColumn(format="%.4f")})
moved = int((table["B vs A"] != "=").sum())
clicked_a = sorted(rank_a[int(r)] for r in rows if labels.get(int(r), 0) > 0)
clicked_b = sorted(rank_b[int(r)] for r in rows if labels.get(int(r), 0) > 0)
st.caption(f"In A's order. {moved} of {len(table)} candidates sit at another rank in B (↑ higher in B, ↓ lower). "
           f"True clicks: at ranks {', '.join(map(str, clicked_a)) or '–'} in A, "
           f"{', '.join(map(str, clicked_b)) or '–'} in B.")
