"""``python -m bench.prepare``: time and peak RSS to parse and tokenise a corpus, cold and warm.

Each measurement runs in a fresh child process (so its peak RSS is its own) that calls
``nram_core.data.load_corpus`` for train and dev: *cold* with an empty cache folder
(NRAM_HOME), which parses both TSV files, builds the vocabulary and tokenises every title
once into int32 arrays, then writes the cache; *warm* with that cache filled. The reference
(``baseline_s``) is the cold path: typical NRMS code parses and tokenises on every run.
The child imports no torch.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common


def child(data: str, title_len: int) -> None:
    from nram_core.data.layout import resolve_layout
    from nram_core.data.split import load_corpus

    start = time.perf_counter()
    corpus = load_corpus(resolve_layout(data), title_len=title_len)
    seconds = time.perf_counter() - start
    splits = [s for s in (corpus.train, corpus.dev) if s is not None]
    print(json.dumps({"seconds": seconds, "peak_rss_mb": common.peak_rss_mb(), "vocab": len(corpus.vocab),
                      "news": sum(len(s.news) - 1 for s in splits),
                      "impressions": sum(s.num_impressions for s in splits)}), flush=True)


def _run_child(data: Path, title_len: int, home: str) -> common.Lap:
    """The child's load of ``data`` with the cache folder ``home``: its seconds and its record."""
    env = {**os.environ, "NRAM_HOME": home}
    cmd = [sys.executable, "-m", "bench.prepare", "--child", "--data", str(data), "--title-len", str(title_len)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    record = json.loads(done.stdout.strip().splitlines()[-1])
    return common.Lap(record["seconds"], value=record)


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1, help="cold+warm pairs; the best of each counts")
    p.add_argument("--child", action="store_true", dest="_child", help=argparse.SUPPRESS)
    p.add_argument("--title-len", type=int, dest="_title_len", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    title_len = args._title_len or common.preset(args.preset)[0].title_len
    if args._child:
        child(args.data, title_len)
        return 0
    with common.corpus_dir(args.data) as folder, tempfile.TemporaryDirectory(prefix="nram-bench-home-") as root:
        homes: list[str] = []

        def cold() -> common.Lap:  # a new, empty cache folder each round (the warm load reads it next)
            if homes:
                shutil.rmtree(homes.pop())
            homes.append(tempfile.mkdtemp(dir=root))
            return _run_child(folder, title_len, homes[-1])

        laps = common.best_of_rounds({"cold": cold, "warm": lambda: _run_child(folder, title_len, homes[-1])},
                                     args.rounds)
    cold, warm = laps["cold"].best.value, laps["warm"].best.value
    common.emit("prepare", {
        "title_len": title_len, "news": cold["news"], "impressions": cold["impressions"], "vocab": cold["vocab"],
        "cold_s": round(cold["seconds"], 3), "cold_peak_rss_mb": max(lap.value["peak_rss_mb"] for lap in laps["cold"]),
        "warm_s": round(warm["seconds"], 3), "warm_peak_rss_mb": max(lap.value["peak_rss_mb"] for lap in laps["warm"]),
        "baseline_s": round(cold["seconds"], 3), "speedup": round(cold["seconds"] / warm["seconds"], 1),
    }, args=args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
