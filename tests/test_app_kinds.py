"""The studio takes a model of every family (issue 27): LSTUR, NAML and NPA runs, trained here by the CLI
(tiny: one epoch on a hundred impressions), serve the Recommendations (and its export), Attention,
What-if, News map and Compare pages; the Attention page shows each family's own attention (NAML's
views, NPA's personalized word attention beside the unknown user's, LSTUR's note that its GRU has no
per-click attention, with leave-one-out effects instead); Compare ranks one impression with NRAM and
another family side by side.
The dataset is the demo corpus with its dev split cut to a few hundred impressions, so that the per-user
AUC the sidebar waits for takes seconds for the families scored impression by impression."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from studio_apptest import APP, REPO, app_home, assert_clean, ctx, goto  # noqa: E402

pytestmark = pytest.mark.slow  # trains a run of each family (about 15 s each)
TIMEOUT = 240
DEV_IMPRESSIONS = 300
TINY = ["--preset", "demo", "--epochs", "1", "--max-impressions", "100", "--max-dev-impressions", "50",
        "--word-vectors", "none", "--no-progress"]
KINDS = ["nram"] + [kind for kind in ("lstur", "naml", "npa") if importlib.util.find_spec(f"nram_core.{kind}")]


def cli(*args: str, home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "nram_core", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO, env={**os.environ, "NRAM_HOME": str(home)})
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, demo_corpus) -> Path:
    """The demo corpus with a dev split of its first DEV_IMPRESSIONS impressions."""
    root = tmp_path_factory.mktemp("kinds_data") / "kinds-demo"
    shutil.copytree(demo_corpus / "train", root / "train")
    (root / "dev").mkdir()
    shutil.copy(demo_corpus / "dev" / "news.tsv", root / "dev" / "news.tsv")
    rows = (demo_corpus / "dev" / "behaviors.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "dev" / "behaviors.tsv").write_text("".join(rows[:DEV_IMPRESSIONS]), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus) -> Path:
    """A folder with one tiny CLI run of each family (``train --model KIND``)."""
    root = tmp_path_factory.mktemp("kinds_runs")
    home = tmp_path_factory.mktemp("kinds_cli_home")
    for kind in KINDS:
        cli("train", "--data", str(corpus), "--model", kind, "--out", str(root / kind), *TINY, home=home)
    return root


@pytest.fixture
def studio(tmp_path, corpus, runs, monkeypatch):
    """An app whose model picker lists the runs and whose dataset picker has the cut corpus, chosen."""
    monkeypatch.setattr(sys, "argv", ["main.py"])
    with app_home(tmp_path / "home", NRAM_RUNS_DIRS=str(runs), NRAM_DATA_DIRS=str(corpus)):
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        entry = next(d for d in ctx(at).datasets if d.root == corpus)
        at.selectbox(key="dataset").set_value(entry.key).run()
        at.radio(key="split").set_value("dev").run()
        assert_clean(at)
        yield at


def choose(at: AppTest, run: Path) -> AppTest:
    at.selectbox(key="model").set_value(str(run.resolve())).run()
    assert_clean(at)
    return at


def frame(at: AppTest, *columns: str, without: str = "\0"):
    """The first table with ``columns`` and not ``without`` (AppTest does not see st.dataframe keys)."""
    return next(df.value for df in at.dataframe if set(columns) <= set(df.value.columns)
                and without not in df.value.columns)


def page_text(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "header", "subheader")
                     for e in getattr(at, kind))


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "nram"])
def test_a_run_of_each_family_serves_the_pages_with_its_own_attention(studio, runs, kind):
    from studio.export import view_report

    at = choose(studio, runs / kind)
    goto(at, "recommendations")
    assert_clean(at)
    c = ctx(at)
    assert c.rec.kind == kind and c.rec.identity[0] == str((runs / kind).resolve())
    impression = int(at.selectbox(key="impression_choice").value)
    ranked = c.rec.rank_impression(impression)
    shown = frame(at, "rank", "clicked", "score")
    assert np.allclose(shown["score"].to_numpy(), ranked.scores, atol=1e-6)
    if c.rec.reads_users:  # the page says whether the model knows this user
        assert "reads who the user is" in page_text(at)
    exported = view_report(c, impression, ranked)  # what "Export this view (HTML)" downloads
    assert "<script" not in exported and "ranks first" in exported
    if kind == "lstur":  # a GRU: measured effects, no attention bars
        assert "no per-click attention" in exported and "effect on the score" in exported
        assert "class='bar'" not in exported
    else:  # the exact per-click split
        assert "sum of the contributions" in exported and "class='bar'" in exported
    at.segmented_control(key="rec_mode").set_value("Catalog").run()
    assert_clean(at)
    assert len(frame(at, "rank", "score", without="clicked")) == at.slider(key="catalog_top").value

    goto(at, "attention")
    assert_clean(at)
    text = page_text(at)
    assert "Word attention in every title" in text
    assert f"{kind.upper()} has no self-attention inside a title" in text  # the per-head views are NRAM's
    if kind == "lstur":
        assert "LSTUR has no per-click attention" in text and "GRU has no per-click attention" in text
        assert "User encoder: what each click changes" in text and "Σ per-click" not in text
    else:
        assert "User encoder: attention over the clicks" in text
        metrics = {m.label: float(m.value) for m in at.metric}
        assert abs(metrics["Σ per-click contributions"] - metrics["Score (model)"]) < 2e-6  # exact, to rounding
    if kind == "naml":
        assert "View attention: how much title, abstract and category weigh" in text
        assert "Candidate's abstract" in text
    if kind == "npa":
        assert "as the unknown user reads it" in text and "personalized" in text

    goto(at, "whatif")
    assert_clean(at)
    at.segmented_control(key="whatif_mode").set_value("Whole catalog").run()
    assert_clean(at)
    assert len(frame(at, "rank", "change", "score before")) == at.slider(key="whatif_top").value

    goto(at, "map")  # every news placed by its vector (NPA's: as the unknown user reads it)
    assert_clean(at)


@pytest.mark.parametrize("other", [k for k in ("naml", "lstur") if k in KINDS])
def test_compare_ranks_one_impression_with_nram_and_another_family(studio, runs, other):
    at = choose(studio, runs / "nram")
    goto(at, "compare")
    at.selectbox(key="compare_model").set_value(str((runs / other).resolve())).run()
    assert_clean(at)
    c = ctx(at)
    impression = int(at.selectbox(key="impression_choice").value)
    table = frame(at, "rank A", "rank B", "score B")
    second = next(m for m in c.models if m.key == str((runs / other).resolve()))
    rec_b = c.recommender_for(second)
    assert c.rec.kind == "nram" and rec_b.kind == other
    assert np.allclose(table["score A"].to_numpy(), c.rec.rank_impression(impression).scores, atol=1e-6)
    expected_b = rec_b.rank_impression(impression).score_of()
    in_a_order = c.rec.rank_impression(impression).rows  # the table lists A's ranking
    assert np.allclose(table["score B"].to_numpy(), [expected_b[int(r)] for r in in_a_order], atol=1e-6)
    assert f"({other.upper()})" in page_text(at)
