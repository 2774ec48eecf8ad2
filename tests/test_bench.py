"""Each benchmark runs once with a tiny budget and prints one strict JSON line: its figures (positive
where they are rates or sizes), its settings and the machine."""
import doctest
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def one_record(stdout: str, name: str) -> dict:
    """The single line of ``stdout``, read as strict JSON (NaN or Infinity fail), with its three parts."""
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, lines

    def reject(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    record = json.loads(lines[0], parse_constant=reject)
    assert record["bench"] == name.replace(" ", "-") and isinstance(record["settings"], dict)
    assert record["machine"]["cpus"] >= 1 and record["machine"]["torch"]
    return record


def run_bench(name, *args):
    """``python -m bench.NAME ARGS`` in a child process: its one JSON line."""
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return one_record(done.stdout, name)


def run_in_process(capsys, name, *args):
    """The same, in this process (saves a torch import per bench); torch's thread count is restored.
    ``name`` may carry a subcommand: ``"candidates score"`` is bench ``candidates-score``."""
    module = importlib.import_module(f"bench.{name.split()[0]}")
    threads = torch.get_num_threads()
    try:
        assert module.main([*name.split()[1:], *map(str, args)]) == 0
    finally:
        torch.set_num_threads(threads)
    return one_record(capsys.readouterr().out, name)


def assert_positive(record, keys):
    missing = set(keys) - set(record)
    assert not missing, missing
    for key in keys:
        assert isinstance(record[key], (int, float)) and record[key] > 0, (key, record[key])


def test_best_of_rounds_takes_turns_and_keeps_each_paths_best():
    from bench.common import Lap, best_of_rounds

    calls, rates = [], {"a": iter([1.0, 3.0, 2.0]), "b": iter([5.0, 4.0, 6.0])}

    def path(name):
        def run():
            calls.append(name)
            return Lap(1.0, work=next(rates[name]), value=len(calls))
        return run

    laps = best_of_rounds({"a": path("a"), "b": path("b")}, rounds=3)
    assert calls == ["a", "b"] * 3  # round-robin: every round runs every path once, in turn
    assert [lap.rate for lap in laps["a"]] == [1.0, 3.0, 2.0]
    assert (laps["a"].best.rate, laps["a"].best.value) == (3.0, 3) and laps["b"].best.value == 6
    timed = best_of_rounds({"sleep": lambda: time.sleep(0.01) or "done"}, rounds=2)["sleep"]
    assert len(timed) == 2 and timed.best.seconds >= 0.01 and timed.best.value == "done"


def test_common_doctests():
    from bench import common

    assert doctest.testmod(common).failed == 0


def test_emit_writes_one_strict_line(capsys):
    from bench.common import emit

    emit("probe", {"ratio": float("nan"), "rounds": [1.5, float("inf")]}, args={"data": Path("x")})
    r = one_record(capsys.readouterr().out, "probe")
    assert r["ratio"] is None and r["rounds"] == [1.5, None] and r["settings"] == {"data": "x"}


def test_bench_train(demo_corpus, capsys):
    r = run_in_process(capsys, "train", "--data", demo_corpus, "--preset", "demo", "--steps", 2, "--warmup", 1, "--rounds", 1,
                  "--threads", 1)
    assert_positive(r, ["samples_per_s", "baseline_samples_per_s", "speedup", "peak_rss_mb", "ms_per_step",
                        "baseline_ms_per_step", "projected_epoch_s", "epoch_samples", "fp32_eager_samples_per_s",
                        "speedup_vs_fp32_eager"])
    assert r["settings"]["preset"] == "demo" and r["settings"]["steps"] == 2
    assert r["precision"] in ("fp32 (amp asked, but this cpu has no native bf16 matmuls)", "bf16 matmuls, fp32 weights")


@pytest.mark.parametrize("kind", ["naml", "lstur", "npa"])
def test_bench_train_times_another_family(demo_corpus, capsys, kind):
    """``--model``: the family's own Trainer against its plain fp32 path; the reference loop is NRAM's only."""
    r = run_in_process(capsys, "train", "--data", demo_corpus, "--preset", "demo", "--steps", 2, "--warmup", 1,
                       "--rounds", 1, "--threads", 1, "--model", kind)
    assert r["model"] == kind and r["settings"]["model"] == kind
    assert_positive(r, ["samples_per_s", "fp32_eager_samples_per_s", "speedup_vs_fp32_eager", "epoch_samples"])
    assert "baseline_samples_per_s" not in r


def test_bench_hogs_keep_libgomps_defaults(monkeypatch):
    """The hogs run as a second training job would, whatever wait the measured process chose; the JSON
    line records that choice."""
    from bench import common

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    seen = {}

    class Popen:
        def __init__(self, args, **kwargs):
            seen.update(kwargs)
            self.stdout = type("Out", (), {"readline": lambda _self: "ready\n"})()

        def kill(self):
            pass

        def wait(self):
            pass

    with monkeypatch.context() as patched:  # platform.platform(), in machine() below, runs a subprocess
        patched.setattr("subprocess.Popen", Popen)
        with common.hogs(1):
            pass
    assert "OMP_WAIT_POLICY" not in seen["env"] and "PATH" in seen["env"]
    assert common.machine()["omp_wait"]["OMP_WAIT_POLICY"] == "PASSIVE"


def test_bench_evaluate(demo_corpus, capsys):
    r = run_in_process(capsys, "evaluate", "--data", demo_corpus, "--preset", "demo", "--impressions", 40, "--rounds", 1,
                  "--threads", 1)
    assert_positive(r, ["impressions_per_s", "baseline_impressions_per_s", "speedup", "news_encode_s",
                        "user_encode_s", "news_encoded", "users_encoded"])
    assert r["impressions"] == 40 and r["max_score_diff"] < 1e-4
    assert_positive(r, ["fp32_impressions_per_s", "speedup_vs_fp32"])
    assert r["mean_auc_diff"] < 1e-3 and 0 <= r["per_impression_auc_max_diff"] <= 1
    assert r["auc"] == pytest.approx(r["baseline_auc"], abs=1e-4)


def test_bench_hogs_run_beside_the_measurement_and_stop_after(demo_corpus, capsys):
    """``--hogs N``: N other torch processes multiply matrices while the rounds run (a busy machine),
    and none is left afterwards."""
    from bench import common

    r = run_in_process(capsys, "evaluate", "--data", demo_corpus, "--preset", "demo", "--impressions", 40,
                       "--rounds", 1, "--threads", 1, "--hogs", 2)
    assert r["settings"]["hogs"] == 2 and r["speedup_vs_fp32"] > 0
    with common.hogs(2) as procs:
        assert len(procs) == 2 and all(proc.poll() is None for proc in procs)  # running
    assert all(proc.poll() is not None for proc in procs)  # stopped and reaped


def test_bench_evaluate_scores_a_trained_run(demo_corpus, capsys):
    """``--run``: the shipped demo model (trained on this corpus) instead of an untrained preset."""
    shipped = ROOT / "assets" / "demo_model"
    r = run_in_process(capsys, "evaluate", "--data", demo_corpus, "--run", shipped, "--impressions", 60,
                       "--rounds", 1, "--threads", 1)
    assert r["settings"]["run"] == str(shipped) and r["settings"]["preset"] is None and r["impressions"] == 60
    # Both from scores (``auc`` breaks a cold user's tied scores by rank, as evaluate_split does).
    assert r["auc_on_baseline_impressions"] == pytest.approx(r["baseline_auc"], abs=1e-4)
    assert r["auc"] > 0.65 and r["baseline_auc"] > 0.65  # a trained model, not chance
    assert_positive(r, ["impressions_per_s", "fp32_impressions_per_s", "speedup_vs_fp32"])
    assert 0 <= r["impressions_auc_changed_at_exact_ties"] <= r["impressions_auc_changed"]
    assert 0 <= r["per_impression_auc_max_diff_without_exact_ties"] < 0.05  # float rounding, not a model change
    assert r["machine"]["cpu_capability"]


def test_bench_scoring_paths_times_lsturs_fast_path_against_per_impression(demo_corpus, capsys, tmp_path):
    """An LSTUR run: one user vector per (history, user id) and dot products against ``score_batch`` per
    impression; the two agree."""
    from nram_core.cli import main as cli

    run = tmp_path / "lstur"
    assert cli(["train", "--data", str(demo_corpus), "--out", str(run), "--model", "lstur", "--filters", "16",
                "--category-dim", "8", "--title-len", "12", "--history-len", "20", "--epochs", "1",
                "--max-impressions", "60", "--max-dev-impressions", "30", "--word-vectors", "none",
                "--no-progress"]) == 0
    capsys.readouterr()
    r = run_in_process(capsys, "scoring_paths", "--data", demo_corpus, "--run", run, "--impressions", 60,
                       "--rounds", 1, "--threads", 1)
    assert r["kind"] == "lstur" and r["impressions"] == 60 and r["max_score_diff"] < 1e-4
    assert_positive(r, ["impressions_per_s", "per_impression_impressions_per_s", "speedup"])


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
    assert r["returncode"] == 0 and r["peak_rss_mb"] >= 50 and r["settings"]["command"].startswith(sys.executable)


def test_bench_app(demo_corpus, capsys):
    """The studio's interaction times through AppTest: a first load, then one visitor's clicks."""
    r = run_in_process(capsys, "app", "--data", demo_corpus, "--users", 1)
    assert r["users_visited"] == 1 and r["impressions"] > 0
    assert_positive(r, ["first_load_s", "max_ms", "target_ms", "export_max_ms", "export_target_ms"])
    steps = {"pick_user", "switch_impression", "catalog_mode", "catalog_category", "attention_page",
             "attention_head", "whatif_page", "whatif_remove_clicks", "news_map_page", "overview_page", "pick_by_auc"}
    assert set(r["interaction_p50_ms"]) == set(r["interaction_max_ms"]) == steps
    assert r["max_ms"] == max(r["interaction_max_ms"].values())


def test_bench_startup(demo_corpus, capsys):
    """A command as a whole process against a bare torch import, and the heavy modules it imports."""
    r = run_in_process(capsys, "startup", "--data", demo_corpus, "--rounds", 1)
    assert_positive(r, ["evaluate_s", "import_torch_s", "ratio"])
    assert r["imports"] == {"torch._dynamo": False, "gensim": False, "pandas": False, "sympy": False}


def test_bench_profile(demo_corpus, capsys):
    """Where a step's and an evaluation's CPU time goes: each phase's top operators, in one line."""
    r = run_in_process(capsys, "profile", "--data", demo_corpus, "--preset", "demo", "--steps", 1,
                       "--impressions", 40, "--threads", 1)
    assert r["train_step"]["s_per_step"] > 0 and r["evaluate_split"]["s"] > 0
    for phase in (r["train_step"], r["evaluate_split"]):
        shares = [op["self_cpu_share"] for op in phase["top"]]
        assert phase["top"] and 0 < sum(shares) <= 1.001 and shares == sorted(shares, reverse=True)
    assert any("mm" in op["op"] for op in r["train_step"]["top"])  # matrix products lead a training step


def test_bench_candidates(tmp_path, demo_corpus, capsys):
    from nram_core.cli import main as cli

    run = tmp_path / "run"
    assert cli(["train", "--data", str(demo_corpus), "--out", str(run), "--word-dim", "16", "--num-heads", "2",
                "--head-dim", "8", "--epochs", "1", "--max-steps", "3", "--max-dev-impressions", "50",
                "--word-vectors", "none", "--no-progress"]) == 0
    capsys.readouterr()
    r = run_in_process(capsys, "candidates score", "--run", run, "--data", demo_corpus, "--rounds", 1)
    assert r["fp32_plain"]["speedup_vs_fp32"] == 1.0
    # exact up to float rounding, which can still swap near-tied candidates of a barely trained model
    assert abs(r["default_precompute"]["mean_auc_diff"]) < 1e-3
    for name in ("default_precompute", "precompute_bf16_matmuls", "int8_dynamic", "bf16_autocast"):
        assert r[name]["speedup_vs_fp32"] > 0 and abs(r[name]["mean_auc_diff"]) < 0.05


def test_bench_candidates_train(demo_corpus, capsys):
    r = run_in_process(capsys, "candidates train", "--data", demo_corpus, "--preset", "demo", "--steps", 1,
                       "--warmup", 1, "--rounds", 1)
    assert r["fp32_plain"]["speedup_vs_fp32_plain"] == 1.0
    for name in ("fast_dropout", "title_chunk", "bf16_matmuls", "fused_adam", "default",
                 "default_adam_foreach"):
        assert r[name]["samples_per_s"] > 0


def test_bench_parity(demo_corpus, capsys):
    r = run_in_process(capsys, "parity", "--data", demo_corpus, "--preset", "demo", "--seeds", 1,
                       "--max-impressions", 100)
    assert len(r["default"]) == len(r["fp32"]) == 1
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
    assert r["lines"] == r["settings"]["rows"] == 400 and r["ranked_candidates"] == r["candidates"] > 400
    assert_positive(r, ["predict_s", "predict_peak_rss_mb"])
