"""A command as a user runs it: ``python -m nram_core evaluate`` as a whole process, against a bare
``python -c "import torch"``, in interleaved rounds (medians), and which heavy modules it imports.

    python -m bench.startup --rounds 3            # the demo corpus, generated in a temp folder
    python -m bench.startup --data /tmp/demo0

One JSON line: ``evaluate_s`` and ``import_torch_s`` (medians), ``ratio`` (their quotient), and
``imports``: whether ``torch._dynamo``, ``gensim`` and ``pandas`` were imported (``python -X
importtime``, a separate run). The first, untimed round warms the data cache and the disk.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common

REPO = Path(__file__).resolve().parents[1]
WATCHED = ("torch._dynamo", "gensim", "pandas", "sympy")


def _seconds(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return seconds


def imported(command: list[str], env: dict[str, str]) -> dict[str, bool]:
    """Which of ``WATCHED`` the command imports (from ``python -X importtime``'s report on stderr)."""
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], capture_output=True, text=True,
                          cwd=REPO, env=env)
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return {name: name in names for name in WATCHED}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="MIND-format corpus (default: the demo corpus, generated in a temp folder)")
    p.add_argument("--run", default=str(REPO / "assets" / "demo_model"))
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    with common.corpus_dir(args.data) as data, tempfile.TemporaryDirectory(prefix="nram-bench-home-") as home:
        env = {**os.environ, "NRAM_HOME": home}
        evaluate = [sys.executable, "-m", "nram_core", "evaluate", "--run", args.run, "--data", str(data)]
        bare = [sys.executable, "-c", "import torch"]
        _seconds(evaluate, env)  # untimed: fills the token cache, as any second run finds it
        evaluate_s, torch_s = [], []
        for _ in range(args.rounds):  # interleaved, so that a busy moment hits both
            evaluate_s.append(_seconds(evaluate, env))
            torch_s.append(_seconds(bare, env))
        figures = {"evaluate_s": round(statistics.median(evaluate_s), 3),
                   "import_torch_s": round(statistics.median(torch_s), 3),
                   "imports": imported(evaluate, env), "rounds": args.rounds}
        figures["ratio"] = round(figures["evaluate_s"] / figures["import_torch_s"], 2)
        common.emit("startup", figures, args=args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
