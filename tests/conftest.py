from pathlib import Path

import pytest

MIND_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mind-sample"


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
        pytest.skip(f"{MIND_SAMPLE} is not present in this checkout")
    return MIND_SAMPLE
