"""NRAM Studio: ``streamlit run app/main.py`` (optionally ``-- --data DIR --runs DIR``, each repeatable:
more datasets, and more folders of trained runs for the model picker).

The entry point sets up the page, makes sure the demo corpus exists, draws the shared
sidebar (dataset, split, model, user) and runs the page chosen in the navigation.
Pages live in ``app/views``; the glue they share lives in ``app/studio``.

``streamlit run`` first imports this file (not as ``__main__``) to find ``app``, the server: Streamlit's
own, with deep links redirected (``studio.server``). Each session then runs it as its script.
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:  # streamlit adds it; AppTest and other runners may not
    sys.path.insert(0, str(APP_DIR))

from nram_core.cpu_wait import short_spin_wait  # noqa: E402

short_spin_wait()  # before anything loads torch: libgomp reads it once

import streamlit as st  # noqa: E402

if __name__ != "__main__":  # imported by `streamlit run` for its server; the studio itself runs below
    from studio.server import DeepLinkRedirect  # noqa: E402
    from starlette.middleware import Middleware  # noqa: E402

    app = st.App(__file__, middleware=[Middleware(DeepLinkRedirect, base=st.get_option("server.baseUrlPath"))])


def _studio() -> None:
    _started = time.perf_counter()
    import threading

    from studio import registry  # light: no torch

    # First start: generate the demo corpus in a thread while torch and the rest are imported.
    _demo_thread = None
    if not (registry.demo_corpus_dir() / "truth.json").is_file():
        _demo_errors: list[BaseException] = []

        def _generate() -> None:
            try:
                registry.ensure_demo_corpus()
            except Exception as exc:  # noqa: BLE001 - shown below
                _demo_errors.append(exc)

        _demo_thread = threading.Thread(target=_generate, name="nram-demo-corpus", daemon=True)
        _demo_thread.start()

    from studio import context

    # Public mode (NRAM_PUBLIC=1) offers no table download or copy. The option is process-wide, and a
    # page's settings reach the browser before this line runs, so the Procfile passes
    # --client.disableDataExport=true too; this line holds for a public server started any other way.
    if registry.public_mode():
        st.set_option("client.disableDataExport", True)

    # A local favicon: a Material icon or an emoji as page_icon is fetched from a font host or a CDN,
    # and the studio must work offline.
    st.set_page_config(page_title="NRAM Studio", page_icon=str(registry.REPO_ROOT / "assets" / "favicon.png"),
                       layout="wide",
                       initial_sidebar_state="expanded")

    # Keep the values of page widgets when the user switches pages (Streamlit forgets the
    # state of widgets that a run does not draw, unless it is re-assigned like this).
    for _key in context.PERSISTENT_KEYS:
        if _key in st.session_state:
            st.session_state[_key] = st.session_state[_key]

    if _demo_thread is not None:
        with st.spinner("First start: generating the demo corpus (a few seconds)…"):
            _demo_thread.join()
        if _demo_errors:  # the app still runs on other datasets
            st.error(registry.shown_text(f"The demo corpus could not be generated in {registry.demo_corpus_dir()}: "
                                         f"{_demo_errors[0]}"))

    overview = st.Page("views/overview.py", title="Overview", icon=":material/insights:", url_path="overview")


    def _home() -> None:
        """The app's root URL opens the Overview at its own URL, so that every page, the Overview
        included, opens by its URL (Streamlit serves its default page only at the root)."""
        st.switch_page(overview)


    pages = [
        overview,
        st.Page("views/recommendations.py", title="Recommendations", icon=":material/recommend:",
                url_path="recommendations"),
        st.Page("views/attention.py", title="Attention", icon=":material/visibility:", url_path="attention"),
        st.Page("views/whatif.py", title="What-if", icon=":material/science:", url_path="what-if"),
        st.Page("views/map.py", title="News map", icon=":material/scatter_plot:", url_path="map"),
        st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
        st.Page("views/train.py", title="Train", icon=":material/model_training:", url_path="train"),
        st.Page("views/experiments.py", title="Experiments", icon=":material/leaderboard:", url_path="experiments"),
        st.Page("views/data.py", title="Data", icon=":material/folder_open:", url_path="data"),
    ]
    page = st.navigation([st.Page(_home, title="NRAM Studio", url_path="home", default=True), *pages],
                         position="hidden")
    for _page in pages:  # the menu, drawn here because the navigation holds the hidden root page too
        st.sidebar.page_link(_page, label=_page.title, icon=_page.icon)
    st.sidebar.title(":material/newspaper: NRAM Studio")

    try:
        st.session_state[context.CTX_KEY] = context.build_sidebar()
    except Exception as exc:  # noqa: BLE001 - a clear message instead of a traceback
        traceback.print_exc()
        st.error(registry.shown_text(f"Could not prepare the dataset or model: {type(exc).__name__}: {exc}"))
        st.stop()

    try:
        page.run()
    except Exception as exc:  # noqa: BLE001 - st.stop/st.rerun are BaseException and pass through
        traceback.print_exc()
        st.error(registry.shown_text(f"Something went wrong on this page: {type(exc).__name__}: {exc}"))

    st.sidebar.caption(f"Server time for this view: {(time.perf_counter() - _started) * 1000:.0f} ms")
    context.warm_up(st.session_state[context.CTX_KEY])


if __name__ == "__main__":
    _studio()
