"""Train: start a run in the background, watch it live, cancel it, compare runs."""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from nram_core.config import PRESETS, preset as get_preset
from nram_core.run_info import create_run_dir, data_info

from studio import charts, cache, registry
from studio.context import PENDING_MODEL, TRAIN_PREFILL, ctx
from studio.jobs import ACTIVE
from studio.training import start_training
from studio.widgets import keep_choice, valid_choice


STUDIO_BUDGET = {"epochs": 2, "max_impressions": 4000, "max_dev_impressions": 1000}

c = ctx()
job = cache.training_job()
st.title("Train")
if st.session_state.pop("_train_started", None):
    st.toast("Training started: progress below")


# ---- runs table ----------------------------------------------------------------------------------
def show_runs_table() -> None:
    st.header("All runs")
    table = cache.runs_table()
    if not table.empty:  # what this app's own job knows: the run it trains now, or the run that failed
        snap = job.snapshot()
        if snap.get("run_dir"):
            here = table["folder"] == str(Path(snap["run_dir"]))
            if snap["status"] in ACTIVE:
                table.loc[here, "status"] = "running"
            elif snap["status"] == "failed":
                table.loc[here, "status"] = "failed"
    if table.empty:
        st.caption("No runs yet.")
    else:
        table["folder"] = table["folder"].map(registry.shown_path)
        first = ["run", "status", "epochs", "auc", "mrr", "ndcg@5", "ndcg@10", "minutes"]  # what a reader scans for
        table = table[first + [col for col in table.columns if col not in first]]
        st.dataframe(table, hide_index=True, width="stretch", key="runs_table",
                     column_config={"auc": st.column_config.NumberColumn(format="%.4f"),
                                    "mrr": st.column_config.NumberColumn(format="%.4f"),
                                    "ndcg@5": st.column_config.NumberColumn(format="%.4f"),
                                    "ndcg@10": st.column_config.NumberColumn(format="%.4f"),
                                    "minutes": st.column_config.NumberColumn(format="%.1f"),
                                    "lr": st.column_config.NumberColumn(format="%.0e")})


if registry.public_mode():
    st.info("Training is off on this public demo server. To train, run the studio on your own machine "
            "(`streamlit run app/main.py`) or use the command line: "
            "`python -m nram_core train --data DIR --preset demo`. The runs this server has are below.")
    show_runs_table()
    st.stop()

# ---- the form ---------------------------------------------------------------------------------
names = sorted(PRESETS)
keep_choice("train_preset", names, default="demo")
preset_name = st.selectbox("Preset", names, key="train_preset",
                           help="demo: small and quick on a CPU; paper: the NRMS paper's sizes (slow on a CPU).")
mc, tc = get_preset(preset_name)
# The studio's starting values: a run that finishes in about a minute on two CPU cores with the
# demo preset on the demo corpus. The presets' own budgets (the CLI's) are a caption away.
tc = dataclasses.replace(tc, **STUDIO_BUDGET)
dataset_ok = c.dataset is not None and c.dataset.ok and c.dataset.layout.train is not None
st.caption(f"Trains on the dataset chosen in the sidebar: **{c.dataset.label if c.dataset else '–'}** "
           f"(train split, evaluated on dev after every epoch). Runs are saved under `{registry.runs_dir()}`.")
full_epochs = get_preset(preset_name)[1].epochs
st.caption(f"The starting values are sized to finish in about a minute on two CPU cores: "
           f"{STUDIO_BUDGET['epochs']} epochs over the first {STUDIO_BUDGET['max_impressions']:,} train "
           f"impressions, scored on {STUDIO_BUDGET['max_dev_impressions']:,} dev impressions after each. The "
           f"`{preset_name}` preset's own budget is {full_epochs} epochs over all impressions: set the caps to 0.")

prefill = st.session_state.pop(TRAIN_PREFILL, None)
if prefill:  # "Train a model on this dataset" from a page that found the model unfit for it
    st.session_state[f"tf_name_{preset_name}"] = re.sub(r"[^A-Za-z0-9 ._-]+", " ", prefill).strip()[:60]
with st.form("train_form"):
    p = preset_name  # widget keys per preset, so picking a preset refreshes every default
    name = st.text_input("Run name", value="", placeholder=preset_name, key=f"tf_name_{p}")
    a, b, d, e = st.columns(4)
    epochs = a.number_input("Epochs", 1, 100, tc.epochs, key=f"tf_epochs_{p}")
    batch_size = b.number_input("Batch size", 1, 4096, tc.batch_size, key=f"tf_batch_{p}")
    negatives = d.number_input("K (negatives per click)", 1, 50, tc.negatives, key=f"tf_k_{p}")
    lr = e.number_input("Learning rate", 1e-6, 1.0, tc.lr, step=1e-4, format="%.6f", key=f"tf_lr_{p}")
    a, b, d, e = st.columns(4)
    heads = a.number_input("Attention heads", 1, 64, mc.num_heads, key=f"tf_heads_{p}")
    head_dim = b.number_input("Head dim", 1, 256, mc.head_dim, key=f"tf_headdim_{p}")
    title_len = d.number_input("Title length (words)", 1, 100, mc.title_len, key=f"tf_title_{p}")
    history_len = e.number_input("History length (clicks)", 1, 500, mc.history_len, key=f"tf_hist_{p}")
    a, b, d, e = st.columns(4)
    vector_choices = ["corpus", "none"]
    word_vectors = a.selectbox(
        "Word vectors", vector_choices, index=vector_choices.index(valid_choice(tc.word_vectors, vector_choices)),
        key=f"tf_vectors_{p}",
        help="corpus: word2vec trained on the dataset's news titles and abstracts (no clicks), the "
             "default; none: random word embeddings.")
    use_categories = b.checkbox("Fuse categories", value=mc.use_categories, key=f"tf_cats_{p}",
                                help="Add category and subcategory embeddings to the news vector.")
    residual = d.checkbox("Residual around self-attention", value=mc.residual, key=f"tf_residual_{p}",
                          help="Not in the paper: keeps each word in its own vector, so the word attention can "
                               "pick words out. Needs heads × head dim = word dim.")
    word_dim = e.number_input("Word dim", 1, 1024, mc.word_dim, key=f"tf_worddim_{p}")
    a, b, d, _ = st.columns(4)
    max_impressions = a.number_input("Cap on train impressions (0 = all)", 0, 100_000_000, tc.max_impressions,
                                     key=f"tf_maximp_{p}")
    max_steps = b.number_input("Max steps (0 = no limit)", 0, 10_000_000, tc.max_steps, key=f"tf_maxsteps_{p}")
    max_dev = d.number_input("Cap on dev impressions per evaluation (0 = all)", 0, 100_000_000,
                             tc.max_dev_impressions, key=f"tf_maxdev_{p}")
    submitted = st.form_submit_button("Start training", type="primary", disabled=job.busy)
if job.busy:
    st.caption("A run is training now; this app trains one model at a time. Cancel it below or wait for it.")

if submitted:
    try:  # each config checks its fields as it is made
        model_cfg = dataclasses.replace(mc, num_heads=int(heads), head_dim=int(head_dim), title_len=int(title_len),
                                        history_len=int(history_len), use_categories=bool(use_categories),
                                        residual=bool(residual), word_dim=int(word_dim))
        train_cfg = dataclasses.replace(tc, epochs=int(epochs), batch_size=int(batch_size), negatives=int(negatives),
                                        lr=float(lr), max_impressions=int(max_impressions), max_steps=int(max_steps),
                                        max_dev_impressions=int(max_dev), word_vectors=word_vectors)
    except ValueError as exc:
        st.error(f"Invalid setting: {exc}")
    else:
        if not dataset_ok:
            st.error("Training needs a dataset with a train split. Pick one in the sidebar "
                     + (f"({c.dataset.error})" if c.dataset and c.dataset.error else "") + ".")
        else:
            run_dir = create_run_dir(registry.runs_dir(), name, fallback=preset_name)
            problem = start_training(job, layout=c.dataset.layout, model_config=model_cfg, train_config=train_cfg,
                                     run_dir=run_dir, label=run_dir.name,
                                     data_info=data_info(c.dataset.layout, preset=preset_name,
                                                         dataset=c.dataset.label, source="nram-studio"))
            if problem:
                st.error(problem)
            else:
                st.session_state["_train_started"] = run_dir.name
                st.rerun()  # redraw the form disabled and start polling the progress


def _use_model_button(path: str) -> None:
    """Switch the sidebar to ``path``. The button lives in a fragment, whose reruns neither redraw
    the sidebar nor keep the state of its widgets, so the choice goes through a plain session key
    (read by the sidebar, ``context.PENDING_MODEL``) and a rerun of the whole app."""
    if st.button("Use this model", key="train_use"):
        st.session_state[PENDING_MODEL] = str(Path(path).resolve())
        st.rerun(scope="app")


# ---- live progress ------------------------------------------------------------------------------
def _time_left(s: dict, total: int) -> str:
    """About how long the remaining steps take at the measured throughput (dev evaluation not included)."""
    done = s["global_step"]
    if not done or not s["samples_per_s"] or done >= total:
        return ""
    seconds = (total - done) * s.get("batch_size", 1) / s["samples_per_s"]
    return f" · about {seconds:.0f}s of training left"

def _progress(polling: bool) -> None:
    s = job.snapshot()
    status = s["status"]
    if status == "idle":
        st.caption("No training has run in this app yet.")
        return
    # Once the run ends, rerun the whole app before drawing anything: the model picker then lists
    # the new run, this fragment stops polling, and the result is drawn once, not twice.
    if polling and status not in ACTIVE:
        st.rerun(scope="app")
    st.subheader(f"Run {s['label']}")
    elapsed = (s["finished"] or time.time()) - s["started"]
    if status in ACTIVE:
        total = max(1, s["total_steps"])
        fraction = min(1.0, s["global_step"] / total)
        text = (f"{s.get('phase') or 'loading the data'}…" if status == "loading" else
                f"epoch {s['epoch']}/{s['epochs']} · step {s['global_step']}/{total} · "
                f"{s['samples_per_s']:.0f} samples/s ({s.get('precision') or 'fp32'}) · {elapsed:.0f}s"
                f"{_time_left(s, total)}")
        if status == "stopping":
            text += " · stopping…"
        st.progress(fraction, text=text)
        st.button("Cancel training", key="train_cancel", on_click=job.cancel, disabled=status == "stopping",
                  help="Stops after the current step; the last finished epoch's checkpoint is kept.")
    elif status == "finished":
        res = s["result"] or {}
        metrics = res.get("metrics") or {}
        auc = f", dev AUC {metrics['auc']:.4f}" if "auc" in metrics else ""
        st.success(f"Finished in {elapsed:.0f}s: {res.get('epochs_done', 0)} epoch(s){auc}. "
                   "The run is now in the model picker.")
        _use_model_button(s["run_dir"])
    elif status == "cancelled":
        if s.get("kept"):
            st.warning(f"Cancelled after {elapsed:.0f}s. The last finished epoch's checkpoint was kept and is in "
                       "the model picker.")
            _use_model_button(s["run_dir"])
        else:
            st.warning("Cancelled before the first epoch finished: there is no checkpoint to keep.")
    elif status == "failed":
        st.error(f"Training failed: {s['error']}")
    if s["losses"]:
        st.plotly_chart(charts.loss_curve(s["loss_steps"], s["losses"]), config=charts.PLOT_CONFIG,
                        key="train_loss")
    if s["epochs_log"]:
        st.markdown("**Dev metrics per epoch**")
        log = pd.DataFrame(s["epochs_log"]).drop(columns=["skipped_impressions"], errors="ignore")
        st.dataframe(log.rename(columns={"train_loss": "train loss", "improved": "best so far"})
                     .style.format(precision=4), hide_index=True, width="stretch")


running = job.busy
st.fragment(_progress, run_every=1.0 if running else None)(running)


show_runs_table()
