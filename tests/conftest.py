import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The thin sample of real MIND rows lives beside the repository, never in it (MIND's licence).
MIND_SAMPLE = REPO.parent / "shared" / "data" / "mind-sample"
APP_DIR = REPO / "app"
if str(APP_DIR) not in sys.path:  # the app's helper package `studio`, as `streamlit run` sees it
    sys.path.insert(0, str(APP_DIR))


@pytest.fixture(autouse=True)
def isolated_nram_home(tmp_path_factory, monkeypatch):
    """Every test gets its own NRAM_HOME, so caches and runs never leak between tests."""
    home = tmp_path_factory.mktemp("nram_home")
    monkeypatch.setenv("NRAM_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The demo-scale synthetic corpus, seed 0, generated once per test session."""
    from nram_core.synth import generate

    return generate(tmp_path_factory.mktemp("demo") / "corpus", scale="demo", seed=0)


@pytest.fixture
def mind_sample():
    if not (MIND_SAMPLE / "train" / "news.tsv").is_file():
        pytest.skip(f"the MIND sample is absent: expected {MIND_SAMPLE}/train/news.tsv beside the repository "
                    "(../shared/data/mind-sample)")
    return MIND_SAMPLE
