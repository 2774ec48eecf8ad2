"""Recommendations: a user's history, then one real impression ranked, or the whole catalog."""
from __future__ import annotations

import streamlit as st

from studio import charts, cache, views_common as vc
from studio.export import view_report
from studio.context import cold_user_note, need_user, user_identity_note, user_note
from studio.widgets import keep_choice

c = need_user()
st.title("Recommendations")
st.caption(f"User **{c.user}** · {len(c.history)} clicks · {len(c.impressions)} impressions in the "
           f"{c.split_name} split · model {c.model.label}")
note = user_note(c)  # how the model does for this user, and how they were picked (the default: a typical one)
if note:
    st.caption(note + ("" if c.pick else " Pick the best, a typical or the worst user in the sidebar."))
cold_user_note(c)
identity = user_identity_note(c, c.rec)
if identity:
    st.caption(identity)
served = c.for_user(c.rec)  # the user's id where the model reads it (the catalog has no impression to take it from)

news = c.news()
with st.expander(f"History: {len(c.history)} clicked news, newest first", expanded=True):
    if len(c.history):
        rows_shown = min(len(c.history), 7)  # a short history gets a short table, not blank rows
        st.dataframe(vc.history_table(news, c.history), hide_index=True, width="stretch",
                     height=36 * (rows_shown + 1) + 3, key="rec_history", column_config=vc.HISTORY_COLUMNS)
    else:
        st.caption("No clicks.")

modes = ["Impression", "Catalog"]
keep_choice("rec_mode", modes)
mode = st.segmented_control("Mode", modes, key="rec_mode",
                            help="Impression: rank what the user was really shown. Catalog: rank every news.")
mode = mode or modes[0]  # a click on the chosen segment clears it

if mode == "Impression":
    imp = vc.impression_picker(c)
    ranked = cache.rank_impression(c.rec, imp)
    metrics = ranked.metrics
    cols = st.columns(4)
    for col, (name, key) in zip(cols, (("AUC", "auc"), ("MRR", "mrr"), ("nDCG@5", "ndcg@5"), ("nDCG@10", "ndcg@10"))):
        col.metric(name, f"{metrics[key]:.3f}" if metrics else "–")
    if metrics is None:
        st.info("This impression's metrics need at least one click and one non-click among its candidates.")
    table = vc.ranked_table(news, ranked)
    st.dataframe(table, hide_index=True, width="stretch", key="rec_ranked",
                 column_config=vc.RANKED_COLUMNS)
    clicked = table.loc[table["clicked"] == "✓", "rank"].tolist()
    st.caption(f"{len(table)} candidates · true clicks at rank {', '.join(map(str, clicked)) or '–'} "
               "(✓ marks the news the user really clicked)")
    # A callable: the page is built when the button is pressed (on its own thread), not on every rerun
    # (half a second for a user of a 2M-impression split).
    st.download_button("Export this view (HTML)", data=lambda: view_report(c, imp, ranked),
                       file_name=(f"nram-{c.user}-impression-"
                                  f"{c.split.behaviors.impression_id_texts(imp, imp + 1)[0]}.html"),
                       mime="text/html", icon=":material/download:", key="rec_export",
                       help="One self-contained HTML file (no script, nothing fetched) that opens offline in any "
                            "browser: the ranking with the true clicks, the history with its word attention, and "
                            "why the top news ranks first.")
else:
    left, right = st.columns([1, 2])
    keep_choice("catalog_top", range(5, 101, 5), default=20)
    top = left.slider("How many", 5, 100, step=5, key="catalog_top")
    categories = ["All categories"] + list(c.split.news.categories)
    keep_choice("catalog_category", categories)
    category = right.selectbox("Category", categories, key="catalog_category")
    ranked = cache.rank_catalog(served, c.history, top=top, category=None if category == categories[0] else category)
    st.dataframe(vc.ranked_table(news, ranked), hide_index=True, width="stretch", key="rec_catalog",
                 column_config=vc.RANKED_COLUMNS)
    st.caption(f"Top {len(ranked.rows)} of the {len(news) - 1:,} news in the catalog; the {len(c.history)} "
               "news already in the history are left out.")
    scores = cache.catalog_scores(served, c.history)
    threshold = float(ranked.scores[-1]) if len(ranked.scores) else None
    st.subheader("Score distribution over the whole catalog")
    st.altair_chart(charts.histogram(scores, xlabel="score (user · news)", vline=threshold,
                                     vlabel=f"top {len(ranked.rows)}"), width="stretch", key="rec_scores")
