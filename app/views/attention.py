"""Attention: what the sidebar's model looks at, in the way its family has: the words of every title
(all), the views of a news (NAML), the clicks (NRAM and NAML, NPA with the user's own query beside the
unknown user's), and why a score is what it is: exactly, click by click, where the user vector is an
attention-weighted sum of the clicks; measured, click by click, where it is a GRU's state (LSTUR)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from nram_core.attention_stats import without_stop_words
from nram_core.recommend import click_effects, has_click_attention, word_weights

from studio import charts, cache, trust, views_common as vc
from studio.context import cold_scoring_text, need_user, user_identity_note
from studio.widgets import keep_choice

c = need_user()
st.title("Attention")
news = c.news()
rec = c.for_user(c.rec)  # the user's id where the family reads it (LSTUR, NPA)
kind = rec.kind
family = kind.upper()
hist_len = c.info.model_config.history_len
recent = np.asarray(c.history, dtype=np.int64)[-hist_len:]
st.caption(f"User **{c.user}** · model {c.model.label} ({family}) · the user encoder reads the latest "
           f"{hist_len} clicks ({len(recent)} here)")
identity = user_identity_note(c, rec)
if identity:
    st.caption(identity)
if len(recent) == 0:
    st.info(f"**{c.user} is a cold user**: no clicks, so there is no attention over clicks to show. "
            + cold_scoring_text(rec) + " Pick a user with a history (the sidebar filter helps).")
    st.stop()

# ---- choose the candidate --------------------------------------------------------------------
imp = vc.impression_picker(c, label="Impression the candidates come from")
ranked = cache.rank_impression(c.rec, imp)
catalog = cache.rank_catalog(rec, c.history, top=10)
options = list(dict.fromkeys(ranked.rows.tolist() + catalog.rows.tolist()))
labels = dict(zip(ranked.rows.tolist(), ranked.labels.tolist()))
in_imp = ranked.rank_of()


def _candidate_label(row: int) -> str:
    where = f"impression rank {in_imp[row]}" + (" · clicked ✓" if labels.get(row) else "") if row in in_imp \
        else "catalog top 10"
    return f"{news.at[row, 'title']} ({where})"


keep_choice("att_candidate", options)
candidate = int(st.selectbox("Candidate news", options, key="att_candidate", format_func=_candidate_label))

exp = cache.explain(rec, recent, [candidate])
score = float(exp.scores[0])
history_weights, candidate_weights = word_weights(exp)
attended = has_click_attention(exp)  # False for LSTUR's GRU: no per-click weights exist
title_words = c.title_words


def topical_set(row: int) -> set[str] | None:
    if not overlay:
        return None
    return set(c.truth.get("topical_words", {}).get(news.at[row, "subcategory"], []))


truth_available = bool(c.truth.get("topical_words"))
overlay = st.toggle("Mark the topical words of truth.json", key="att_topical", disabled=not truth_available,
                    help="Only for the built-in demo corpus: the words each subcategory's titles were generated "
                         "from, which a good model should attend to.") and truth_available

order = recent[::-1]  # newest first for display; exp arrays are oldest first
idx = np.arange(len(recent))[::-1]
click_labels = [f"{k + 1}. {news.at[int(r), 'title'][:48]}" for k, r in enumerate(order)]
probability = f"{1 / (1 + np.exp(-score)):.3f}"

# ---- score decomposition ---------------------------------------------------------------------
st.header("Why this score")
if attended:
    contrib = exp.contributions[0][idx]
    total = float(exp.contributions[0].sum())
    cols = st.columns(4 if kind == "npa" else 3)
    cols[0].metric("Score (model)", f"{score:.6f}", help="user vector · candidate vector")
    cols[1].metric("Σ per-click contributions", f"{total:.6f}",
                   help=f"difference to the score: {total - score:+.1e} (float32 rounding)")
    cols[2].metric("Click probability", probability)
    if kind == "npa":
        unknown_score = float(exp.unknown_user_scores[0])
        cols[3].metric("Score as the unknown user", f"{unknown_score:.6f}", delta=f"{unknown_score - score:+.6f}",
                       delta_color="off", help="the same history and candidate read with the unknown user's generic "
                                              "queries (id 0); below it, its difference to this user's score: "
                                              "what personalisation changes")
    formula = {"nram": r"The user vector is $u=\sum_i \alpha_i h_i$ ($h_i$: click $i$ after the self-attention), "
                       r"so the score splits exactly into $u\cdot n=\sum_i \alpha_i\,(h_i\cdot n)$: one term per "
                       r"click. ",
               "naml": r"The user vector is $u=\sum_i \alpha_i n_i$ over the clicked news vectors, so the score splits "
                       r"exactly into $u\cdot n=\sum_i \alpha_i\,(n_i\cdot n)$: one term per click. ",
               "npa": r"The user vector is $u=\sum_i \alpha_i r_i$, where the user's own query sets both the click "
                      r"weights $\alpha_i$ and how each title $r_i$ is read, so the score splits exactly into "
                      r"$u\cdot r=\sum_i \alpha_i\,(r_i\cdot r)$: one term per click. "}
    st.markdown(formula.get(kind, formula["nram"]) + "**Green clicks pushed this candidate up, red clicks pulled it "
                "down.**")
    st.plotly_chart(charts.contribution_waterfall(click_labels, contrib, score), config=charts.PLOT_CONFIG,
                    key="att_waterfall")
    ups, downs = int((contrib > 0).sum()), int((contrib < 0).sum())
    st.caption(f"{ups} clicks pushed it up (total {contrib[contrib > 0].sum():+.4f}), {downs} pulled it down "
               f"(total {contrib[contrib < 0].sum():+.4f}); together {total:+.6f} = score {score:+.6f}.")
else:
    measured = click_effects(exp)[0]  # [H] oldest first, as every exp array
    effects = measured[idx]  # newest first
    cols = st.columns(3)
    cols[0].metric("Score (model)", f"{score:.6f}", help="user vector · candidate vector")
    unknown_score = float(exp.unknown_user_scores[0])
    cols[1].metric("Score as the unknown user", f"{unknown_score:.6f}", delta=f"{unknown_score - score:+.6f}",
                   delta_color="off", help="the same history with no user embedding (id 0); below it, its "
                                          "difference to this user's score: what the long-term vector changes")
    cols[2].metric("Click probability", probability)
    if exp.exact:
        short, long_term = float(exp.short_term_scores[0]), float(exp.long_term_scores[0])
        st.markdown(f"This LSTUR joins its two user vectors (*con*), so the score splits exactly: "
                    f"short-term (the GRU over the clicks) {short:+.4f} + long-term (the user embedding) "
                    f"{long_term:+.4f} = {short + long_term:+.4f}.")
    st.markdown(f"**{family} has no per-click attention**: its user encoder is a GRU that reads the clicks in "
                "order, so no weight per click exists and the score does not split over the clicks. What each "
                "click changes is measured instead below: the score with the click minus the score with it left "
                "out.")

# ---- titles with word attention --------------------------------------------------------------
st.header("Word attention in every title")
st.markdown(charts.attention_legend_html(), unsafe_allow_html=True)
if overlay:
    st.markdown(charts.topical_legend_html(), unsafe_allow_html=True)
cand_words = title_words(candidate)
st.markdown(f"**Candidate** · {news.at[candidate, 'category']} / {news.at[candidate, 'subcategory']}"
            + (" · as this user reads it" if kind == "npa" else ""))
st.markdown(charts.shaded_title_html(cand_words, candidate_weights[0][:len(cand_words)],
                                     topical=topical_set(candidate)), unsafe_allow_html=True)
st.caption(charts.peakedness_text(candidate_weights[0][:len(cand_words)], "The candidate's word attention"))
if kind == "npa":
    unknown = exp.unknown_candidate_word_weights[0][:len(cand_words)]
    st.markdown("**The same title as the unknown user reads it** (the generic query, id 0):")
    st.markdown(charts.shaded_title_html(cand_words, unknown, topical=topical_set(candidate)), unsafe_allow_html=True)
    shifts = [charts.attention_shift(history_weights[i], exp.unknown_history_word_weights[i]) for i in idx]
    st.caption(f"NPA's word attention is personalized: the user's own query moves "
               f"{charts.attention_shift(candidate_weights[0], exp.unknown_candidate_word_weights[0]):.0%} of the "
               f"candidate's word attention to other words than the unknown user's (total variation), and "
               f"{np.mean(shifts):.0%} of a clicked title's on average.")
if kind == "naml":
    body = c.abstract_words(candidate)
    st.markdown(f"**Candidate's abstract** (NAML reads its first {c.info.model_config.abstract_len} words as a view "
                "of its own):")
    st.markdown(charts.shaded_title_html(body, exp.candidate_abstract_weights[0][:len(body)]) if body
                else "<i>(no abstract)</i>", unsafe_allow_html=True)
    if body:
        st.caption(charts.peakedness_text(exp.candidate_abstract_weights[0][:len(body)],
                                          "The candidate's abstract attention"))
trust.faithfulness_section(c, rec, recent, candidate)
if attended:
    st.markdown("**Clicked news**, newest first, with the user encoder's weight α and the click's contribution:")
else:
    st.markdown("**Clicked news**, newest first, with what each click changes in the score (with it minus without "
                "it):")
lines = []
for k, (i, row) in enumerate(zip(idx, order)):
    row = int(row)
    w = title_words(row)
    if attended:
        value = float(exp.contributions[0][i])
        figure = f"α {exp.click_weights[i]:.3f} · "
    else:
        value = float(measured[i])
        figure = "Δ "
    prefix = (f"<span style='display:inline-block;min-width:11.5rem;font-size:.8rem;color:#57606a'>"
              f"{k + 1}. {figure}<span style='color:{charts.UP if value >= 0 else charts.DOWN}'>"
              f"{value:+.4f}</span> · {news.at[row, 'category']}</span>")
    lines.append(charts.shaded_title_html(w, history_weights[i][:len(w)], topical=topical_set(row), prefix=prefix))
with st.container(height=420):
    st.markdown("".join(lines), unsafe_allow_html=True)

# ---- NAML: attention over the views of a news ---------------------------------------------------
if kind == "naml":
    from nram_core.naml import VIEWS

    st.header("View attention: how much title, abstract and category weigh")
    clicked_views = exp.history_view_weights.mean(axis=0)  # [H,4] -> [4]
    st.altair_chart(charts.view_attention_bar(VIEWS, {"candidate": exp.candidate_view_weights[0],
                                                      "clicked news (mean)": clicked_views}),
                    width="stretch", key="att_views")
    shares = " · ".join(f"{view} {w:.0%}" for view, w in zip(VIEWS, exp.candidate_view_weights[0]))
    st.caption(f"NAML pools four views of each news with attention: the candidate's vector is {shares} of its "
               "views; a view the news lacks (no abstract, a category train never had) gets no weight.")

# ---- user encoder: attention over the clicks ---------------------------------------------------
if attended:
    st.header("User encoder: attention over the clicks")
    if kind == "npa":
        st.plotly_chart(charts.paired_click_attention_bar(
            click_labels, {"this user": exp.click_weights[idx], "unknown user": exp.unknown_click_weights[idx]},
            title="personalized attention α_i (newest click first)"), config=charts.PLOT_CONFIG, key="att_clicks")
        st.caption(charts.peakedness_text(exp.click_weights, "This user's attention over the clicks") + " "
                   + f"The unknown user's query weighs the same clicks otherwise: "
                     f"{charts.attention_shift(exp.click_weights, exp.unknown_click_weights):.0%} of the weight "
                     "moves (total variation).")
    else:
        st.plotly_chart(charts.click_attention_bar(click_labels, exp.click_weights[idx],
                                                   title="additive attention α_i (newest click first)"),
                        config=charts.PLOT_CONFIG, key="att_clicks")
        st.caption(charts.peakedness_text(exp.click_weights, "Attention over the clicks") + " "
                   + charts.BAR_LEGEND_TEXT)
else:
    st.header("User encoder: what each click changes")
    st.info(f"{family}'s GRU has no per-click attention: there is no weight per click to show. Each bar is a "
            "measured effect instead, the score with the click minus the score with it left out (the later "
            "clicks move up one place). Measured effects need not add up to the score.")
    st.plotly_chart(charts.leave_one_out_bar(click_labels, effects,
                                             title="leave-one-out effect on the score (newest click first)"),
                    config=charts.PLOT_CONFIG, key="att_clicks")
    st.caption(f"{int((effects > 0).sum())} clicks raise the score, {int((effects < 0).sum())} lower it; the "
               f"largest effect is {effects[np.argmax(np.abs(effects))]:+.4f}.")

# ---- self-attention: what each head looks at, then one title ----------------------------------------
st.header("Self-attention inside a title")
if kind != "nram":
    st.info(f"{family} has no self-attention inside a title: its news encoder reads the words with a CNN, whose "
            "word attention is shown above. The per-head views (what each head looks at across the split) are "
            "NRAM's only.")
    st.stop()
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
