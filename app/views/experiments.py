"""Experiments: run a suite (NRAM vs baselines, heads, K, ablations) in the background and
compare the results; earlier suites are loaded from NRAM_HOME/experiments.

The suite runs as the app's background job (``studio.jobs``, started by
``studio.suites.start_suite``) in a daemon thread that never calls ``st.*``; a fragment polls it.
"""
from __future__ import annotations

import traceback
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from nram_core import experiments as ex
from nram_core.config import PRESETS
from nram_core.data.layout import Layout
from nram_core.fileio import DataError
from nram_core.metrics import HISTORY_SEGMENTS, METRIC_NAMES
from nram_core.run_info import run_slug

from studio import registry
from studio.context import ctx
from studio.jobs import ACTIVE, BackgroundJob
from studio.cache import suite_job, suite_tables
from studio.suites import start_suite
from studio.widgets import valid_choice

POLL_SECONDS = 2.0
SUITE_HELP = {
    "paper": "NRAM vs DKN vs Wide&Deep, with popularity and random floors",
    "heads": "NRAM with 1 / 5 / 10 / 15 heads at one total width",
    "negatives": "NRAM trained with K = 1 / 2 / 4 / 8 non-clicks per click",
    "ablation": "NRAM, NRAM without self-attention, NRAM with categories fused",
    "sota": "NRAM vs NAML, LSTUR and NPA, with popularity and random floors",
    "all": "every model above (identical configurations trained once)",
}


# Starting values that give a comparison worth showing in about two minutes on two CPU cores.
SUITE_BUDGET = {"epochs": 2, "seeds": 1, "max_impressions": 4000, "max_dev_impressions": 1000}


def data_choices() -> dict[str, Layout]:
    """The sidebar's datasets (demo corpus, NRAM_DATA_DIRS, --data, registered, downloaded) that
    have both a train and a dev split; no free browsing of the server's folders."""
    return {d.label: d.layout for d in ctx().datasets
            if d.ok and d.layout is not None and d.layout.train is not None and d.layout.dev is not None}


def count_text(counts: pd.Series) -> str:
    """The impression counts of one model's seeds (or one segment's runs) as one figure, or a range
    when they differ (a suite continued with another dev cap)."""
    low, high = int(counts.min()), int(counts.max())
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def show_results(folder: Path) -> None:
    rows, segments, report = suite_tables(folder)
    if rows.empty:
        st.info("No model of this suite has finished yet.")
        return
    summary = pd.DataFrame(ex.summarise(rows.to_dict("records")))
    table = summary[["label", *METRIC_NAMES, "train_seconds", "parameters", "seeds"]].copy()
    for metric in METRIC_NAMES:
        table[metric] = [f"{m:.4f} ± {s:.4f}" for m, s in zip(summary[metric], summary[f"{metric}_std"])]
    table["train_seconds"] = summary["train_seconds"].round(1)
    measured = rows.groupby("model", sort=False)["impressions"].agg(count_text)
    table.insert(len(METRIC_NAMES) + 1, "dev impressions", summary["model"].map(measured).to_numpy())
    st.subheader("Results (mean ± std over seeds)")
    st.dataframe(table.rename(columns={"label": "model", "train_seconds": "train s/run"}), hide_index=True,
                 width="stretch", column_config={
                     "model": st.column_config.TextColumn(width=190, pinned=True),
                     **{m: st.column_config.TextColumn(m, width=135) for m in METRIC_NAMES},
                     "dev impressions": st.column_config.TextColumn(
                         "on dev imps", width=100, help="How many dev impressions each model's metrics were "
                                                        "measured on (every seed)."),
                     "train s/run": st.column_config.NumberColumn(format="%.1f", width=95),
                     "parameters": st.column_config.NumberColumn(format="%,d", width=100),
                     "seeds": st.column_config.NumberColumn(width=60)})
    every = count_text(rows["impressions"])
    st.caption(f"Every model of this suite is scored once, after its last epoch, on {every} dev impressions "
               "(official MIND metrics).")
    ordering = ex.paper_ordering(summary.to_dict("records"))
    if ordering:
        st.markdown(f"**{ordering}** (on {every} dev impressions)")

    st.subheader("By metric")
    metric = st.radio("Metric", list(METRIC_NAMES), horizontal=True, key="exp_metric")
    bars = alt.Chart(summary).mark_bar().encode(  # horizontal: every model's name is read whole
        y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=320)),
        x=alt.X(f"{metric}:Q", title=f"{metric} on {every} dev impressions"),
        color=alt.Color("group:N"), tooltip=["label", alt.Tooltip(f"{metric}:Q", format=".4f"), "seeds"])
    st.altair_chart(bars, width="stretch")

    for group, x_key, title in (("heads", "num_heads", "Heads (same total width)"),
                                ("negatives", "negatives", "K (non-clicks per click)")):
        chosen = summary[summary["group"] == group]
        if chosen.empty:
            continue
        st.subheader(f"Metrics vs {title}")
        long = chosen.melt(id_vars=[x_key], value_vars=list(METRIC_NAMES), var_name="metric", value_name="value")
        line = alt.Chart(long).mark_line(point=True).encode(
            x=alt.X(f"{x_key}:O", title=title),
            y=alt.Y("value:Q", scale=alt.Scale(zero=False), title=f"value on {every} dev impressions"),
            color="metric:N", tooltip=[x_key, "metric", alt.Tooltip("value:Q", format=".4f")])
        st.altair_chart(line, width="stretch")

    if not segments.empty:
        st.subheader("AUC by user history length (clicks)")
        labels = dict(zip(rows["model"], rows["label"]))
        pivot = segments.groupby(["model", "segment"], sort=False)["auc"].mean().unstack("segment")
        pivot = pivot.reindex(index=list(dict.fromkeys(segments["model"])),
                              columns=[s for s, _, _ in HISTORY_SEGMENTS if s in pivot.columns])
        pivot.index = [labels.get(m, m) for m in pivot.index]
        per_segment = segments.groupby("segment", sort=False)["impressions"].agg(count_text)
        # Each column says how many dev impressions its users had: a segment's AUC on a few dozen
        # impressions is noisier than the overall figure.
        pivot.columns = [f"{s} · {per_segment[s]} imp." for s in pivot.columns]
        st.dataframe(pivot, width="stretch",
                     column_config={"_index": st.column_config.TextColumn("model", width=190),
                                    **{col: st.column_config.NumberColumn(format="%.4f", width=150)
                                       for col in pivot.columns}})
        st.caption("Mean AUC over seeds on the dev impressions of users with that many clicks in their history "
                   "(the count in each column's name).")
    with st.expander("Per run (every seed)"):
        st.dataframe(rows, hide_index=True, width="stretch", column_config={
            **{m: st.column_config.NumberColumn(format="%.4f") for m in METRIC_NAMES},
            "impressions": st.column_config.NumberColumn("dev impressions", format="%,d"),
            "parameters": st.column_config.NumberColumn(format="%,d")})
    if report:
        with st.expander("results.md"):
            st.markdown(registry.shown_text(report))
    st.caption(f"Folder: `{registry.shown_path(folder)}`")


def start_form(job: BackgroundJob) -> None:
    choices = data_choices()
    with st.form("experiment_form"):
        a, b = st.columns([3, 2])  # the suites' descriptions are longer than the dataset names
        suite = a.selectbox("Suite", ex.SUITE_NAMES, format_func=lambda s: f"{s} — {SUITE_HELP[s]}")
        data_label = b.selectbox("Data", list(choices) or ["(no dataset found)"],
                                 help="The sidebar's datasets that have a train and a dev split.")
        a, b, c, d = st.columns(4)
        preset = a.selectbox("Preset", sorted(PRESETS), index=sorted(PRESETS).index("demo"))
        epochs = b.number_input("Epochs", 1, 20, SUITE_BUDGET["epochs"])
        seeds = c.number_input("Seeds", 1, 5, SUITE_BUDGET["seeds"])
        max_imp = d.number_input("Cap on train impressions (0 = all)", 0, 10_000_000, SUITE_BUDGET["max_impressions"],
                                 step=500)
        max_dev = st.number_input("Cap on dev impressions scored (0 = all)", 0, 10_000_000,
                                  SUITE_BUDGET["max_dev_impressions"], step=500)
        st.caption(f"The starting budget ({SUITE_BUDGET['epochs']} epochs, {SUITE_BUDGET['seeds']} seed, the first "
                   f"{SUITE_BUDGET['max_impressions']:,} train and {SUITE_BUDGET['max_dev_impressions']:,} dev "
                   "impressions) runs the paper suite in a few minutes on two CPU cores and already separates the "
                   "trained models from the popularity and random floors; docs/experiments.md uses the presets' "
                   "full budgets.")
        submitted = st.form_submit_button("Run suite", type="primary", disabled=job.busy)
    if not submitted:
        return
    if data_label not in choices:
        st.error("No dataset with a train and a dev split is in the sidebar's list; add one on the Data page.")
        return
    layout = choices[data_label]
    slug = run_slug(data_label, "data")
    out = ex.experiments_dir() / f"{suite}-{preset}-e{int(epochs)}-{slug}-i{int(max_imp)}-d{int(max_dev)}"
    message = start_suite(job, label=out.name, suite=suite, layout=layout, out=out, preset=preset,
                          epochs=int(epochs), seeds=int(seeds),
                          train_overrides={"max_impressions": int(max_imp), "max_dev_impressions": int(max_dev)})
    if message:
        st.error(message)
    else:
        st.session_state["exp_loaded"] = str(out)
        st.toast("Suite started: progress below")


@st.fragment(run_every=POLL_SECONDS)
def progress_panel() -> None:
    job = suite_job()
    snap = job.snapshot()
    status = snap.get("status", "idle")
    if status == "idle":
        st.caption("No suite is running in this app.")
        return
    p = snap.get("progress") or {}
    text = f"{status}: run {p.get('run', 0)}/{p.get('runs', 0)} · {p.get('model', '')} seed {p.get('seed', 0)}"
    if p.get("phase") == "train" and p.get("steps_in_epoch"):
        text += f" · epoch {p.get('epoch')}/{p.get('epochs')} step {p.get('step')}/{p.get('steps_in_epoch')}"
        if p.get("loss") is not None:
            text += f" · loss {p['loss']:.4f}"
    st.progress(min(1.0, float(snap.get("fraction") or 0.0)), text=text)
    # A model finished (its results were written) or the suite ended: redraw the results below.
    marker = (snap.get("started"), p.get("run"), p.get("phase"), status)
    if (p.get("phase") in ("done", "finished") or status in ("finished", "failed", "cancelled")) \
            and st.session_state.get("exp_seen") != marker:
        st.session_state["exp_seen"] = marker
        st.rerun(scope="app")
    if status in ACTIVE:
        if st.button("Stop after this step", disabled=status == "stopping"):
            job.cancel()
    if status == "cancelled":
        st.warning((snap.get("result") or {}).get("message") or "The suite was stopped; rerun it to continue.")
    if snap.get("error"):
        st.error(snap["error"])
    if snap.get("log"):
        st.code("\n".join(snap["log"][-12:]), language=None)


def page() -> None:
    st.title("Experiments")
    st.caption("Train every model of a suite on the same data and budget, evaluate on dev with the official "
               "MIND metrics, and compare. The command line does the same: "
               "`python -m nram_core experiment --suite all --data DIR`.")
    job = suite_job()
    if registry.public_mode():
        st.info("Running suites is off on this public demo server; the suites it has are shown below. To run one, "
                "use the studio on your own machine or `python -m nram_core experiment --suite paper --data DIR`.")
    else:
        start_form(job)
        progress_panel()

    st.divider()
    suites = ex.list_suites()
    if not suites:
        st.info(f"No finished suite under `{registry.shown_path(ex.experiments_dir())}` yet.")
        return
    names = [s.name for s in suites]
    wanted = Path(st.session_state.get("exp_loaded", "")).name
    chosen = st.selectbox("Suite to show", names, index=names.index(valid_choice(wanted, names)),
                          help=f"Suite folders under {registry.shown_path(ex.experiments_dir())}")
    try:
        show_results(suites[names.index(chosen)])
    except DataError as exc:
        st.error(registry.shown_text(str(exc)))


try:
    page()
except DataError as exc:
    st.error(registry.shown_text(str(exc)))
except Exception as exc:  # noqa: BLE001 - a clear message instead of a traceback (st.stop/rerun pass through)
    traceback.print_exc()
    st.error(registry.shown_text(f"Something went wrong on the Experiments page: {type(exc).__name__}: {exc}"))
