"""End to end: a real ``streamlit run app/main.py`` server driven by Debian's Chromium.

Walks every page the way a new user would (fresh NRAM_HOME: the first start generates
the demo corpus and loads the shipped model; the walk picks the worst user by the model's AUC,
reads the per-head summary, and trains the no-self-attention ablation that Compare sets beside
the shipped model), checks what is visible, and saves a
screenshot of each page to the test's tmp folder; with ``NRAM_UPDATE_SCREENSHOTS=1`` they are also
copied to ``assets/screenshots/<page>.png`` for the README (a plain run never writes tracked files).
It also measures the cold start: from spawning the server to the Overview's figures on
screen, written to ``<tmp>/timings.json`` and printed.

Never runs ``playwright install``: it uses /usr/bin/chromium and Playwright's bundled driver.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.server import proc_stat, streamlit_server

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "assets" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 1440

pytestmark = pytest.mark.e2e


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux), to tell the app's own cost from a busy machine's."""
    try:
        return proc_stat(pid)[0]
    except (OSError, ValueError, IndexError):
        return None


def _fallback_model(home: Path, out: Path) -> None:
    """For a checkout without assets/demo_model: a quick model on the demo corpus the app will use."""
    import dataclasses

    from nram_core.config import preset
    from nram_core.data.layout import resolve_layout
    from nram_core.synth import generate
    from nram_core.train import Trainer, prepare_run

    corpus_dir = generate(home / "demo" / "seed-0", scale="demo", seed=0)
    model_cfg, train_cfg = preset("demo")
    train_cfg = dataclasses.replace(train_cfg, epochs=1, max_steps=30, max_impressions=2000, max_dev_impressions=200)
    Trainer(**prepare_run(resolve_layout(corpus_dir), model_cfg, train_cfg).trainer_args(), run_dir=out).fit()


@contextlib.contextmanager
def _streamlit(tmp_path_factory, **extra_env):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
    home = tmp_path_factory.mktemp("e2e_home")
    env = {**os.environ, "NRAM_HOME": str(home)}
    for name in ("NRAM_DATA_DIRS", "NRAM_MIND_BASE_URL", "NRAM_DEMO_MODEL", "NRAM_PUBLIC"):
        env.pop(name, None)
    env.update(extra_env)
    if not (REPO / "assets" / "demo_model" / "model.safetensors").is_file():
        model = tmp_path_factory.mktemp("model") / "demo_model"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NRAM_HOME", str(home))
            _fallback_model(home, model)
        env["NRAM_DEMO_MODEL"] = str(model)
    started = time.perf_counter()
    with (home / "streamlit.log").open("w") as log, streamlit_server(env, log) as (url, proc):
        yield {"url": url, "home": home, "started": started, "log": home / "streamlit.log", "pid": proc.pid}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with _streamlit(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def public_server(tmp_path_factory):
    """The studio as the Procfile hosts it: NRAM_PUBLIC=1."""
    with _streamlit(tmp_path_factory, NRAM_PUBLIC="1") as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_idle(page, timeout: float = 60_000) -> None:
    """Wait until the script run is over (no 'Running…' widget) and lazy elements are drawn (no skeletons)."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                           " && !document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=timeout)
    page.wait_for_timeout(300)


def no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, page.locator(
        "[data-testid='stException']").first.inner_text()


def shoot(page, name: str, tmp_dir: Path) -> None:
    """Full-page screenshot: Streamlit scrolls inside its main area, so grow the viewport to fit."""
    height = page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                           " return m ? m.scrollHeight : 900; }")
    page.set_viewport_size({"width": WIDTH, "height": int(min(max(900, height), 5000))})
    page.wait_for_timeout(1200)  # charts resize
    path = tmp_dir / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("NRAM_UPDATE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SHOTS / f"{name}.png")
    page.set_viewport_size({"width": WIDTH, "height": 900})


def _short_history_user(behaviors: Path) -> tuple[str, int]:
    """A user of the split whose every impression comes with the same 1 to 3 clicks of history."""
    lengths: dict[str, set[int]] = {}
    for line in behaviors.read_text(encoding="utf-8").splitlines():
        _, user, _, history, _ = line.split("\t")
        lengths.setdefault(user, set()).add(len(history.split()))
    return next((user, n.pop()) for user, n in sorted(lengths.items()) if len(n) == 1 and 1 <= min(n) <= 3)


def go(page, title: str, until: str) -> None:
    """Open a page from the sidebar and wait for ``until``, a text near the end of that page."""
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=60_000)
    page.get_by_text(until).first.wait_for(timeout=60_000)
    wait_idle(page)
    no_exception(page)


def test_walk_every_page(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    timings: dict[str, float] = {}
    # Fully offline: every request goes to the local server, and the browser logs no error.
    outside: list[str] = []
    console_errors: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((server["url"], "data:", "blob:", "about:"))
            else outside.append(r.url))
    # Opened at a page's URL, Streamlit's frontend first probes /PAGE/_stcore/health and host-config
    # to find its base path; the 404s of those probes are its design, not an error of this app.
    probe = re.compile(r"/[\w-]+/_stcore/(health|host-config)$")
    page.on("console", lambda m: console_errors.append(f"{m.text} ({m.location.get('url')})")
            if m.type == "error" and not probe.search(m.location.get("url") or "") else None)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
            if r.status >= 400 and not probe.search(r.url) else None)

    # ---- Overview: cold start on a fresh NRAM_HOME ------------------------------------------------------
    page.goto(server["url"], timeout=120_000)
    page.get_by_role("heading", name="Overview", exact=True).wait_for(timeout=120_000)
    page.get_by_text("Model card").wait_for(timeout=120_000)
    page.locator("[data-testid='stMetricLabel']", has_text="Impressions").first.wait_for(timeout=120_000)
    timings["cold_start_to_overview_s"] = time.perf_counter() - server["started"]
    timings["server_cpu_s_to_overview"] = _cpu_seconds(server["pid"])
    timings["load_average_1min"] = os.getloadavg()[0]
    wait_idle(page)
    no_exception(page)
    assert (server["home"] / "demo" / "seed-0" / "truth.json").is_file()
    body = page.inner_text("body")
    for text in ("News per category", "History length per user", "Impressions per day",
                 "Click-through rate by category", "Rows skipped while reading", "Parameters"):
        assert text in body, text
    assert page.locator("[data-testid='stVegaLiteChart']").count() >= 4
    assert page.get_by_role("combobox", name="Model").input_value().startswith("Demo model (shipped)")
    assert page.get_by_role("combobox", name="Dataset").input_value().startswith("Demo corpus")
    # the per-user AUC distribution: scored in the background, then the app reruns with the typical user
    page.get_by_text("their AUC: median").wait_for(timeout=120_000)
    timings["cold_start_to_user_auc_s"] = time.perf_counter() - server["started"]
    wait_idle(page)
    no_exception(page)
    page.get_by_role("button", name="Compute the beyond-accuracy figures (seconds)").click()
    page.get_by_text("more personal than popularity").wait_for(timeout=60_000)
    wait_idle(page)
    no_exception(page)
    shoot(page, "overview", tmp_path)

    # ---- Recommendations --------------------------------------------------------------------------------
    t = time.perf_counter()
    go(page, "Recommendations", "true clicks at rank")
    timings["recommendations_s"] = time.perf_counter() - t
    body = page.inner_text("body")
    assert "History:" in body and "nDCG@10" in body and "AUC" in body
    assert "and the default user" in body  # the default user is a typical one, and the page says so
    assert page.locator("[data-testid='stDataFrame']").count() >= 2
    shoot(page, "recommendations", tmp_path)

    # ---- Export: one HTML file that renders in Chromium with every request refused ------------------------
    # The button builds the file on the server when pressed (a callable); a click that lands while the
    # page re-lays out after the screenshot's resize can be lost, so the page settles first, and a
    # second press is allowed (and counted) if no download starts.
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    wait_idle(page)
    export = page.get_by_role("button", name="Export this view (HTML)")
    for attempt in (1, 2):
        try:
            with page.expect_download(timeout=45_000) as download:
                export.scroll_into_view_if_needed()
                export.click()
            break
        except PlaywrightTimeoutError:
            no_exception(page)
            if attempt == 2:
                raise
    timings["export_presses"] = attempt
    exported = tmp_path / download.value.suggested_filename
    download.value.save_as(exported)
    offline = browser.new_page(viewport={"width": WIDTH, "height": 900})
    fetched: list[str] = []

    def refuse(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            fetched.append(route.request.url)
            route.abort()

    offline.route("**/*", refuse)
    offline.goto(exported.as_uri())
    offline.get_by_text("sum of the contributions").wait_for(timeout=10_000)
    text = offline.inner_text("body")
    assert "Recommendations for user" in text and "✓" in text and "attention" in text
    assert "most-attended words" in text
    assert not fetched, fetched
    shoot(offline, "export", tmp_path)
    offline.close()
    page.get_by_role("radio", name="Catalog").click()
    page.get_by_text("Score distribution over the whole catalog").wait_for(timeout=30_000)
    wait_idle(page)
    no_exception(page)
    shoot(page, "recommendations_catalog", tmp_path)

    # ---- a user picked by how the model does: the worst one, with the figure --------------------------------
    page.get_by_role("button", name="Worst", exact=True).click()
    page.get_by_text("is the worst user by the model's AUC").first.wait_for(timeout=60_000)
    wait_idle(page)
    no_exception(page)
    assert "and the default user" not in page.inner_text("body")

    # ---- Attention ---------------------------------------------------------------------------------------
    t = time.perf_counter()
    go(page, "Attention", "What each head looks at across the split")
    timings["attention_s"] = time.perf_counter() - t
    body = page.inner_text("body")
    assert "Self-attention inside a title" in body
    assert "heads mostly attend to one common token" in body  # the demo model's heads all look at 'the'
    assert "Σ per-click contributions" in body and "Score (model)" in body
    assert "Is the shading faithful? Remove the words it points at" in body
    assert "most-attended words" in body and "Gradient attribution" in body
    assert "uniform (1/n) or less" in body and "all attention on it" in body
    assert page.locator("[data-testid='stPlotlyChart']").count() >= 3
    values = page.locator("[data-testid='stMetricValue']").all_inner_texts()
    assert abs(float(values[0]) - float(values[1])) < 1e-4, values  # score == sum of contributions
    page.get_by_text("Mark the topical words of truth.json").click()
    wait_idle(page)
    assert page.locator("span[style*='underline']").count() > 0
    page.get_by_text("Hide stop words in the heatmap").click()
    page.get_by_text(re.compile(r"\d+ of \d+ words hidden: ")).wait_for(timeout=30_000)
    wait_idle(page)
    no_exception(page)
    shoot(page, "attention", tmp_path)

    # ---- What-if: remove one click ---------------------------------------------------------------------
    go(page, "What-if", "candidates changed rank")
    assert "0 click(s) removed" in page.inner_text("body")
    page.locator("[data-testid='stButtonGroup']").first.locator("button[data-variant]").first.click()
    page.get_by_text("1 click(s) removed").wait_for(timeout=30_000)
    wait_idle(page)
    no_exception(page)
    # kept clicks are the highlighted pills: drawn in the theme's blue, not in a red that reads "removed"
    borders = page.eval_on_selector_all("[data-testid='stButtonGroup'] button",
                                        "els => els.map(e => getComputedStyle(e).borderColor)")
    rgb = [tuple(int(v) for v in re.findall(r"\d+", colour)[:3]) for colour in borders]
    assert any(b > r + 50 for r, g, b in rgb), borders[:4]  # kept: the theme's blue
    assert not any(r > b + 50 for r, g, b in rgb), borders[:4]  # nothing red, which would read "removed"
    shoot(page, "whatif", tmp_path)

    # ---- News map: the projection with the user's clicks and recommendations -------------------------------
    go(page, "News map", "a recommendation close to the clicks")
    assert page.locator("[data-testid='stPlotlyChart']").count() >= 1
    shoot(page, "map", tmp_path)

    # ---- Train: a tiny run, watched live, then in the model picker ------------------------------------------
    go(page, "Train", "All runs")
    # exact labels: every form field also has a "Help for <label>" button naming its command-line twin
    page.get_by_label("Run name").fill("e2e tiny")
    page.get_by_label("Epochs", exact=True).fill("1")
    page.get_by_label("Batch size", exact=True).fill("8")
    page.get_by_label("Max steps (0 = no limit)", exact=True).fill("12")
    page.get_by_label("Cap on train impressions (0 = all)", exact=True).fill("40")
    page.get_by_label("Cap on dev impressions per evaluation (0 = all)", exact=True).fill("40")
    # the paper's question: NRAM without self-attention, the ablation Compare sets beside the shipped model
    self_attention = page.get_by_role("checkbox", name="Self-attention", exact=True)
    assert self_attention.is_checked()
    self_attention.uncheck(force=True)  # Streamlit draws its own box over the hidden input
    assert not self_attention.is_checked()
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Finished in").first.wait_for(timeout=180_000)  # polled by the st.fragment
    wait_idle(page)
    no_exception(page)
    assert any(p.name.startswith("e2e-tiny-") for p in (server["home"] / "runs").iterdir())
    page.get_by_role("combobox", name="Model").click()
    page.get_by_role("option", name=re.compile("e2e-tiny")).wait_for(timeout=10_000)  # in the model picker
    page.keyboard.press("Escape")
    shoot(page, "train", tmp_path)
    # "Use this model" sits in a fragment: the sidebar must switch, and stay switched on another page
    page.get_by_role("button", name="Use this model").click()
    model_box = page.get_by_role("combobox", name="Model")
    deadline = time.time() + 30
    while "e2e-tiny" not in model_box.input_value() and time.time() < deadline:
        page.wait_for_timeout(250)
    wait_idle(page)
    go(page, "Overview", "Model card")
    assert "e2e-tiny" in page.get_by_role("combobox", name="Model").input_value()

    # ---- Compare: the shipped model against the run just trained, on one impression ------------------------
    go(page, "Compare", "sit at another rank in B")
    page.get_by_role("combobox", name="Compare the sidebar's model with").click()
    page.get_by_role("option", name=re.compile("Demo model")).first.click()
    wait_idle(page)
    no_exception(page)
    body = page.inner_text("body")
    assert "AUC: A → B" in body
    assert "Settings that differ" in body and "self_attention" in body  # the ablation, said as such
    assert "dev impressions" in body  # each model's AUC says on how many impressions it was measured
    shoot(page, "compare", tmp_path)

    # ---- Data: a bad folder is refused with a clear message -----------------------------------------------
    go(page, "Data", "Register a folder")
    page.get_by_label("Folder path (absolute)").fill(str(tmp_path / "not-a-mind-folder"))
    page.get_by_role("button", name="Register", exact=True).click()
    page.get_by_text("Not registered").wait_for(timeout=30_000)
    wait_idle(page)
    no_exception(page)
    assert "no such file or folder" in page.inner_text("body")
    shoot(page, "data", tmp_path)

    # ---- an unknown user id typed into the picker ----------------------------------------------------------
    go(page, "Recommendations", "Score distribution over the whole catalog")  # the mode chosen earlier stuck
    user_box = page.get_by_role("combobox", name="User id")
    user_box.click()
    user_box.fill("U-nobody")
    page.keyboard.press("Enter")
    page.get_by_text("Unknown user id 'U-nobody'").first.wait_for(timeout=30_000)
    no_exception(page)

    # ---- a short history gets a short table, not a column of blank rows -----------------------------------
    short_user, clicks = _short_history_user(server["home"] / "demo" / "seed-0" / "dev" / "behaviors.tsv")
    user_box = page.get_by_role("combobox", name="User id")
    user_box.click()
    user_box.fill(short_user)
    page.keyboard.press("Enter")
    page.get_by_text(f"History: {clicks} clicked news").wait_for(timeout=30_000)
    wait_idle(page)
    table = page.locator("[data-testid='stExpander'] [data-testid='stDataFrame']").first.bounding_box()
    row = 36  # the grid's header and row height (px), as app/views/recommendations.py sizes it
    assert table["height"] <= row * (clicks + 1) + 8, (short_user, clicks, table)

    # ---- every page opens by its own URL, and the root lands on the Overview's ----------------------------
    for path, title in (("overview", "Overview"), ("recommendations", "Recommendations"), ("attention", "Attention"),
                        ("what-if", "What-if"), ("map", "News map"), ("compare", "Compare"),
                        ("train", "Train"), ("experiments", "Experiments"), ("data", "Data")):
        page.goto(f"{server['url']}/{path}", timeout=60_000)
        page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=60_000)
        wait_idle(page)
        no_exception(page)
        assert "Page not found" not in page.inner_text("body"), path
    page.goto(server["url"], timeout=60_000)
    page.get_by_role("heading", name="Overview", exact=True).first.wait_for(timeout=60_000)
    page.wait_for_url(re.compile(r"/overview$"), timeout=30_000)

    page.close()
    assert not outside, f"requests that left 127.0.0.1: {outside[:5]}"
    assert not console_errors and not failed, f"browser console errors: {console_errors[:5]}; failed: {failed[:5]}"
    (tmp_path / "timings.json").write_text(json.dumps(timings, indent=2))
    print("e2e timings:", json.dumps(timings))
    assert "Traceback" not in server["log"].read_text()


def test_public_mode_in_a_browser(public_server, browser):
    """Every page of a public server: no control that downloads, registers, trains or runs a suite,
    no absolute server path, no request off the host, no console error."""
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((public_server["url"], "data:", "blob:", "about:"))
            else outside.append(r.url))
    page.goto(public_server["url"], timeout=120_000)
    page.get_by_role("heading", name="Overview", exact=True).wait_for(timeout=120_000)
    page.get_by_text("Model card").wait_for(timeout=120_000)
    for title, until in (("Overview", "Model card"), ("Recommendations", "true clicks at rank"),
                         ("Attention", "Self-attention inside a title"), ("What-if", "candidates changed rank"),
                         ("Train", "All runs"), ("Experiments", "public demo server"),
                         ("Data", "public demo server")):
        go(page, title, until)
        body = page.inner_text("body")
        for button in ("Start training", "Run suite", "Download and register"):
            assert page.get_by_role("button", name=button).count() == 0, (title, button)
        assert page.get_by_role("button", name="Register", exact=True).count() == 0, title
        leaked = re.findall(r"(?<![\w.])/(?:tmp|work|root|home)/[\w./-]+", body) + \
            ([str(REPO)] if str(REPO) in body else [])
        assert not leaked, (title, leaked[:3])
    page.close()
    assert not outside, outside[:5]


FAMILY_ATTENTION = {"lstur": "LSTUR has no per-click attention", "naml": "View attention: how much title",
                    "npa": "as the unknown user reads it"}


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory, demo_corpus):
    """A tiny CLI run of NRAM and of each other family on the demo corpus (the one the app generates)."""
    root = tmp_path_factory.mktemp("family_runs")
    home = tmp_path_factory.mktemp("family_home")
    for kind in ("nram", *FAMILY_ATTENTION):
        subprocess.run([sys.executable, "-m", "nram_core", "train", "--data", str(demo_corpus), "--model", kind,
                        "--out", str(root / kind), "--preset", "demo", "--epochs", "1", "--max-impressions", "100",
                        "--max-dev-impressions", "50", "--word-vectors", "none", "--no-progress"],
                       check=True, cwd=REPO, capture_output=True, env={**os.environ, "NRAM_HOME": str(home)})
    return root


def test_each_family_in_a_browser_attention_and_nram_beside_naml_on_compare(tmp_path_factory, family_runs, browser,
                                                                             tmp_path):
    """Each family's own Attention view, and Compare ranking one impression with NRAM and NAML side by side."""
    with _streamlit(tmp_path_factory, NRAM_RUNS_DIRS=str(family_runs)) as server:
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        page.goto(server["url"], timeout=120_000)
        page.get_by_text("Model card").wait_for(timeout=120_000)
        wait_idle(page, 120_000)

        def use(kind: str) -> None:
            page.get_by_role("combobox", name="Model", exact=True).click()
            page.get_by_role("option", name=re.compile(f"› {kind} ")).first.click()
            wait_idle(page, 120_000)

        for kind, marker in FAMILY_ATTENTION.items():
            use(kind)
            go(page, "Attention", marker)
            page.get_by_text(f"{kind.upper()} has no self-attention inside a title").wait_for(timeout=60_000)
            shoot(page, f"attention-{kind}", tmp_path)
        use("nram")
        go(page, "Compare", "sit at another rank in B")
        page.get_by_role("combobox", name="Compare the sidebar's model with").click()
        page.get_by_role("option", name=re.compile("› naml ")).first.click()
        page.get_by_text(re.compile(r"\(NAML\)\. Both rank the same candidates")).wait_for(timeout=60_000)
        wait_idle(page, 120_000)
        no_exception(page)
        shoot(page, "compare-nram-naml", tmp_path)
