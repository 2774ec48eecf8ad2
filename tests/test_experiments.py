"""Experiment suites: the CLI writes every file, resumes without retraining, refuses other settings;
the Experiments page renders a finished suite (AppTest)."""
import csv
import json
import shutil
import time
from pathlib import Path

import pytest

from nram_core.cli import main
from nram_core.experiments import list_suites, read_records, suite_specs
from nram_core.config import preset

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"


def experiments_page():
    """The Experiments page inside the whole app (it reads the sidebar's datasets)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("views/experiments.py").run()
    return at
TINY_BUDGET = ["--epochs", "1", "--seeds", "1", "--max-impressions", "40", "--max-dev-impressions", "60",
               "--batch-size", "32"]


@pytest.fixture(scope="module")
def paper_suite(demo_corpus, tmp_path_factory, request):
    """``experiment --suite paper`` for one epoch on a tiny slice of the demo corpus."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NRAM_HOME", str(tmp_path_factory.mktemp("home")))
    request.addfinalizer(mp.undo)
    out = tmp_path_factory.mktemp("suites") / "paper"
    code = main(["experiment", "--suite", "paper", "--data", str(demo_corpus), "--out", str(out), "--no-progress",
                 *TINY_BUDGET])
    assert code == 0
    return out


def test_paper_suite_writes_all_its_files(paper_suite):
    for name in ("suite.json", "results.csv", "segments.csv", "results.md"):
        assert (paper_suite / name).is_file(), name
    models = {"nram", "dkn", "wide_deep", "popularity", "random"}
    assert {p.parent.parent.name for p in paper_suite.glob("runs/*/seed0/result.json")} == models
    with open(paper_suite / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["model"] for r in rows} == models
    for row in rows:
        assert 0.0 <= float(row["auc"]) <= 1.0 and int(row["impressions"]) == 60
        assert float(row["train_seconds"]) >= 0.0
    trained = {r["model"]: int(r["parameters"]) for r in rows}
    assert trained["popularity"] == trained["random"] == 0 and trained["dkn"] > 0
    with open(paper_suite / "segments.csv") as handle:
        segments = list(csv.DictReader(handle))
    assert {s["segment"] for s in segments} == {"cold (0)", "1-5", "6-20", ">20"}
    for model in models:
        assert sum(int(s["impressions"]) for s in segments if s["model"] == model) == 60
    report = (paper_suite / "results.md").read_text()
    assert "| Wide&Deep |" in report and "paper's ordering" in report and "AUC by user history length" in report
    # Each trained run keeps the vocabularies it was trained with.
    for name in ("vocab.json", "categories.json", "entities.json", "model.safetensors", "experiment.json"):
        assert (paper_suite / "runs" / "wide_deep" / "seed0" / name).is_file(), name


def test_rerun_skips_finished_models_and_redoes_an_unfinished_one(paper_suite, demo_corpus, capsys):
    results = {p.parent.parent.name: p for p in paper_suite.glob("runs/*/seed0/result.json")}
    stamps = {name: p.stat().st_mtime_ns for name, p in results.items()}
    results["dkn"].unlink()  # as if interrupted after training, before its evaluation was written
    capsys.readouterr()
    code = main(["experiment", "--suite", "paper", "--data", str(demo_corpus), "--out", str(paper_suite),
                 "--no-progress", *TINY_BUDGET])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("already done") == 4
    assert results["dkn"].is_file()
    for name, path in results.items():
        if name != "dkn":
            assert path.stat().st_mtime_ns == stamps[name], name
    # The DKN run resumed from its finished epoch instead of training again (metrics.jsonl is
    # rewritten from state.json, which still holds that one epoch).
    run = paper_suite / "runs" / "dkn" / "seed0"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["event"] for l in lines] == ["epoch", "final"]
    assert len(json.loads((run / "state.json").read_text())["history"]) == 1


def test_other_settings_in_the_same_folder_are_refused(paper_suite, demo_corpus, capsys):
    code = main(["experiment", "--suite", "paper", "--data", str(demo_corpus), "--out", str(paper_suite),
                 "--no-progress", "--epochs", "2", "--seeds", "1", "--max-impressions", "40"])
    assert code == 2
    assert "other settings" in capsys.readouterr().err


def test_a_rerun_with_other_runtime_settings_or_a_key_written_before_the_split_continues(paper_suite, demo_corpus):
    from nram_core.config import RuntimeConfig
    from nram_core.experiments import run_suite

    result = paper_suite / "runs" / "wide_deep" / "seed0" / "result.json"
    record = json.loads(result.read_text())
    kind, model, train = json.loads(record["run_key"])
    assert not {"num_workers", "eval_batch_size", "amp", "compile", "title_chunk"} & set(train)  # the recipe only
    # as keyed before RuntimeConfig: the runtime fields of that time inside the train config
    record["run_key"] = json.dumps([kind, model, {**train, "num_workers": 0, "eval_batch_size": 1024, "amp": True,
                                                  "compile": False}], sort_keys=True)
    result.write_text(json.dumps(record))
    seen = []
    run_suite(suite="paper", data=demo_corpus, out=paper_suite, epochs=1, seeds=1,
              train_overrides={"max_impressions": 40, "max_dev_impressions": 60, "batch_size": 32},
              runtime=RuntimeConfig(eval_batch_size=7, amp=False), progress=seen.append)
    assert sum(p.phase == "skipped" for p in seen) == 5
    data = json.loads((paper_suite / "runs" / "nram" / "seed0" / "config.json").read_text())["data"]
    assert data["preset"] == "demo" and data["synthetic"] == {"scale": "demo", "seed": 0}
    assert data["experiment"]["name"] == "nram" and data["dev"].endswith("dev")


def test_suite_settings_fail_before_any_data_is_read(demo_corpus, tmp_path):
    from nram_core.experiments import run_suite
    from nram_core.fileio import DataError

    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        run_suite(suite="paper", data=demo_corpus, out=tmp_path / "bad", train_overrides={"batch_size": 0})
    with pytest.raises(DataError, match=r"runtime settings are not train overrides.*\['num_workers'\]"):
        run_suite(suite="paper", data=demo_corpus, out=tmp_path / "bad", train_overrides={"num_workers": 2})
    assert not (tmp_path / "bad").exists()


def test_bad_suite_and_missing_data_are_one_line_errors(tmp_path, capsys):
    code = main(["experiment", "--suite", "paper", "--data", str(tmp_path / "nowhere")])
    assert code == 2 and "no such file" in capsys.readouterr().err


def test_suite_all_trains_identical_configurations_once():
    base = preset("demo")[0]
    names = [s.name for s in suite_specs("all", base)]
    assert len(names) == len(set(names))
    assert {"nram", "dkn", "wide_deep", "popularity", "random", "nram_heads1", "nram_heads15", "nram_k1", "nram_k8",
            "nram_no_self_attention", "nram_categories"} <= set(names)


def install_suite(suite: Path, home: Path) -> Path:
    dest = home / "experiments" / "paper-demo-test"
    shutil.copytree(suite, dest, ignore=shutil.ignore_patterns("*.safetensors", "optimizer*.pt"))
    return dest


def test_experiments_page_renders_a_finished_suite(paper_suite, tmp_path, monkeypatch):
    monkeypatch.setenv("NRAM_HOME", str(tmp_path))
    install_suite(paper_suite, tmp_path)
    assert [p.name for p in list_suites()] == ["paper-demo-test"]
    at = experiments_page()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Experiments"
    text = " ".join(m.value for m in at.markdown)
    assert "paper's ordering" in text
    assert len(at.dataframe) >= 2  # the results table and the per-segment AUC
    shown = at.dataframe[0].value
    assert set(shown["model"]) == {"NRAM", "DKN", "Wide&Deep", "Popularity", "Random"}


def test_experiments_page_with_a_broken_suite_shows_an_error_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("NRAM_HOME", str(tmp_path))
    (tmp_path / "experiments" / "broken").mkdir(parents=True)
    (tmp_path / "experiments" / "broken" / "suite.json").write_text("{not json")
    at = experiments_page()
    assert not at.exception
    assert any("not an experiment suite" in e.value for e in at.error)
    # the form offers the sidebar's datasets and starts with a budget worth comparing
    assert "Demo corpus (synthetic, built-in)" in at.selectbox[1].options
    assert [n.value for n in at.number_input][:3] == [2, 1, 4000]
    assert any("starting budget" in c.value for c in at.caption)


@pytest.mark.slow
def test_background_job_runs_a_suite_and_reports_progress(demo_corpus, tmp_path):
    from nram_core.data import resolve_layout
    from studio.jobs import BackgroundJob
    from studio.suites import start_suite

    job = BackgroundJob("suite")
    seen = []
    assert start_suite(job, label="k", suite="negatives", layout=resolve_layout(demo_corpus), out=tmp_path / "k",
                       preset="demo", epochs=1, seeds=1,
                       train_overrides={"max_impressions": 30, "max_dev_impressions": 40}) is None
    busy = start_suite(job, label="p", suite="paper", layout=resolve_layout(demo_corpus), out=tmp_path / "p")
    assert busy and "already in progress" in busy
    deadline = time.time() + 300
    while job.busy and time.time() < deadline:
        seen.append(job.snapshot()["fraction"])
        time.sleep(0.5)
    snap = job.snapshot()
    assert snap["status"] == "finished", snap
    assert seen == sorted(seen) or max(seen) <= 1.0
    records = read_records(tmp_path / "k")
    assert [r["name"] for r in records] == ["nram_k1", "nram_k2", "nram_k4", "nram_k8"]
    assert [r["negatives"] for r in records] == [1, 2, 4, 8]


def test_joined_suites_train_a_shared_model_once_and_ablation_toggles_the_presets_residual():
    from nram_core.fileio import DataError

    names = [s.name for s in suite_specs("paper,ablation", preset("demo")[0])]
    assert names.count("nram") == 1 and len(names) == len(set(names))
    assert {"dkn", "wide_deep", "nram_no_self_attention", "nram_no_residual", "nram_no_vectors"} <= set(names)
    assert "nram_residual" in [s.name for s in suite_specs("ablation", preset("paper")[0])]
    with pytest.raises(DataError, match="unknown suite 'paper,nope'"):
        suite_specs("paper,nope", preset("demo")[0])
