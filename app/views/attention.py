"""Attention: what the two encoders looked at, and the exact per-click decomposition of a score."""
from __future__ import annotations

import numpy as np
import streamlit as st

from nram_core.attention_stats import without_stop_words

from studio import charts, cache, views_common as vc
from studio.context import need_user
from studio.widgets import keep_choice

c = need_user()
st.title("Attention")
news = c.news()
hist_len = c.info.model_config.history_len
recent = np.asarray(c.history, dtype=np.int64)[-hist_len:]
st.caption(f"User **{c.user}** · model {c.model.label} · the user encoder reads the latest "
           f"{hist_len} clicks ({len(recent)} here)")
if len(recent) == 0:
    st.info(f"**{c.user} is a cold user**: no clicks, so there is no attention to show and every candidate "
            "scores 0. Pick a user with a history (the sidebar filter helps).")
    st.stop()

# ---- choose the candidate --------------------------------------------------------------------
imp = vc.impression_picker(c, label="Impression the candidates come from")
ranked = cache.rank_impression(c.rec, imp)
catalog = cache.rank_catalog(c.rec, c.history, top=10)
options = list(dict.fromkeys(ranked.rows.tolist() + catalog.rows.tolist()))
labels = dict(zip(ranked.rows.tolist(), ranked.labels.tolist()))
in_imp = ranked.rank_of()


def _candidate_label(row: int) -> str:
    where = f"impression rank {in_imp[row]}" + (" · clicked ✓" if labels.get(row) else "") if row in in_imp \
        else "catalog top 10"
    return f"{news.at[row, 'title']} ({where})"


keep_choice("att_candidate", options)
candidate = int(st.selectbox("Candidate news", options, key="att_candidate", format_func=_candidate_label))

exp = cache.explain(c.rec, recent, [candidate])
score = float(exp.scores[0])
total = float(exp.contributions[0].sum())


title_words = c.title_words


def topical_set(row: int) -> set[str] | None:
    if not overlay:
        return None
    return set(c.truth.get("topical_words", {}).get(news.at[row, "subcategory"], []))


truth_available = bool(c.truth.get("topical_words"))
overlay = st.toggle("Mark the topical words of truth.json", key="att_topical", disabled=not truth_available,
                    help="Only for the built-in demo corpus: the words each subcategory's titles were generated "
                         "from, which a good model should attend to.") and truth_available

# ---- score decomposition ---------------------------------------------------------------------
st.header("Why this score")
m1, m2, m3 = st.columns(3)
m1.metric("Score (model)", f"{score:.6f}", help="user vector · candidate vector")
m2.metric("Σ per-click contributions", f"{total:.6f}",
          help=f"difference to the score: {total - score:+.1e} (float32 rounding)")
m3.metric("Click probability", f"{1 / (1 + np.exp(-score)):.3f}")
st.markdown(r"The user vector is $u=\sum_i \alpha_i h_i$, so the score splits exactly into "
            r"$u\cdot n=\sum_i \alpha_i\,(h_i\cdot n)$: one term per click. "
            "**Green clicks pushed this candidate up, red clicks pulled it down.**")
order = recent[::-1]  # newest first for display; exp arrays are oldest first
idx = np.arange(len(recent))[::-1]
click_labels = [f"{k + 1}. {news.at[int(r), 'title'][:48]}" for k, r in enumerate(order)]
contrib = exp.contributions[0][idx]
st.plotly_chart(charts.contribution_waterfall(click_labels, contrib, score), config=charts.PLOT_CONFIG,
                key="att_waterfall")
ups, downs = int((contrib > 0).sum()), int((contrib < 0).sum())
st.caption(f"{ups} clicks pushed it up (total {contrib[contrib > 0].sum():+.4f}), {downs} pulled it down "
           f"(total {contrib[contrib < 0].sum():+.4f}); together {total:+.6f} = score {score:+.6f}.")

# ---- titles with word attention --------------------------------------------------------------
st.header("Word attention in every title")
st.markdown(charts.attention_legend_html(), unsafe_allow_html=True)
if overlay:
    st.markdown(charts.topical_legend_html(), unsafe_allow_html=True)
cand_words = title_words(candidate)
st.markdown(f"**Candidate** · {news.at[candidate, 'category']} / {news.at[candidate, 'subcategory']}")
st.markdown(charts.shaded_title_html(cand_words, exp.candidate_word_weights[0][:len(cand_words)],
                                     topical=topical_set(candidate)), unsafe_allow_html=True)
st.caption(charts.peakedness_text(exp.candidate_word_weights[0][:len(cand_words)], "The candidate's word attention"))
st.markdown("**Clicked news**, newest first, with the user encoder's weight α and the click's contribution:")
lines = []
for k, (i, row) in enumerate(zip(idx, order)):
    row = int(row)
    w = title_words(row)
    prefix = (f"<span style='display:inline-block;min-width:11.5rem;font-size:.8rem;color:#57606a'>"
              f"{k + 1}. α {exp.click_weights[i]:.3f} · "
              f"<span style='color:{charts.UP if exp.contributions[0][i] >= 0 else charts.DOWN}'>"
              f"{exp.contributions[0][i]:+.4f}</span> · {news.at[row, 'category']}</span>")
    lines.append(charts.shaded_title_html(w, exp.history_word_weights[i][:len(w)], topical=topical_set(row),
                                          prefix=prefix))
with st.container(height=420):
    st.markdown("".join(lines), unsafe_allow_html=True)

# ---- user encoder: attention over the clicks ---------------------------------------------------
st.header("User encoder: attention over the clicks")
st.plotly_chart(charts.click_attention_bar(click_labels, exp.click_weights[idx],
                                           title="additive attention α_i (newest click first)"),
                config=charts.PLOT_CONFIG, key="att_clicks")
st.caption(charts.peakedness_text(exp.click_weights, "Attention over the clicks") + " " + charts.BAR_LEGEND_TEXT)

# ---- self-attention: what each head looks at, then one title ----------------------------------------
st.header("Self-attention inside a title")
if not c.info.model_config.self_attention:
    st.info("This model has no self-attention (an ablation): its words are pooled by the additive attention "
            "alone, shown above.")
    st.stop()
summaries, titles_read = vc.head_summaries(c)
st.subheader("What each head looks at across the split")
read = (f"the {titles_read:,} titles of the {c.split_name} split" if titles_read == len(news) - 1
        else f"{titles_read:,} titles sampled from the {len(news) - 1:,} of the {c.split_name} split")
st.caption(f"Over {read}: the words each head of the news encoder's self-attention "
           "gives most of its weight to (summed over every word of every title), and the same without stop words. "
           "A head marked *mostly* gives a third or more of its weight to one common token, at least twice that "
           "token's share under uniform attention: such a head says little about the topic.")
st.dataframe(vc.head_table(summaries), hide_index=True, width="stretch", key="att_heads",
             column_config=vc.HEAD_COLUMNS)
dominated = [s for s in summaries if s.dominant]
if dominated:
    named = "; ".join(f"head {s.head + 1} mostly '{s.dominant}'" for s in dominated)
    st.markdown(f"**{len(dominated)} of {len(summaries)} heads mostly attend to one common token:** {named}. "
                "Hide stop words below to see what the heads do with the other words.")
title_options = ["candidate"] + [f"click:{int(r)}" for r in order]


def _title_option_label(opt: str) -> str:
    if opt == "candidate":
        return f"Candidate: {news.at[candidate, 'title']}"
    row = int(opt.split(":")[1])
    return f"Click: {news.at[row, 'title']}"


keep_choice("att_title", title_options)
heads = c.info.model_config.num_heads
head_options = ["mean"] + [f"head {h + 1}" for h in range(heads)]
keep_choice("att_head", head_options)
col_t, col_h = st.columns([3, 1])
chosen = col_t.selectbox("Title", title_options, key="att_title", format_func=_title_option_label)
head = col_h.selectbox("Head", head_options, key="att_head", help="one attention head, or the mean over heads")
hide_stop = st.toggle("Hide stop words in the heatmap", key="att_stopwords",
                      help="Drops words such as 'the', 'of' and punctuation (a built-in English list) and shows "
                           "each remaining word's attention as its share among the words kept.")
if chosen == "candidate":
    row, matrices = candidate, exp.candidate_self_attention[0]
else:
    row = int(chosen.split(":")[1])
    position = int(np.flatnonzero(recent == row)[-1])
    matrices = exp.history_self_attention[position]
w = title_words(row)
n = len(w)
matrix = (matrices.mean(axis=0) if head == "mean" else matrices[head_options.index(head) - 1])[:n, :n]
if head != "mean":
    st.caption(summaries[head_options.index(head) - 1].label())
if hide_stop:
    shown, shown_words, kept = without_stop_words(matrix, w)
    if len(shown_words) == 0:
        st.info("Every word of this title is a stop word: nothing is left to show.")
        st.stop()
    st.plotly_chart(charts.self_attention_heatmap(
        shown, shown_words, raw=matrix[np.ix_(kept, kept)], positions=kept,
        title=f"{head}, stop words hidden: each word's share among the {len(shown_words)} words kept"),
        config=charts.PLOT_CONFIG, key="att_heatmap")
    hidden = [f"'{word}'" for i, word in enumerate(w) if i not in set(kept.tolist())]
    st.caption(f"{len(hidden)} of {n} words hidden: {', '.join(hidden)}.")
else:
    st.plotly_chart(charts.self_attention_heatmap(matrix, w, title=f"{head}: how each word attends to the others"),
                    config=charts.PLOT_CONFIG, key="att_heatmap")
