"""Benchmarks of NRAM's fast paths against naive reference paths, measured side by side in one run.

Each ``python -m bench.NAME`` prints one JSON line on stdout (``bench.common.emit``): its figures,
``settings`` (the command's arguments) and ``machine``; progress and notes go to stderr. Paths
that are compared take turns in rounds and the best round of each counts
(``bench.common.best_of_rounds``). ``bench.baseline`` holds the reference paths, written the way
typical NRMS code is; they reuse the very same model modules, so only the data path differs.
docs/benchmarks.md records the figures and the commands behind them.
"""
from nram_core.cpu_wait import short_spin_wait

short_spin_wait()  # the threads wait as the CLI's do: set before a benchmark module loads torch
