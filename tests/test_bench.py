"""Each benchmark runs once with a tiny budget and prints one JSON line with positive figures."""
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_bench(name, *args):
    """``python -m bench.NAME ARGS`` in a child process: its one JSON line."""
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def run_in_process(capsys, name, *args):
    """The same, in this process (saves a torch import per bench); torch's thread count is restored."""
    module = importlib.import_module(f"bench.{name}")
    threads = torch.get_num_threads()
    try:
        assert module.main([str(a) for a in args]) == 0
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def assert_positive(record, keys):
    missing = set(keys) - set(record)
    assert not missing, missing
    for key in keys:
        assert isinstance(record[key], (int, float)) and record[key] > 0, (key, record[key])


def test_bench_train(demo_corpus, capsys):
    r = run_in_process(capsys, "train", "--data", demo_corpus, "--preset", "demo", "--steps", 2, "--warmup", 1, "--rounds", 1,
                  "--threads", 1)
    assert_positive(r, ["samples_per_s", "baseline_samples_per_s", "speedup", "peak_rss_mb", "ms_per_step",
                        "baseline_ms_per_step", "projected_epoch_s", "epoch_samples", "fp32_eager_samples_per_s",
                        "speedup_vs_fp32_eager"])
    assert r["bench"] == "train" and r["preset"] == "demo" and r["machine"]["cpus"] >= 1
    assert r["precision"] in ("fp32 (amp asked, but this cpu has no native bf16 matmuls)", "bf16 matmuls, fp32 weights")


def test_bench_evaluate(demo_corpus, capsys):
    r = run_in_process(capsys, "evaluate", "--data", demo_corpus, "--preset", "demo", "--impressions", 40, "--rounds", 1,
                  "--threads", 1)
    assert_positive(r, ["impressions_per_s", "baseline_impressions_per_s", "speedup", "news_encode_s",
                        "user_encode_s", "news_encoded", "users_encoded"])
    assert r["impressions"] == 40 and r["max_score_diff"] < 1e-4
    assert_positive(r, ["fp32_impressions_per_s", "speedup_vs_fp32"])
    assert r["mean_auc_diff"] < 1e-3 and 0 <= r["per_impression_auc_max_diff"] <= 1
    assert r["auc"] == pytest.approx(r["baseline_auc"], abs=1e-4)


def test_bench_evaluate_scores_a_trained_run(demo_corpus, capsys):
    """``--run``: the shipped demo model (trained on this corpus) instead of an untrained preset."""
    shipped = ROOT / "assets" / "demo_model"
    r = run_in_process(capsys, "evaluate", "--data", demo_corpus, "--run", shipped, "--impressions", 60,
                       "--rounds", 1, "--threads", 1)
    assert r["run"] == str(shipped) and r["preset"] is None and r["impressions"] == 60
    # Both from scores (``auc`` breaks a cold user's tied scores by rank, as evaluate_split does).
    assert r["auc_on_baseline_impressions"] == pytest.approx(r["baseline_auc"], abs=1e-4)
    assert r["auc"] > 0.65 and r["baseline_auc"] > 0.65  # a trained model, not chance
    assert_positive(r, ["impressions_per_s", "fp32_impressions_per_s", "speedup_vs_fp32"])
    assert 0 <= r["impressions_auc_changed_at_exact_ties"] <= r["impressions_auc_changed"]
    assert 0 <= r["per_impression_auc_max_diff_without_exact_ties"] < 0.05  # float rounding, not a model change
    assert r["machine"]["cpu_capability"]


def test_auc_changes_tell_rounding_swaps_from_broken_exact_ties():
    from bench.evaluate import auc_changes

    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    offsets = np.array([0, 4, 8])
    # impression 0: (c1, n1) tied in the plain path and kept in list order by both; (c2, n2) a near-tie
    # that rounding swaps. impression 1: a click and a non-click with equal vectors, tied in one path only.
    plain = np.array([.5, .5, .30000001, .3, .7, .2, .4, .4], dtype=np.float64)
    ours = np.array([.5, .5, .3, .30000001, .7, .2, .4, .40000001], dtype=np.float64)
    r = auc_changes(ours, plain, labels, offsets)
    assert r["impressions_auc_changed"] == 2 and r["impressions_auc_changed_at_exact_ties"] == 1
    assert r["per_impression_auc_max_diff_without_exact_ties"] == 0.25  # 1 swapped pair of 4
    assert r["per_impression_auc_max_diff"] == 0.25
    same = auc_changes(plain, plain, labels, offsets)
    assert same["impressions_auc_changed"] == 0 and same["per_impression_auc_max_diff"] == 0.0


def test_bench_filed_times_the_code_the_issue_was_filed_against(demo_corpus, capsys):
    from bench.filed import FILED_COMMIT, FiledError, resolve_commit

    try:
        resolve_commit(FILED_COMMIT)
    except FiledError:
        pytest.skip(f"needs this repository's git history (commit {FILED_COMMIT})")
    shipped = ROOT / "assets" / "demo_model"  # trained: no near-tied candidates for rounding to swap
    r = run_in_process(capsys, "filed", "--data", demo_corpus, "--run", shipped, "--impressions", 40,
                       "--rounds", 1, "--threads", 1)
    assert r["commit"] == FILED_COMMIT and r["impressions"] == 40 and r["run"] == str(shipped)
    assert_positive(r, ["seconds", "plain_seconds", "filed_seconds", "speedup_vs_filed", "speedup_vs_fp32"])
    assert r["plain_auc"] == pytest.approx(r["filed_auc"], abs=1e-6) and r["filed_auc"] > 0.65
    assert r["auc"] == pytest.approx(r["filed_auc"], abs=1e-3)
    assert not [name for name in sys.modules if name.startswith("nram_core_filed")]


def test_bench_filed_refuses_an_unknown_commit_in_one_line(demo_corpus, capsys):
    module = importlib.import_module("bench.filed")
    assert module.main(["--data", str(demo_corpus), "--preset", "demo", "--commit", "0000000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench.filed: cannot read commit 0000000") and "\n" not in err


def test_bench_recommend(demo_corpus, capsys):
    r = run_in_process(capsys, "recommend", "--data", demo_corpus, "--preset", "demo", "--catalog", 4000, "--requests", 5,
                  "--baseline-requests", 2, "--threads", 1)
    assert_positive(r, ["impression_p50_ms", "impression_p95_ms", "catalog_news", "catalog_p50_ms", "catalog_p95_ms",
                        "baseline_impression_p50_ms", "baseline_catalog_p50_ms", "speedup"])
    assert r["catalog_news"] == 4000


def test_bench_prepare_generates_the_demo_corpus_without_data():
    r = run_bench("prepare", "--preset", "demo")
    assert_positive(r, ["cold_s", "warm_s", "cold_peak_rss_mb", "warm_peak_rss_mb", "speedup", "news", "impressions"])
    assert r["impressions"] == 15000  # the demo corpus: 12k train + 3k dev impressions


def test_bench_rss_reports_a_commands_peak():
    r = run_bench("rss", "--", sys.executable, "-c", "x = bytearray(50 * 2**20)")
    assert r["returncode"] == 0 and r["peak_rss_mb"] >= 50


def test_bench_app(demo_corpus, capsys):
    """The studio's interaction times through AppTest: a first load, then one visitor's clicks."""
    r = run_in_process(capsys, "app", "--data", demo_corpus, "--users", 1)
    assert r["bench"] == "app" and r["users_visited"] == 1 and r["impressions"] > 0
    assert_positive(r, ["first_load_s", "max_ms", "target_ms", "export_max_ms", "export_target_ms"])
    steps = {"pick_user", "switch_impression", "catalog_mode", "catalog_category", "attention_page",
             "attention_head", "whatif_page", "whatif_remove_clicks", "news_map_page", "overview_page"}
    assert set(r["interaction_p50_ms"]) == set(r["interaction_max_ms"]) == steps
    assert r["max_ms"] == max(r["interaction_max_ms"].values())


def test_bench_profile(demo_corpus, capsys):
    """Where a step's and an evaluation's CPU time goes: two JSON lines with each phase's top operators."""
    module = importlib.import_module("bench.profile")
    threads = torch.get_num_threads()
    try:
        assert module.main(["--data", str(demo_corpus), "--preset", "demo", "--steps", "1", "--impressions", "40",
                            "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines() if line.startswith("{")]
    assert [r["phase"] for r in lines] == ["train_step", "evaluate_split"]
    for r in lines:
        shares = [op["self_cpu_share"] for op in r["top"]]
        assert r["top"] and 0 < sum(shares) <= 1.001 and shares == sorted(shares, reverse=True)
    assert any("mm" in op["op"] for op in lines[0]["top"])  # matrix products lead a training step


def test_bench_candidates(tmp_path, demo_corpus, capsys):
    from nram_core.cli import main as cli

    run = tmp_path / "run"
    assert cli(["train", "--data", str(demo_corpus), "--out", str(run), "--word-dim", "16", "--num-heads", "2",
                "--head-dim", "8", "--epochs", "1", "--max-steps", "3", "--max-dev-impressions", "50",
                "--word-vectors", "none", "--no-progress"]) == 0
    capsys.readouterr()
    r = run_in_process(capsys, "candidates", "score", "--run", run, "--data", demo_corpus, "--rounds", 1)
    assert r["bench"] == "candidates-score" and r["fp32_plain"]["speedup_vs_fp32"] == 1.0
    # exact up to float rounding, which can still swap near-tied candidates of a barely trained model
    assert abs(r["default_precompute"]["mean_auc_diff"]) < 1e-3
    for name in ("default_precompute", "precompute_bf16_matmuls", "int8_dynamic", "bf16_autocast"):
        assert r[name]["speedup_vs_fp32"] > 0 and abs(r[name]["mean_auc_diff"]) < 0.05


def test_bench_candidates_train(demo_corpus, capsys):
    r = run_in_process(capsys, "candidates", "train", "--data", demo_corpus, "--preset", "demo", "--steps", 1,
                       "--warmup", 1, "--rounds", 1)
    assert r["bench"] == "candidates-train" and r["fp32_plain"]["speedup_vs_fp32_plain"] == 1.0
    for name in ("fast_dropout", "title_chunk", "bf16_matmuls", "fused_adam", "default",
                 "default_adam_foreach"):
        assert r[name]["samples_per_s"] > 0


def test_bench_parity(demo_corpus, capsys):
    r = run_in_process(capsys, "parity", "--data", demo_corpus, "--preset", "demo", "--seeds", 1,
                       "--max-impressions", 100)
    assert r["bench"] == "parity" and len(r["default"]) == len(r["fp32"]) == 1
    assert 0 < r["default_mean_auc"] < 1 and 0 < r["fp32_mean_auc"] < 1


def test_bench_epoch_reports_rss_along_the_epoch(demo_corpus, capsys):
    r = run_in_process(capsys, "epoch", "--data", demo_corpus, "--preset", "demo", "--max-steps", 12,
                       "--warmup", 2, "--every", 4)
    assert_positive(r, ["samples_per_s", "rss_start_mb", "rss_end_mb", "rss_max_mb", "steps_in_epoch",
                        "anon_start_mb", "anon_end_mb", "anon_max_mb"])
    assert r["steps_done"] == 12 and not r["whole_epoch"] and [s for s, _, _ in r["rss_by_step"]][:2] == [1, 4]
    assert all(anon <= rss for _, rss, anon in r["rss_by_step"])


def test_bench_predict_checks_a_test_like_submission(demo_corpus, capsys):
    r = run_in_process(capsys, "predict", "--data", demo_corpus, "--rows", 400)
    assert r["lines"] == r["rows"] == 400 and r["ranked_candidates"] == r["candidates"] > 400
    assert_positive(r, ["predict_s", "predict_peak_rss_mb"])
