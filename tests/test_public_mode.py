"""Public mode and privacy wherever the studio is started from (issue 26).

* The studio sends no usage statistics, and no request leaves 127.0.0.1, when it is started from
  another folder (``streamlit run /abs/path/app/main.py``): Streamlit reads the ``.streamlit/``
  folder beside the script it runs (``app/.streamlit/config.toml``), not only the working folder's.
  The server gets a fresh HOME, so that no ``~/.streamlit/config.toml`` of the machine can hide a leak.
* The Procfile's command (the public host) offers no table download: ``client.disableDataExport``.
  Charts keep "Show data", deliberately: it is a table of the figures the chart draws (at most one
  row per bar), the accessible twin of the chart, and in public mode it offers no download either.
* In public mode the app itself turns data export off, whatever flags started it (AppTest); the
  Procfile's flag still matters for a server's very first page, whose settings reach the browser
  before the script runs.

The browser tests drive Debian's Chromium as tests/test_e2e.py does (never ``playwright install``).
"""
from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench.server import free_port, serving

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app" / "main.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HERE = ("data:", "blob:", "about:")  # what a page may load besides its own server


def procfile_command(port: int) -> tuple[dict[str, str], list[str]]:
    """The Procfile's web command as (environment, argv) for this machine: the app's path absolute
    (it is run from another folder), $PORT filled in, and the address 127.0.0.1 instead of 0.0.0.0."""
    line = next(line for line in (REPO / "Procfile").read_text().splitlines() if line.startswith("web:"))
    words = shlex.split(line.removeprefix("web:"))
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words[:2] == ["streamlit", "run"] and words[2].startswith("app/"), words[:3]
    flags = [w.replace("$PORT", str(port)).replace("--server.address=0.0.0.0", "--server.address=127.0.0.1")
             for w in words[3:]]
    return env, [sys.executable, "-m", "streamlit", "run", str(REPO / words[2]), *flags,
                 "--server.fileWatcherType=none"]


@contextlib.contextmanager
def server_elsewhere(tmp_path: Path, *, public: bool):
    """The studio started from ``tmp_path/elsewhere`` with a fresh HOME and NRAM_HOME: the Procfile's
    command when ``public``, else the README's ``streamlit run /abs/path/app/main.py``."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
    cwd, home = tmp_path / "elsewhere", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    port = free_port()
    env = {**os.environ, "HOME": str(home), "NRAM_HOME": str(tmp_path / "nram_home")}
    for name in ("NRAM_PUBLIC", "NRAM_DATA_DIRS", "NRAM_RUNS_DIRS", "NRAM_MIND_BASE_URL", "NRAM_DEMO_MODEL"):
        env.pop(name, None)
    env = {name: value for name, value in env.items() if not name.startswith("STREAMLIT_")}  # no outside config
    if public:
        extra_env, argv = procfile_command(port)
        env.update(extra_env)
    else:
        argv = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
                "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"]
    with (tmp_path / "streamlit.log").open("w") as log:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        with serving(proc, port, timeout=120) as url:
            yield url
    assert "Traceback" not in (tmp_path / "streamlit.log").read_text()


@contextlib.contextmanager
def browser_page(url: str, outside: list[str]):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("request", lambda r: None if r.url.startswith((url, *HERE)) else outside.append(r.url))
        try:
            yield page
        finally:
            browser.close()


def wait_idle(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                           " && !document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=120_000)
    page.wait_for_timeout(500)


def open_page(page, title: str, until: str) -> None:
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=120_000)
    page.get_by_text(until).first.wait_for(timeout=120_000)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0


def toolbar_labels(page, element) -> list[str]:
    """The labels of an element's toolbar, shown when the pointer is over it."""
    element.scroll_into_view_if_needed()
    element.hover()
    toolbar = element.locator("xpath=ancestor::*[@data-testid='stElementContainer'][1]").locator(
        "[data-testid='stElementToolbar'] button")
    toolbar.first.wait_for(timeout=10_000)
    return toolbar.evaluate_all("els => els.map(e => e.getAttribute('aria-label') || e.innerText)")


def walk(page, url: str) -> dict[str, list[str]]:
    """Overview, Recommendations and Data; returns the toolbar labels of the first table, of the first
    chart and of that chart's "Show data" table."""
    page.goto(url, timeout=120_000)
    page.get_by_role("heading", name="Overview", exact=True).wait_for(timeout=120_000)
    page.get_by_text("Model card").wait_for(timeout=120_000)
    wait_idle(page)
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    labels = {"chart": toolbar_labels(page, chart)}
    page.locator("[data-testid='stElementToolbar'] button[aria-label='Show data']").first.click()
    shown = page.locator("[data-testid='stDataFrame']").first
    shown.wait_for(timeout=10_000)
    labels["chart data"] = toolbar_labels(page, shown)
    open_page(page, "Recommendations", "true clicks at rank")
    labels["table"] = toolbar_labels(page, page.locator("[data-testid='stDataFrame']").first)
    open_page(page, "Data", "Datasets in the picker")
    return labels


@pytest.mark.e2e
def test_public_server_started_from_another_folder_sends_nothing_out_and_offers_no_download(tmp_path):
    outside: list[str] = []
    with server_elsewhere(tmp_path, public=True) as url, browser_page(url, outside) as page:
        labels = walk(page, url)
    assert not outside, f"requests that left 127.0.0.1: {outside[:5]}"
    assert "Download as CSV" not in labels["table"], labels["table"]
    assert "Show data" in labels["chart"]  # kept on purpose: the plotted figures as a table …
    assert "Download as CSV" not in labels["chart data"], labels["chart data"]  # … with no download


@pytest.mark.e2e
def test_private_server_started_from_another_folder_sends_nothing_out(tmp_path):
    """The README's command from another folder. Tables keep their download on one's own machine,
    which also shows that the public test above would see the button if it were there."""
    outside: list[str] = []
    with server_elsewhere(tmp_path, public=False) as url, browser_page(url, outside) as page:
        labels = walk(page, url)
    assert not outside, f"requests that left 127.0.0.1: {outside[:5]}"
    assert "Download as CSV" in labels["table"], labels["table"]


# ---- the app turns data export off in public mode, however it was started ----------------------------
@pytest.mark.parametrize("public,configured", [("1", False), ("", False), ("", True)])
def test_public_mode_turns_data_export_off(monkeypatch, public, configured):
    """Public mode turns data export off even when the server was started without the Procfile's
    flag; otherwise the server's own setting stands."""
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("NRAM_PUBLIC", public)
    before = config.get_option("client.disableDataExport")
    config.set_option("client.disableDataExport", configured)
    try:
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert config.get_option("client.disableDataExport") is (configured or bool(public)), \
            "in public mode app/main.py turns client.disableDataExport on"
    finally:
        config.set_option("client.disableDataExport", before)
