"""Overview: what the dataset holds, what was skipped while reading it, and the model card."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import streamlit as st

from studio import charts, registry, training, trust
from studio.context import (auto_quality, background_quality, fit_warning, need_split, rerun_view,
                            user_quality)



c = need_split()
st.title("Overview")
st.caption(f"{c.dataset.label} · {c.split_name} split · `{registry.shown_path(c.dataset.folder(c.split_name))}`")
stats = c.stats()

cols = st.columns(6)
cols[0].metric("News", f"{stats['news']:,}")
cols[1].metric("Users", f"{stats['users']:,}")
cols[2].metric("Impressions", f"{stats['impressions']:,}")
cols[3].metric("Clicks", f"{stats['clicks']:,}")
cols[4].metric("Click-through rate", f"{stats['ctr']:.1%}", help="clicks / candidates shown")
cols[5].metric("Mean history", f"{stats['mean_history']:.1f}",
               help=f"clicks per user before their latest impression; {stats['cold_users']:,} cold users")

left, right = st.columns(2)
with left:
    st.subheader("News per category")
    st.altair_chart(charts.bar(stats["by_category"], "category", "news"), width="stretch",
                    key="ov_categories")
    st.subheader("Impressions per day")
    per_day = stats["per_day"]
    if len(per_day) >= 3:
        st.altair_chart(charts.bar(per_day, "day", "impressions", colour="#fc8d59"), width="stretch",
                        key="ov_days")
    else:  # one or two days (MIND's dev split is a single day): one bar says little, show the hours
        st.altair_chart(charts.bar(stats["per_hour"], "hour", "impressions", colour="#fc8d59"),
                        width="stretch", key="ov_days")
        st.caption("This split covers " + " and ".join(d.strftime("%Y-%m-%d") for d in per_day["day"])
                   + f" ({', '.join(f'{n:,}' for n in per_day['impressions'])} impressions): shown per hour.")
with right:
    st.subheader("History length per user")
    st.altair_chart(charts.histogram(stats["history_lengths"], xlabel="clicks in history (latest impression)"),
                    width="stretch", key="ov_history")
    st.subheader("Click-through rate by category")
    st.altair_chart(charts.bar(stats["ctr_by_category"], "category", "ctr", colour="#b30000", y_format=".1%"),
                    width="stretch", key="ov_ctr")

st.subheader("Rows skipped while reading")
reports = stats["reports"]
skipped = int(reports["skipped"].sum()) if not reports.empty else 0
dropped = bool(reports["dropped"].astype(bool).any()) if not reports.empty else False
if skipped:
    st.warning(f"{skipped:,} rows could not be used and were skipped (counted below, with the first line numbers); "
               "the rest of the files was read normally.")
elif dropped:
    st.info("Every row was read. Some news ids in behaviors.tsv have no row in news.tsv; they were dropped "
            "(counted below), and impressions left with no candidate were left out.")
else:
    st.success("Every row of news.tsv and behaviors.tsv was read; nothing was skipped or dropped.")
st.dataframe(reports, hide_index=True, width="stretch",
             column_config={"why": st.column_config.TextColumn("skipped because", width="large"),
                            "dropped": st.column_config.TextColumn("dropped ids", width="medium")})

st.header("Model card")
if c.model is None:
    st.info("No model yet: train one on the Train page.")
    st.stop()
if c.model_error:
    st.error(registry.shown_text(c.model_error))
    st.stop()
run = c.info
params = run.num_parameters
state = run.state or {}
m1, m2, m3, m4 = st.columns(4)
m1.metric("Parameters", f"{params:,}")
m2.metric("Vocabulary", f"{len(run.vocab):,} words")
m3.metric("Epochs trained", state.get("epochs_done", "–"))
best = state.get("best_auc")
m4.metric("Best dev AUC", f"{best:.4f}" if isinstance(best, (int, float)) else "–",
          help=f"epoch {state.get('best_epoch', '–')}")
fit_warning(c)
if c.fit is not None:
    st.caption(f"On this data: {c.fit.unk_rate:.1%} of title words map to <unk>, {c.fit.truncated:.1%} of titles "
               f"are longer than the model's title length ({run.model_config.title_len}).")

card_left, card_right = st.columns(2)
with card_left:
    st.markdown("**Configuration**")
    rows = [("model", k, str(v)) for k, v in vars(run.model_config).items()]
    rows += [("train", k, str(v)) for k, v in vars(run.train_config).items()]
    rows += [("runtime", k, str(v)) for k, v in vars(run.runtime_config).items()]
    st.dataframe(pd.DataFrame(rows, columns=["part", "field", "value"]),
                 hide_index=True, width="stretch", height=300)
    st.caption("Trained on: " + training.trained_on(run.data or {}, dataclasses.asdict(run.train_config)))
with card_right:
    st.markdown("**Dev metrics per epoch** (from state.json)")
    history = state.get("history") or []
    if history:
        table = pd.DataFrame([{"epoch": h.get("epoch"), "train loss": h.get("train_loss"),
                               **{k: (h.get("metrics") or {}).get(k) for k in ("auc", "mrr", "ndcg@5", "ndcg@10")},
                               "seconds": h.get("seconds")} for h in history])
        st.dataframe(table.style.format(precision=4), hide_index=True, width="stretch")
    else:
        st.caption("No finished epoch recorded.")
    truth = c.truth
    if truth.get("oracle"):
        st.caption("Oracle on this synthetic corpus (true click probabilities, the ceiling): "
                   + ", ".join(f"{k} {v:.3f}" for k, v in truth["oracle"].items()))

st.subheader("How the model does per user")


def draw_per_user_auc(quality) -> None:
    scored = quality.scored
    if not scored.any():
        st.info("No impression of this split has both a click and a non-click, so no user has an AUC.")
        return
    # No marker line for the chosen user: a layered chart costs 50 ms more on every view of the page,
    # and the sidebar states the user's AUC and place already.
    auc = quality.auc[scored]
    st.altair_chart(charts.histogram(auc, xlabel="AUC of a user (mean over their scorable impressions)", nbins=20),
                    width="stretch", key="ov_user_auc")
    st.caption(f"{int(scored.sum()):,} of {len(scored):,} users have an impression with both a click and a "
               f"non-click ({int(quality.impressions.sum()):,} impressions); their AUC: median {np.median(auc):.3f}, "
               f"a quarter below {np.quantile(auc, 0.25):.3f}, a quarter above {np.quantile(auc, 0.75):.3f}. "
               "Pick the best, a typical or the worst user in the sidebar.")


@st.fragment(run_every=1.0)
def when_scored() -> None:
    """Polls (only while the background scoring runs), then reruns the app: the chart, and the sidebar's
    default user, which is the typical one."""
    if background_quality(c) is None:
        st.caption("Scoring every impression of this split once, in the background (a few seconds)…")
        return
    rerun_view(c)


ready = background_quality(c)
if isinstance(ready, Exception):
    st.error(registry.shown_text(f"The model cannot score this split: {ready}"))
elif ready is not None:
    draw_per_user_auc(ready)
elif auto_quality(c):  # the warm-up thread computes it after this run
    when_scored()
elif st.button(f"Score all {c.split.num_impressions:,} impressions (minutes)", key="ov_score_users"):
    quality = user_quality(c)
    if quality is None:
        st.error(registry.shown_text(c.model_error or "The model cannot score this split."))
    else:
        draw_per_user_auc(quality)

trust.overview_beyond(c)
