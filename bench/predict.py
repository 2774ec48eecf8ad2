"""``python -m bench.predict``: ``nram_core predict`` on a test-like split as big as MIND-large's test
set (2.4M impressions, labels stripped): wall time, peak RSS, and the submission checked.

From ``--data`` (a generated corpus, e.g. ``demo-data --scale large``) it writes a test-like split
into a temporary folder, line by line: news.tsv holds the train and dev news (each id once);
behaviors.tsv takes the dev rows, then the train rows, then the dev rows again, until ``--rows``,
each with its candidates' labels cut off (``N1-0`` -> ``N1``) and the impression ids numbered
from 1. Then, in a child process under ``bench.rss``, ``python -m nram_core predict`` ranks it with
``--run`` (default: the shipped demo model), and the prediction.txt it wrote is checked as the
leaderboard's scorer reads it: one line per impression in file order, each candidate's rank a
permutation of 1..n. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import common

REPO = Path(__file__).resolve().parents[1]


def write_test_split(corpus: Path, dest: Path, rows: int) -> int:
    """The test-like split of ``corpus`` in ``dest``; the number of candidates it lists."""
    dest.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    with open(dest / "news.tsv", "w", encoding="utf-8") as out:
        for split in ("train", "dev"):
            with open(corpus / split / "news.tsv", encoding="utf-8") as news:
                for line in news:
                    news_id = line.split("\t", 1)[0]
                    if news_id not in seen:
                        seen.add(news_id)
                        out.write(line)
    sources = itertools.cycle([corpus / "dev" / "behaviors.tsv", corpus / "train" / "behaviors.tsv"])
    written = candidates = 0
    with open(dest / "behaviors.tsv", "w", encoding="utf-8") as out:
        while written < rows:
            with open(next(sources), encoding="utf-8") as behaviors:
                for line in behaviors:
                    _, user, when, history, shown = line.rstrip("\n").split("\t")
                    bare = " ".join(item.rpartition("-")[0] for item in shown.split())
                    candidates += bare.count(" ") + 1
                    written += 1
                    out.write(f"{written}\t{user}\t{when}\t{history}\t{bare}\n")
                    if written == rows:
                        break
    return candidates


def check_prediction(path: Path, rows: int) -> dict:
    """The checks MIND's evaluate.py makes of a submission line: impression ids in order and each
    line's ranks exactly 1..n. Returns counts; raises SystemExit on the first bad line."""
    lines = candidates = 0
    with open(path, encoding="utf-8") as handle:
        for lines, line in enumerate(handle, start=1):
            imp_id, ranks_text = line.split(" ", 1)
            ranks = json.loads(ranks_text)
            if int(imp_id) != lines or sorted(ranks) != list(range(1, len(ranks) + 1)):
                raise SystemExit(f"error: {path}:{lines}: not a valid prediction line: {line[:80]!r}")
            candidates += len(ranks)
    if lines != rows:
        raise SystemExit(f"error: {path}: {lines} lines for {rows} impressions")
    return {"lines": lines, "ranked_candidates": candidates}


def _json_or_none(line: str) -> dict | None:
    try:
        return json.loads(line) if line.startswith("{") else None
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a generated MIND-format corpus (train/ and dev/)")
    p.add_argument("--rows", type=int, default=2_400_000, help="impressions in the test-like split")
    p.add_argument("--run", default=str(REPO / "assets" / "demo_model"), help="the model's run folder")
    p.add_argument("--keep", help="write the test-like split and the prediction here instead of a temp dir")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nram-bench-predict-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        candidates, write_s = common.timed(lambda: write_test_split(Path(args.data), work / "test", args.rows))
        command = [sys.executable, "-m", "bench.rss", "--", sys.executable, "-m", "nram_core", "predict",
                   "--run", args.run, "--data", str(work / "test"), "--out", str(work / "out")]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "NRAM_HOME": str(work / "home")})
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 2
        rss = json.loads(done.stdout.strip().splitlines()[-1])
        told = next(record for record in map(_json_or_none, reversed(done.stderr.splitlines()))
                    if record and "prediction" in record)  # predict's own line (bench.rss passes it to stderr)
        predicted = check_prediction(work / "out" / "prediction.txt", args.rows)
        common.emit("predict", {
            "candidates": candidates, "write_split_s": round(write_s, 1),
            "predict_s": rss["seconds"], "predict_peak_rss_mb": rss["peak_rss_mb"], **predicted,
            "unknown_candidates": told["unknown_candidates"], "cold_users": told["cold_users"],
            "zip_mb": round((work / "out" / "prediction.zip").stat().st_size / 2**20, 1),
        }, args=args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
