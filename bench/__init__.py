"""Benchmarks of NRAM's fast paths against naive reference paths, measured side by side in one run.

Each ``python -m bench.NAME`` prints one JSON line: ``train``, ``evaluate``, ``recommend``,
``prepare`` and ``rss`` (peak RSS of any command); ``filed`` times evaluation against the code
issue 14 was filed against. ``bench.baseline`` holds the reference
paths, written the way typical NRMS code is; they reuse the very same model modules, so only
the data path differs. docs/benchmarks.md records the figures and the commands behind them.
"""
