"""Compare: two models, of one family or two (NRAM beside NAML, LSTUR or NPA), rank the same impression of the
same user, side by side."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from nram_core.fileio import DataError
from nram_core.recommend import rank_change

from studio import cache, registry, trust, views_common as vc
from studio.context import need_user, user_identity_note
from studio.training import auc_text, impressions_text, run_facts, setting_differences
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


def show_models(a_path, b_path) -> None:
    """The two runs side by side: their dev AUC with the impressions each was measured on, and the
    settings on which their configs differ, so a reader knows what the comparison varies. Static
    tables: they wrap long values (what a run learned from) where a dataframe's columns cut them."""
    facts = {"A": run_facts(a_path), "B": run_facts(b_path)}
    names = {"A": c.model, "B": second}
    cards = pd.DataFrame({side: {
        "model": names[side].label,
        "variant": f.get("variant", "–"),
        "evaluated": auc_text({"auc": f.get("dev AUC"), "impressions": f.get("dev impressions")}),
        "trained on": f.get("trained on", "–")} for side, f in facts.items()}).T
    st.table(cards)
    counts = {side: f.get("dev impressions") for side, f in facts.items()}
    if counts["A"] != counts["B"]:
        st.warning(f"A's dev AUC was measured on {impressions_text({'impressions': counts['A']})} and B's on "
                   f"{impressions_text({'impressions': counts['B']})}: not the same measurement. The metrics "
                   "below score both models on the same impression.")
    try:
        differences = setting_differences(a_path, b_path)
    except DataError as exc:
        st.error(registry.shown_text(str(exc)))
        return
    if differences:
        st.markdown("**Settings that differ:** " + ", ".join(f"`{d['setting']}`" for d in differences))
        st.table(pd.DataFrame(differences).rename(columns={"flag": "command-line flag"}).set_index("setting"))
    else:
        st.caption("The two runs have the same recipe (model and training settings, data): they differ only "
                   "in when they were trained.")


show_models(c.model.path, second.path)
imp = vc.impression_picker(c)
a = cache.rank_impression(c.rec, imp)
b = cache.rank_impression(rec_b, imp)
st.caption(f"User **{c.user}** · A = {c.model.label} ({c.rec.kind.upper()}, the sidebar's model) · "
           f"B = {second.label} ({rec_b.kind.upper()}). Both rank the same candidates with the same history; the "
           "news rows are the dataset's, so they line up.")
notes = dict.fromkeys(note for note in (user_identity_note(c, c.rec), user_identity_note(c, rec_b)) if note)
if notes:
    st.caption(" ".join(notes))

metric_names = (("AUC", "auc"), ("MRR", "mrr"), ("nDCG@5", "ndcg@5"), ("nDCG@10", "ndcg@10"))
cols = [*st.columns(2), *st.columns(2)]  # two a row: "0.636 → 0.954" is cut in a quarter of 1280 px
for col, (name, key) in zip(cols, metric_names):
    if a.metrics and b.metrics:
        col.metric(f"{name}: A → B", f"{a.metrics[key]:.3f} → {b.metrics[key]:.3f}",
                   delta=f"{b.metrics[key] - a.metrics[key]:+.3f}", help="On this one impression.")
    else:
        col.metric(name, "–")
if a.metrics and b.metrics:
    st.caption(f"These metrics are measured on 1 impression, the one picked above ({len(a.rows)} candidates); "
               "each model's dev AUC above says on how many it was measured.")
else:
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
# Narrow set widths for the short columns leave the title 400 px at 1280 px wide (a title
# longer than that shows whole on hover).
st.dataframe(table, hide_index=True, width="stretch", key="compare_table",
             column_config={**{name: st.column_config.NumberColumn(width=48) for name in ("rank A", "rank B")},
                            "B vs A": st.column_config.TextColumn(width=50),
                            "clicked": st.column_config.TextColumn(width=50),
                            "title": st.column_config.TextColumn("title", width=400),
                            "category": st.column_config.TextColumn(width=100),
                            "score A": st.column_config.NumberColumn(format="%.3f", width=60),
                            "score B": st.column_config.NumberColumn(format="%.3f", width=60)})
moved = int((table["B vs A"] != "=").sum())
clicked_a = sorted(rank_a[int(r)] for r in rows if labels.get(int(r), 0) > 0)
clicked_b = sorted(rank_b[int(r)] for r in rows if labels.get(int(r), 0) > 0)
st.caption(f"In A's order. {moved} of {len(table)} candidates sit at another rank in B (↑ higher in B, ↓ lower). "
           f"True clicks: at ranks {', '.join(map(str, clicked_a)) or '–'} in A, "
           f"{', '.join(map(str, clicked_b)) or '–'} in B.")

trust.compare_beyond(c, second, rec_b)
