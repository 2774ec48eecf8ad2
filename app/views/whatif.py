"""What-if: edit the user's clicks and watch the ranking move."""
from __future__ import annotations

import numpy as np
import streamlit as st

from nram_core.recommend import rank_change

from studio import cache, views_common as vc
from studio.context import cold_scoring_text, need_user, user_identity_note
from studio.widgets import keep_choice

c = need_user()
st.title("What-if")
news = c.news()
original = list(dict.fromkeys(int(r) for r in c.history))  # oldest first; a repeated click counts once here
store = st.session_state.setdefault("_whatif", {})  # (dataset, split, model, user) -> {"added", "kept"}
state = store.setdefault((*c.key, c.user), {"added": [], "kept": list(original)})
options = original + [r for r in state["added"] if r not in original]


def _short(title: str, width: int = 48) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


def _sync_selection() -> None:
    state["kept"] = [int(r) for r in st.session_state["whatif_clicks"]]


def _add(row: int) -> None:
    if row not in state["added"] and row not in original:
        state["added"].append(row)
    if row not in state["kept"]:
        state["kept"].append(row)


def _reset() -> None:
    state["added"].clear()
    state["kept"][:] = list(original)


kept = set(state["kept"])
st.session_state["whatif_clicks"] = [r for r in options if r in kept]
st.caption(f"User **{c.user}** · edit the history below; the model re-encodes the user at once. Only the latest "
           f"{c.info.model_config.history_len} clicks are read by the model.")

identity = user_identity_note(c, c.rec)
if identity:  # the edited history stays this user's: the same id (the unknown user 0 for one the model never saw)
    st.caption(identity + " The edited history is scored as the same user.")
served = c.for_user(c.rec)

if not options:
    st.info("This user has no clicks yet (a cold user): add news below to build a history.")
st.pills("Clicks in the edited history (oldest first): highlighted = kept, grey = removed; click one to remove it, "
         "click it again to put it back",
         options, selection_mode="multi", key="whatif_clicks", on_change=_sync_selection, wrap=True,
         width="stretch",
         format_func=lambda r: _short(news.at[r, "title"]) + (" (added)" if r not in original else ""))
left, right, reset = st.columns([3, 3, 1], vertical_alignment="bottom")
query = left.text_input("Find news by title to add", key="whatif_query", placeholder="e.g. quarterback")
hits = c.search_titles(query) if query else []
if query and not hits:
    right.caption("No title contains that text.")
if hits:
    pick = right.selectbox("Matches", hits, key="whatif_pick",
                           format_func=lambda r: f"{news.at[r, 'title']} [{news.at[r, 'category']}]")
    right.button("Add as a click", key="whatif_add", on_click=_add, args=(int(pick),), type="primary")
reset.button("Reset", on_click=_reset, key="whatif_reset", help="Back to the real history")

edited = np.asarray([r for r in options if r in kept], dtype=np.int64)  # original order, added ones last
removed = [r for r in original if r not in set(edited.tolist())]
added = [r for r in edited.tolist() if r not in set(original)]
st.markdown(f"**Edits:** {len(removed)} click(s) removed, {len(added)} added → {len(edited)} clicks "
            f"(was {len(original)}).")
if len(edited) == 0:
    st.info("The edited history is empty: a cold user. " + cold_scoring_text(c.rec))

modes = ["Impression candidates", "Whole catalog"]
keep_choice("whatif_mode", modes)
mode = st.segmented_control("Rank", modes, key="whatif_mode") or modes[0]  # a click on the chosen one clears it

if mode == "Impression candidates":
    imp = vc.impression_picker(c)
    base = cache.rank_impression(c.rec, imp, history=original)
    new = cache.rank_impression(c.rec, imp, history=edited)
    shown = new
    old_rank = base.rank_of()
else:
    keep_choice("whatif_top", range(5, 51, 5), default=20)
    top = st.slider("How many", 5, 50, step=5, key="whatif_top")
    everything = len(news) - 1  # rank the whole catalog, so that a rank change is known for every news
    base = cache.rank_catalog(served, original, top=everything)
    new = cache.rank_catalog(served, edited, top=everything)
    shown = new.top(top)
    old_rank = base.top(top).rank_of()  # a news that was below the list shown is "new" in it
old_score = base.score_of()
table = vc.ranked_table(news, shown)
table.insert(1, "change", [rank_change(old_rank.get(row), rank) for rank, row in enumerate(shown.rows.tolist(), 1)])
table.insert(int(table.columns.get_loc("score")) + 1, "score before",
             [old_score.get(row, np.nan) for row in shown.rows.tolist()])  # beside the score it is compared with
moved = int((table["change"] != "=").sum())
st.dataframe(table, hide_index=True, width="stretch", key="whatif_table",
             column_config={**vc.RANKED_COLUMNS,
                            # two more columns than the Recommendations table: the title gives up their room
                            "title": st.column_config.TextColumn("title", width=372),
                            "change": st.column_config.TextColumn("change", width=58,
                                                                  help="↑n / ↓n: places gained or lost; new: not "
                                                                       "in the list before"),
                            "score before": st.column_config.NumberColumn("score before", format="%.4f", width=92,
                                                                          help="with the real history")})
st.caption(f"{moved} of {len(table)} positions changed. ↑n / ↓n: places gained or lost against the real history; "
           "new: not in the top list before." if mode != "Impression candidates"
           else f"{moved} of {len(table)} candidates changed rank against the real history (↑ gained, ↓ lost).")
if new.metrics and base.metrics:
    def _delta(name: str) -> str | None:
        change = new.metrics[name] - base.metrics[name]
        return None if abs(change) < 5e-4 else f"{change:+.3f}"

    a, b = st.columns(2)
    a.metric("AUC of the impression, edited history", f"{new.metrics['auc']:.3f}", delta=_delta("auc"))
    b.metric("MRR, edited history", f"{new.metrics['mrr']:.3f}", delta=_delta("mrr"))
