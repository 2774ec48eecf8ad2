"""Train: start a run in the background, watch it live, cancel it, compare runs."""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from nram_core.callbacks import seconds_left
from nram_core.config import PRESETS, preset as get_preset
from nram_core.run_info import create_run_dir, data_info

from studio import charts, cache, registry
from studio.context import PENDING_MODEL, TRAIN_PREFILL, ctx
from studio.jobs import ACTIVE
from studio.training import (auc_text, cli_command, cli_flag, form_configs, run_facts, setting_error,
                             start_training)
from studio.widgets import keep_choice, valid_choice


STUDIO_BUDGET = {"epochs": 2, "max_impressions": 4000, "max_dev_impressions": 1000}

c = ctx()
job = cache.training_job()
st.title("Train")
if st.session_state.pop("_train_started", None):
    st.toast("Training started: progress below")


# ---- runs table ----------------------------------------------------------------------------------
# Explicit widths and formats: auto-sized columns are measured before formatting and cut values
# ("3e-" for an lr of 3e-03) and run names at 1280 px.
RUNS_COLUMNS = {
    "run": st.column_config.TextColumn("run", width=260, pinned=True),
    "status": st.column_config.TextColumn("status", width=90),
    "auc": st.column_config.NumberColumn("dev AUC", format="%.4f", width=80,
                                         help="AUC of the best epoch on the dev impressions of the next column"),
    "dev impressions": st.column_config.NumberColumn(
        "on dev imps", format="%,d", width=95, help="How many dev impressions the AUC and the other metrics were "
                                                    "measured on: runs compare fairly only on the same ones."),
    "mrr": st.column_config.NumberColumn(format="%.4f", width=75),
    "ndcg@5": st.column_config.NumberColumn(format="%.4f", width=75),
    "ndcg@10": st.column_config.NumberColumn(format="%.4f", width=75),
    "minutes": st.column_config.NumberColumn(format="%.1f", width=75),
    "variant": st.column_config.TextColumn("variant", width=230),
    "trained on": st.column_config.TextColumn("trained on", width=340),
    "heads × dim": st.column_config.TextColumn(width=95),
    "lr": st.column_config.NumberColumn(format="%g", width=75),
    "train imps cap": st.column_config.NumberColumn(format="%,d", width=110),
    "folder": st.column_config.TextColumn(width="large"),
}


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
        facts = pd.DataFrame([run_facts(Path(folder)) for folder in table["folder"]], index=table.index,
                             columns=["dev impressions", "variant", "trained on"])
        table = table.join(facts)
        table["folder"] = table["folder"].map(registry.shown_path)
        first = ["run", "status", "epochs", "auc", "dev impressions", "variant", "mrr", "ndcg@5", "ndcg@10",
                 "minutes", "trained on"]  # what a reader scans for
        table = table[first + [col for col in table.columns if col not in first]]
        st.dataframe(table, hide_index=True, width="stretch", key="runs_table", column_config=RUNS_COLUMNS)
        st.caption("Each run's dev metrics are its best epoch's, measured on the number of dev impressions beside "
                   "them. A run capped at fewer dev impressions (the form's starting 1,000) is not measured on the "
                   "same impressions as the shipped model's; Compare sets two runs side by side.")


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


def twin(field: str, text: str = "") -> str:
    """A widget's help: what it does, then its command-line twin (the train command's own flag)."""
    return f"{text} Command line: `{cli_flag(field)}`.".strip()


with st.form("train_form"):
    p = preset_name  # widget keys per preset, so picking a preset refreshes every default
    name = st.text_input("Run name", value="", placeholder=preset_name, key=f"tf_name_{p}")
    st.markdown("**The paper's questions** — switch one off to train its ablation, then set the two runs side "
                "by side on the Compare page.")
    st.caption("Their command-line twins (`python -m nram_core train`): " + " · ".join(
        f"`{cli_flag(field)}`" for field in ("self_attention", "residual", "use_categories", "num_heads",
                                              "head_dim", "negatives")))
    a, b, d = st.columns(3)
    self_attention = a.checkbox("Self-attention", value=mc.self_attention, key=f"tf_selfattn_{p}", help=twin(
        "self_attention", "The multi-head self-attention over a title's words and over a user's clicks. Off: the "
                          "word vectors go straight into the additive attention (NRAM without self-attention)."))
    residual = b.checkbox("Residual around self-attention", value=mc.residual, key=f"tf_residual_{p}", help=twin(
        "residual", "Not in the paper: keeps each word in its own vector, so the word attention can pick words "
                    "out. Needs heads × head dim = word dim."))
    use_categories = d.checkbox("Fuse categories", value=mc.use_categories, key=f"tf_cats_{p}", help=twin(
        "use_categories", "Add category and subcategory embeddings to the news vector."))
    a, b, d = st.columns(3)
    heads = a.number_input("Attention heads", 1, 64, mc.num_heads, key=f"tf_heads_{p}", help=twin(
        "num_heads", "Heads of the self-attention; heads × head dim is the news vector's width."))
    head_dim = b.number_input("Head dim", 1, 256, mc.head_dim, key=f"tf_headdim_{p}", help=twin(
        "head_dim", "Width of each head."))
    negatives = d.number_input("K (negatives per click)", 1, 50, tc.negatives, key=f"tf_k_{p}", help=twin(
        "negatives", "Non-clicks of the same impression sampled beside each click."))
    st.markdown("**Budget and sizes**")
    a, b, d, e = st.columns(4)
    epochs = a.number_input("Epochs", 1, 100, tc.epochs, key=f"tf_epochs_{p}", help=twin("epochs"))
    batch_size = b.number_input("Batch size", 1, 4096, tc.batch_size, key=f"tf_batch_{p}",
                                help=twin("batch_size"))
    lr = d.number_input("Learning rate", 1e-6, 1.0, tc.lr, step=1e-4, format="%.6f", key=f"tf_lr_{p}",
                        help=twin("lr"))
    max_steps = e.number_input("Max steps (0 = no limit)", 0, 10_000_000, tc.max_steps, key=f"tf_maxsteps_{p}",
                               help=twin("max_steps"))
    a, b, d, e = st.columns(4)
    word_dim = a.number_input("Word dim", 1, 1024, mc.word_dim, key=f"tf_worddim_{p}", help=twin("word_dim"))
    title_len = b.number_input("Title length (words)", 1, 100, mc.title_len, key=f"tf_title_{p}",
                               help=twin("title_len"))
    history_len = d.number_input("History length (clicks)", 1, 500, mc.history_len, key=f"tf_hist_{p}",
                                 help=twin("history_len"))
    vector_choices = ["corpus", "none"]
    word_vectors = e.selectbox(
        "Word vectors", vector_choices, index=vector_choices.index(valid_choice(tc.word_vectors, vector_choices)),
        key=f"tf_vectors_{p}", help=twin(
            "word_vectors", "corpus: word2vec trained on the dataset's news titles and abstracts (no clicks), the "
                            "default; none: random word embeddings."))
    a, b, _ = st.columns(3)
    max_impressions = a.number_input("Cap on train impressions (0 = all)", 0, 100_000_000, tc.max_impressions,
                                     key=f"tf_maximp_{p}", help=twin("max_impressions"))
    max_dev = b.number_input("Cap on dev impressions per evaluation (0 = all)", 0, 100_000_000,
                             tc.max_dev_impressions, key=f"tf_maxdev_{p}", help=twin(
                                 "max_dev_impressions", "Every dev AUC says on how many impressions it was "
                                                        "measured: two runs compare fairly on the same number."))
    submitted = st.form_submit_button("Start training", type="primary", disabled=job.busy)
if job.busy:
    st.caption("A run is training now; this app trains one model at a time. Cancel it below or wait for it.")

if submitted:
    # The form's values by config field name, mapped onto the configs as the CLI maps its flags.
    values = {"self_attention": self_attention, "residual": residual, "use_categories": use_categories,
              "num_heads": heads, "head_dim": head_dim, "negatives": negatives, "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "max_steps": max_steps, "word_dim": word_dim,
              "title_len": title_len, "history_len": history_len, "word_vectors": word_vectors,
              "max_impressions": max_impressions, "max_dev_impressions": max_dev}
    try:  # each config checks its fields and their combinations as it is made
        model_cfg, train_cfg = form_configs(preset_name, values)
    except ValueError as exc:
        st.error(f"Invalid setting: {setting_error(exc)}")
    else:
        if not dataset_ok:
            st.error("Training needs a dataset with a train split. Pick one in the sidebar "
                     + (f"({c.dataset.error})" if c.dataset and c.dataset.error else "") + ".")
        else:
            run_dir = create_run_dir(registry.runs_dir(), name, fallback=preset_name)
            problem = start_training(job, layout=c.dataset.layout, model_config=model_cfg, train_config=train_cfg,
                                     run_dir=run_dir, label=run_dir.name,
                                     data_info=data_info(c.dataset.layout, preset=preset_name,
                                                         dataset=c.dataset.label, source="nram-studio"),
                                     command=cli_command(preset_name, model_cfg, train_cfg, layout=c.dataset.layout,
                                                         shown_path=registry.shown_path))
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
    seconds = seconds_left(done_steps=s["global_step"], total_steps=total, batch_size=s.get("batch_size", 1),
                           samples_per_s=s["samples_per_s"] or 0.0)
    return "" if seconds is None else f" · about {seconds:.0f}s of training left"

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
        auc = f", best epoch's {auc_text(metrics)}" if "auc" in metrics else ""
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
    if s.get("command"):
        st.caption("The same run from the command line:")
        st.code(s["command"], language="bash", wrap_lines=True)
    if s["losses"]:
        st.plotly_chart(charts.loss_curve(s["loss_steps"], s["losses"]), config=charts.PLOT_CONFIG,
                        key="train_loss")
    if s["epochs_log"]:
        st.markdown("**Dev metrics per epoch**")
        log = pd.DataFrame(s["epochs_log"]).drop(columns=["skipped_impressions"], errors="ignore")
        st.dataframe(log.rename(columns={"train_loss": "train loss", "improved": "best so far",
                                         "impressions": "dev impressions"}), hide_index=True, width="stretch",
                     column_config={name: st.column_config.NumberColumn(format="%.4f")
                                    for name in ("train loss", "auc", "mrr", "ndcg@5", "ndcg@10")}
                     | {"seconds": st.column_config.NumberColumn(format="%.1f"),
                        "dev impressions": st.column_config.NumberColumn(format="%,d")})
        st.caption("Every epoch is scored on the same dev impressions (the count beside each).")


running = job.busy
st.fragment(_progress, run_every=1.0 if running else None)(running)


show_runs_table()
