"""``python -m bench.candidates --run RUN --data DIR``: faster CPU scoring paths, measured, not adopted.

Scores the dev split of ``--data`` with the trained model of ``--run`` three ways, in this one
process: fp32 eager (today's path), dynamic int8 quantisation of the Linear layers
(``torch.ao.quantization.quantize_dynamic``) and bf16 autocast on CPU. For each it prints the best
of three timings, the speed-up over fp32 measured in the same run, and how far the metrics move:
the mean dev AUC difference and the largest per-impression AUC difference (ties ranked by the
shared tie rule, ``metrics.impression_ranks``).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import time

import numpy as np

from .common import emit, machine


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained run folder")
    p.add_argument("--data", required=True, help="the MIND-format corpus it was trained on (dev split scored)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    import torch

    from nram_core.checkpoint import load_run
    from nram_core.data import load_corpus, resolve_layout
    from nram_core.metrics import impression_ranks, per_impression_metrics
    from nram_core.scoring import score_impressions

    run = load_run(args.run)
    split = load_corpus(resolve_layout(args.data), title_len=run.model_config.title_len, vocab=run.vocab,
                        splits=("dev",)).dev

    def measure(model, context) -> tuple[float, np.ndarray]:
        with context():
            score_impressions(model, split, max_impressions=64)  # warm-up
            best = float("inf")
            for _ in range(args.rounds):
                started = time.perf_counter()
                scores, labels, offsets = score_impressions(model, split)
                best = min(best, time.perf_counter() - started)
        return best, per_impression_metrics(labels, -impression_ranks(scores, offsets), offsets)[:, 0]

    base_s, base_auc = measure(run.model, contextlib.nullcontext)
    variants = {
        "int8_dynamic": (torch.ao.quantization.quantize_dynamic(copy.deepcopy(run.model), {torch.nn.Linear},
                                                                dtype=torch.qint8), contextlib.nullcontext),
        "bf16_autocast": (run.model, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
    }
    record = {"bench": "candidates", "impressions": split.num_impressions, "fp32_s": round(base_s, 3),
              "fp32_mean_auc": round(float(np.nanmean(base_auc)), 6)}
    for name, (model, context) in variants.items():
        seconds, auc = measure(model, context)
        record[name] = {"s": round(seconds, 3), "speedup_vs_fp32": round(base_s / seconds, 2),
                        "mean_auc_diff": round(float(np.nanmean(auc) - np.nanmean(base_auc)), 6),
                        "max_impression_auc_diff": round(float(np.nanmax(np.abs(auc - base_auc))), 4)}
    emit({**record, "machine": machine()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
