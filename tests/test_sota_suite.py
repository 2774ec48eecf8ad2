"""The ``sota`` suite: NRAM beside NAML, LSTUR and NPA under one protocol (issue 27's done means: one epoch
on the demo corpus, one seed, every neural model at least 0.03 AUC above popularity)."""
from __future__ import annotations

import pytest

from nram_core.cli import main
from nram_core.config import FAMILY_SIZES, preset
from nram_core.experiments import read_records, suite_specs


def test_sota_lists_the_four_families_at_their_own_sizes_and_the_floors():
    for name in ("demo", "paper"):
        specs = {spec.name: spec for spec in suite_specs("sota", preset(name)[0], name)}
        assert list(specs) == ["nram", "naml", "lstur", "npa", "popularity", "random"]
        for kind in ("naml", "lstur", "npa"):
            assert dict(specs[kind].model) == FAMILY_SIZES[kind][name] and specs[kind].kind == kind
    assert {"naml", "lstur", "npa"} <= {spec.name for spec in suite_specs("all", preset("demo")[0])}


@pytest.mark.slow
def test_sota_suite_one_epoch_every_neural_model_beats_popularity(demo_corpus, tmp_path):
    out = tmp_path / "sota"
    code = main(["experiment", "--suite", "sota", "--data", str(demo_corpus), "--out", str(out), "--epochs", "1",
                 "--seeds", "1", "--no-progress"])
    assert code == 0
    records = {record["name"]: record for record in read_records(out)}
    assert set(records) == {"nram", "naml", "lstur", "npa", "popularity", "random"}
    popularity = records["popularity"]["metrics"]["auc"]
    for name in ("nram", "naml", "lstur", "npa"):
        record = records[name]
        assert record["kind"] == name and record["chosen_on"] == "validation"
        assert record["metrics"]["auc"] >= popularity + 0.03, (name, record["metrics"]["auc"], popularity)
    assert records["nram"]["segments"]["cold (0)"]["auc"] > 0.5  # the learned empty-history vector
    assert (out / "results.md").read_text().count("NAML") >= 1


def test_validation_zero_keeps_the_old_protocol(demo_corpus, tmp_path, monkeypatch):
    """``--validation 0``: each model trains on all of train and its last epoch is scored on dev, as before
    the held-out part: no epoch is chosen, and the record says so."""
    monkeypatch.setenv("NRAM_HOME", str(tmp_path / "home"))
    out = tmp_path / "sota0"
    code = main(["experiment", "--suite", "sota", "--data", str(demo_corpus), "--out", str(out), "--no-progress",
                 "--epochs", "1", "--seeds", "1", "--max-impressions", "40", "--max-dev-impressions", "60",
                 "--batch-size", "32", "--validation", "0"])
    assert code == 0
    records = {record["name"]: record for record in read_records(out)}
    for name in ("nram", "naml", "lstur", "npa"):
        assert records[name]["chosen_on"] is None and records[name]["epochs"] == 1, records[name]
