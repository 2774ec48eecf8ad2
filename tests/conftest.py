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


def recommit_best(run_dir) -> None:
    """Record in state.json the SHA-256 of the best weights as they are now, as a run that trained into
    them would have (``checkpoint.load_run`` refuses weights other than the committed ones): for
    tests that set weights by hand."""
    import json

    from nram_core.checkpoint import file_sha256
    from nram_core.run_info import committed_weights

    path = Path(run_dir) / "state.json"
    state = json.loads(path.read_text())
    state["files"]["best"]["sha256"] = file_sha256(committed_weights(Path(run_dir), state))
    path.write_text(json.dumps(state))
