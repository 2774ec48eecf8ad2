"""Every model in one picker, and users picked by how the model does (issue 26).

The model picker lists CLI runs from ``NRAM_RUNS_DIRS`` and ``-- --runs DIR``, the experiment
suites' runs by suite, model and seed, and hostile or half-written run folders as unusable with
their one-line reason. The user picker picks the best, a typical or the worst user by the model's
AUC on their scorable impressions; the default user is a typical one. The runs are trained here by
the CLI, tiny (one epoch on a hundred impressions).
"""
from __future__ import annotations

import doctest
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from nram_core import user_quality  # noqa: E402
from nram_core.user_quality import per_user_auc, pick_users  # noqa: E402

from studio_apptest import APP, REPO, SHIPPED, assert_clean, ctx  # noqa: E402

TIMEOUT = 180  # the first page waits for every user's AUC
TINY = ["--preset", "demo", "--epochs", "1", "--max-impressions", "100", "--max-dev-impressions", "50",
        "--no-progress"]


def cli(*args: str, home: Path) -> None:
    """``python -m nram_core ARGS`` with its own NRAM_HOME, as a user of the README would run it."""
    done = subprocess.run([sys.executable, "-m", "nram_core", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO, env={**os.environ, "NRAM_HOME": str(home)})
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory, demo_corpus):
    """The app's NRAM_HOME, with a suite run by the CLI into its default folder (NRAM_HOME/experiments)."""
    if not (SHIPPED / "model.safetensors").is_file():
        pytest.skip("these tests serve the shipped demo model (assets/demo_model)")
    home = tmp_path_factory.mktemp("picker_home")
    cli("experiment", "--data", str(demo_corpus), "--suite", "ablation", "--seeds", "1", *TINY, home=home)
    return home


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, demo_corpus):
    """A folder of runs outside NRAM_HOME, with one CLI run in it (``train --out runs/demo``)."""
    root = tmp_path_factory.mktemp("cli_runs")
    cli("train", "--data", str(demo_corpus), "--out", str(root / "demo"), "--word-vectors", "none", *TINY,
        home=tmp_path_factory.mktemp("cli_home"))
    return root


@pytest.fixture
def app_home(studio_home, monkeypatch):
    """Instead of tests/conftest.py's per-test home: the app tests share one home, as one app would."""
    monkeypatch.setenv("NRAM_HOME", str(studio_home))
    monkeypatch.delenv("NRAM_DEMO_MODEL", raising=False)
    monkeypatch.delenv("NRAM_RUNS_DIRS", raising=False)
    monkeypatch.delenv("NRAM_DATA_DIRS", raising=False)
    monkeypatch.setattr(sys, "argv", ["main.py"])
    return studio_home


def new_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert_clean(at)
    return at


def picker(at: AppTest) -> dict[str, str]:
    """The model picker's options: folder -> the label it shows, in the picker's order."""
    box = at.selectbox(key="model")
    keys = [m.key for m in ctx(at).models + ctx(at).unusable]
    assert list(box.options) == [box.format_func(key) for key in keys]  # AppTest lists the labels
    return {key: box.format_func(key) for key in keys}


def choose_model(at: AppTest, folder: Path) -> AppTest:
    at.selectbox(key="model").set_value(str(folder.resolve())).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def text_of(at: AppTest, *kinds: str) -> str:
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


# ---- the model picker ----------------------------------------------------------------------------------------
@pytest.mark.usefixtures("app_home")
def test_a_cli_run_in_an_nram_runs_dirs_folder_is_in_the_model_picker_and_serves(cli_runs, monkeypatch):
    monkeypatch.setenv("NRAM_RUNS_DIRS", os.pathsep.join([str(cli_runs), str(cli_runs / "no-such-folder")]))
    at = new_app()
    options = picker(at)
    run = cli_runs / "demo"
    label = options[str(run.resolve())]
    assert label.startswith(f"NRAM_RUNS_DIRS {cli_runs.name} › demo · AUC ") and "(50 dev impressions)" in label
    assert list(options)[0] == str(SHIPPED.resolve()) and at.selectbox(key="model").value == str(SHIPPED.resolve())
    missing = options[str((cli_runs / "no-such-folder").resolve())]  # a folder in the list that is not there
    assert missing.startswith("⚠") and "no such folder" in missing
    choose_model(at, run)
    assert_clean(at)
    c = ctx(at)
    assert c.model.path == run.resolve() and c.model.source == "env" and c.info is not None
    at.switch_page("views/recommendations.py").run()
    assert_clean(at)
    assert ctx(at).rec.identity[0] == str(run.resolve())  # the CLI run ranks the page's impression


@pytest.mark.usefixtures("app_home")
def test_runs_given_as_streamlit_arguments_join_the_picker(cli_runs, monkeypatch):
    """``streamlit run app/main.py -- --runs DIR`` adds DIR (the arguments after ``--`` reach sys.argv)."""
    monkeypatch.setattr(sys, "argv", ["main.py", "--runs", str(cli_runs)])
    at = new_app()
    assert picker(at)[str((cli_runs / "demo").resolve())].startswith(f"--runs {cli_runs.name} › demo")


@pytest.mark.usefixtures("app_home")
def test_a_suites_runs_are_in_the_picker_by_suite_model_and_seed(studio_home):
    at = new_app()
    options = picker(at)
    suite = next((studio_home / "experiments").iterdir())
    runs = {key: label for key, label in options.items() if Path(key).is_relative_to(suite)}
    names = [label.split(" · ")[0] for label in runs.values()]
    assert names == [f"suite {suite.name} › {model}" for model in
                     ("nram", "nram_no_self_attention", "nram_categories", "nram_no_residual", "nram_no_vectors")]
    assert all(" · seed 0 · AUC " in label and not label.startswith("⚠") for label in runs.values())
    ablation = suite / "runs" / "nram_no_self_attention" / "seed0"
    choose_model(at, ablation)
    assert_clean(at)
    assert ctx(at).info.model_config.self_attention is False
    result = json.loads((ablation / "result.json").read_text())
    assert f"AUC {result['metrics']['auc']:.3f}" in ctx(at).model.label


def _hostile_runs(root: Path) -> dict[str, str]:
    """Run folders as an interrupted copy, a crash or a hostile host leaves them; name -> its reason."""
    def copy(name: str) -> Path:
        return Path(shutil.copytree(SHIPPED, root / name))

    (copy("bad-json") / "config.json").write_text('{"model": ')
    (copy("no-weights") / "model.safetensors").unlink()
    (copy("deep-nesting") / "state.json").write_text("[" * 5000 + "]" * 5000)
    (copy("no-commit") / "state.json").unlink()
    cut = copy("cut-weights") / "model.safetensors"
    cut.write_bytes(cut.read_bytes()[:1000])
    (root / "first-epoch").mkdir()
    (root / "first-epoch" / "config.json").write_text((SHIPPED / "config.json").read_text())
    return {"bad-json": "not valid JSON", "no-weights": "no model.safetensors", "deep-nesting": "nested deeper",
            "no-commit": "no state.json", "cut-weights": "not a complete safetensors file",
            "first-epoch": "vocab.json"}


@pytest.mark.usefixtures("app_home")
def test_hostile_or_half_written_run_folders_are_listed_as_unusable_with_their_reason(tmp_path, monkeypatch):
    reasons = _hostile_runs(tmp_path / "runs")
    monkeypatch.setenv("NRAM_RUNS_DIRS", str(tmp_path / "runs"))
    at = new_app()  # nothing crashes, and no error shows while a usable model is chosen
    options = picker(at)
    for name, reason in reasons.items():
        label = options[str((tmp_path / "runs" / name).resolve())]
        assert label.startswith(f"⚠ NRAM_RUNS_DIRS runs › {name}: ") and reason in label, label
        assert "\n" not in label and "Traceback" not in label
    assert not any(m.ok for m in ctx(at).unusable) and len(ctx(at).unusable) == len(reasons)
    assert all(not Path(m.key).is_relative_to(tmp_path) for m in ctx(at).models)  # never among the usable
    choose_model(at, tmp_path / "runs" / "bad-json")  # picking one explains itself on every page
    assert not at.exception
    assert any("not valid JSON" in e.value for e in at.error)
    assert any("not valid JSON" in w.value for w in at.sidebar.warning)
    at.switch_page("views/recommendations.py").run()
    assert not at.exception and any("not valid JSON" in e.value for e in at.error)


# ---- users picked by how the model does --------------------------------------------------------------------
def pair_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The share of (click, non-click) pairs in which the click ranks higher; between equal scores the
    candidate listed first ranks higher (the metrics' tie rule)."""
    wins = [scores[i] > scores[j] or (scores[i] == scores[j] and i < j)
            for i in np.flatnonzero(labels > 0) for j in np.flatnonzero(labels <= 0)]
    return float(np.mean(wins))


def plain_user_auc(c) -> tuple[dict[str, float], dict[str, int]]:
    """Per user, the mean AUC of their scorable impressions, one impression at a time, the recommender
    scoring each impression on its own."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for impression in range(c.split.num_impressions):
        candidates, labels = c.split.candidates_of(impression)
        if not (labels > 0).any() or not (labels <= 0).any():
            continue
        auc = pair_auc(labels, c.rec.score(c.split.history_of(impression), candidates))
        user = c.split.user_ids[int(c.split.users[impression])]
        sums[user] = sums.get(user, 0.0) + auc
        counts[user] = counts.get(user, 0) + 1
    return {u: sums[u] / counts[u] for u in sums}, counts


@pytest.mark.usefixtures("app_home")
def test_the_default_user_is_a_typical_one_and_the_worst_is_one_click_away():
    at = new_app()
    at.switch_page("views/recommendations.py").run()
    assert_clean(at)
    c = ctx(at)
    assert c.pick == "typical" and c.quality is not None
    assert any("a typical (median) user by the model's AUC and the default user" in t.value for t in at.caption)
    plain, counts = plain_user_auc(c)
    eligible = [u for u in plain if c.users.set_index("user").loc[u, "history"] > 0]  # cold users tie: left out
    by_auc = sorted(eligible, key=lambda u: plain[u])
    assert abs(plain[c.user] - plain[by_auc[(len(by_auc) - 1) // 2]]) < 1e-6  # the median user's AUC

    at.button(key="pick_worst").click().run()
    assert_clean(at)
    c = ctx(at)
    worst = min(plain[u] for u in eligible)
    assert c.pick == "worst" and abs(plain[c.user] - worst) < 1e-6
    assert counts[c.user] == max(counts[u] for u in eligible if abs(plain[u] - worst) < 1e-6)  # most evidence
    figure = f"AUC {plain[c.user]:.3f} on {counts[c.user]:,} scorable impression"
    assert any(f"{c.user} is the worst user by the model's AUC: {figure}" in t.value for t in at.sidebar.caption)
    assert any(figure in t.value for t in at.caption), "the page says it too"
    at.button(key="pick_best").click().run()
    assert ctx(at).pick == "best" and abs(plain[ctx(at).user] - max(plain[u] for u in eligible)) < 1e-6


@pytest.mark.usefixtures("app_home")
def test_the_overview_shows_the_distribution_of_per_user_auc():
    at = new_app()
    at.switch_page("views/recommendations.py").run()  # a page that needs the per-user AUC, which the
    at.switch_page("views/overview.py").run()  # Overview otherwise awaits from the background, polling
    assert_clean(at)
    c = ctx(at)
    assert "How the model does per user" in [s.value for s in at.subheader]
    specs = [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    assert any("AUC of a user" in json.dumps(s) for s in specs)
    scored = int(c.quality.scored.sum())
    assert 0 < scored <= len(c.split.user_ids)
    assert any(t.value.startswith(f"{scored:,} of {len(c.split.user_ids):,} users have an impression with both")
               and "their AUC: median" in t.value for t in at.caption)
    categories = next(s for s in specs if s.get("encoding", {}).get("x", {}).get("field") == "category")
    assert categories["encoding"]["x"]["axis"]["labelOverlap"] is False  # every category bar labelled
    history = next(s for s in specs if "clicks in history" in json.dumps(s.get("encoding", {})))
    assert history["encoding"]["x"]["scale"]["nice"] is False  # the axis spans the bins, from 0, not -10
    assert history["encoding"]["y"]["field"] == "count"


# ---- the core computation ---------------------------------------------------------------------------------------
def test_per_user_auc_is_the_mean_of_each_users_impression_aucs():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 9, size=300)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    labels = (rng.random(offsets[-1]) < 0.3).astype(np.int64)
    scores = rng.normal(size=offsets[-1]).astype(np.float32)
    users = rng.integers(0, 40, size=300)
    quality = per_user_auc(labels, scores, offsets, users=users, num_users=45)
    expected: dict[int, list[float]] = {}
    for i in range(300):
        y, s = labels[offsets[i]: offsets[i + 1]], scores[offsets[i]: offsets[i + 1]]
        pos, neg = s[y == 1], s[y == 0]
        if len(pos) and len(neg):
            expected.setdefault(int(users[i]), []).append(float(np.mean(pos[:, None] > neg[None, :])))
    for user in range(45):
        got = expected.get(user, [])
        assert quality.impressions[user] == len(got)
        if got:
            assert abs(quality.auc[user] - np.mean(got)) < 1e-12
        else:
            assert np.isnan(quality.auc[user])
    picks = pick_users(quality.auc, quality.impressions)
    scored = [u for u in range(45) if expected.get(u)]
    means = sorted(np.mean(expected[u]) for u in scored)
    assert np.isclose(quality.auc[picks["best"]], means[-1]) and np.isclose(quality.auc[picks["worst"]], means[0])
    assert np.isclose(quality.auc[picks["typical"]], means[(len(means) - 1) // 2])


def test_user_quality_docstring_examples_hold():
    result = doctest.testmod(user_quality)
    assert result.attempted > 0 and result.failed == 0
