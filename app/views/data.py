"""Data: download MIND, or register a MIND folder that is already on this machine."""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from nram_core.data.download import MIND_SIZES, default_dest, download_mind
from nram_core.fileio import DataError

from studio import cache, registry
from studio.context import ctx
from studio.widgets import keep_choice

SIZE_NOTES = {"demo": "MIND-demo: about 5k users, tens of MB", "small": "MIND-small: 50k users, about 0.5 GB",
              "large": "MIND-large: 1M users, several GB"}

c = ctx()
st.title("Data")

# ---- what the picker offers ---------------------------------------------------------------------
st.subheader("Datasets in the picker")
public = registry.public_mode()
# The status (ok, or why a folder cannot be used) beside the name: long paths come last, where a cut
# costs least, and every column has a width that fits the main area at 1280 px.
rows = [{"dataset": d.label, "status": "ok" if d.ok else f"⚠ {registry.shown_text(d.error or '')}",
         "source": registry.source_label(d.source),
         "train": registry.shown_path(d.layout.train) if d.layout and d.layout.train else "",
         "dev": registry.shown_path(d.layout.dev) if d.layout and d.layout.dev else ""} for d in c.datasets]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="data_table", column_config={
    "dataset": st.column_config.TextColumn("dataset", width=230),
    "status": st.column_config.TextColumn("status", width=250),
    "source": st.column_config.TextColumn("source", width=110),
    "train": st.column_config.TextColumn("train", width=300),
    "dev": st.column_config.TextColumn("dev", width=300),
})
for d in c.datasets:  # a reason is a sentence: in full below the table, where no column cuts it
    if not d.ok:
        st.caption(f"⚠ **{d.label}** cannot be used: {registry.shown_text(d.error or '')}")
if public:
    st.info("This is a public demo server: it offers the datasets its host set up (the built-in demo corpus, "
            "`NRAM_DATA_DIRS` and `--data`). Downloading MIND and registering folders are off here; run "
            "`streamlit run app/main.py` on your own machine to use your copy of MIND.")
    st.stop()
st.caption("Sources: the built-in demo corpus, the roots in `NRAM_DATA_DIRS` (separated by `"
           + os.pathsep + "`), `streamlit run app/main.py -- --data DIR`, "
           f"and folders registered here (kept in `{registry.registry_path()}`).")


def _select(entry_key: str | None) -> None:
    if entry_key:
        st.session_state["dataset"] = entry_key


def _key_for(entry: registry.DatasetEntry) -> str | None:
    for d in cache.datasets():
        if d.layout and entry.layout and (d.layout.train, d.layout.dev) == (entry.layout.train, entry.layout.dev):
            return d.key
    return None


def _flash(message: str, entry: registry.DatasetEntry) -> None:
    """Show ``message`` after a rerun, so that the sidebar's picker already lists the new dataset."""
    st.session_state["_data_flash"] = (message, _key_for(entry))
    st.rerun()


flash = st.session_state.pop("_data_flash", None)
if flash:
    st.success(flash[0])
    st.button("Use it now", key="data_use", on_click=_select, args=(flash[1],), type="primary",
              help="Select this dataset in the sidebar")

# ---- download ------------------------------------------------------------------------------------
st.subheader("Download MIND")
base_url = os.environ.get("NRAM_MIND_BASE_URL") or None  # a mirror, e.g. inside a closed network
st.caption(("From the mirror `" + base_url + "`" if base_url else "From Microsoft's public host")
           + ", resuming a broken download and checking every archive. Needs a network connection.")
left, right = st.columns([1, 2])
keep_choice("download_size", MIND_SIZES, default="demo")
size = left.selectbox("Size", MIND_SIZES, key="download_size", format_func=lambda s: SIZE_NOTES.get(s, s))
dest = default_dest(size)
right.text_input("Saved to", str(dest), disabled=True, key="download_dest")
if st.button("Download and register", key="download_go", type="primary"):
    bar = st.progress(0.0, text="connecting…")
    last = {"shown": -1.0}

    def on_progress(split: str, done: int, total: int | None) -> None:
        fraction = done / total if total else 0.0
        if total is None or fraction - last["shown"] >= 0.01 or done == total:
            last["shown"] = fraction
            size_text = f"{done / 1e6:.1f} / {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
            bar.progress(min(fraction, 1.0), text=f"{split}: {size_text}")

    try:
        folders = download_mind(size, dest, base_url=base_url, on_progress=on_progress)
        bar.progress(1.0, text="downloaded and extracted")
        entry = registry.register_dataset(dest, f"MIND{size}")
    except DataError as exc:
        bar.empty()
        st.error(f"Download failed: {exc}")
    except OSError as exc:
        bar.empty()
        st.error(f"Download failed: {exc.strerror or exc}. Is there a network connection and free disk space?")
    else:
        _flash(f"MIND{size} is ready ({', '.join(f'{k}: {v}' for k, v in folders.items())}) and registered.", entry)

# ---- register a folder ---------------------------------------------------------------------------
st.subheader("Register a folder")
st.caption("A folder with train/ and dev/, the official MINDsize_train/ and MINDsize_dev/ folders or zips, or one "
           "split folder holding news.tsv and behaviors.tsv. It is checked before it is added.")
with st.form("register_form"):
    path = st.text_input("Folder path (absolute)", key="register_path", placeholder="/data/MINDsmall")
    name = st.text_input("Name (optional)", key="register_name")
    submitted = st.form_submit_button("Register")
if submitted:
    try:
        entry = registry.register_dataset(path, name)
    except DataError as exc:
        st.error(f"Not registered: {exc}")
    except OSError as exc:
        st.error(f"Not registered: {path}: {exc.strerror or exc}")
    else:
        splits = ", ".join(f"{s}: {entry.folder(s)}" for s in entry.splits())
        _flash(f"Registered {entry.label} ({splits}).", entry)

registered = registry.read_registered()
if registered:
    st.subheader("Registered folders")
    paths = [d["path"] for d in registered]
    col_a, col_b = st.columns([3, 1])
    gone = col_a.selectbox("Registered folder", paths, key="unregister_pick",
                           format_func=lambda p: next((d.get("name") or p for d in registered if d["path"] == p), p))
    if col_b.button("Remove from the list", key="unregister_go",
                    help="Forgets the folder; nothing is deleted from disk."):
        registry.unregister_dataset(gone)
        st.rerun()
