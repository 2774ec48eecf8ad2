"""``python -m bench.evaluate``: dev impressions/s of full evaluation, ours vs re-encoding per impression.

Ours is ``nram_core.scoring.evaluate_split`` (every news encoded once, length-bucketed; one
user vector per distinct history, length-bucketed; self-attention projections of every word
and every news vector computed once; row-wise dot products; the official metrics). The
reference re-encodes each impression's history and candidate titles
(``bench.baseline.naive_score_impressions``) and computes the same metrics. Both run on the
same model and the same first ``--impressions`` dev impressions; ``max_score_diff`` checks
that they agree. Our phases are timed again one by one for the breakdown.

The same ``evaluate_split`` without the projection tables, length-sorted histories and
batched dot products (``precompute=False``, fp32 on every device: the path before them) is
timed in the same rounds:
``speedup_vs_fp32``; ``per_impression_auc_max_diff`` compares the two paths impression by
impression, and ``auc_changes`` tells rounding swaps of near-tied candidates from exact ties
broken the other way (``impressions_auc_changed_at_exact_ties``). ``--run`` scores a trained
run's model instead of an untrained one: near-equal scores, which an untrained model gives
everywhere, are where float rounding can swap two candidates.
"""
from __future__ import annotations

import numpy as np
import torch

from nram_core.metrics import evaluate_flat, impression_ranks, mean_metrics, per_impression_metrics, ranked_metrics
from nram_core.data.batching import gather_histories
from nram_core.scoring import (dot_scores, encode_all_news, encode_impression_users, evaluate_split,
                                score_impressions)

from . import common
from .baseline import naive_score_impressions


def _distinct_histories(split, n: int, history_len: int) -> int:
    rows, _ = gather_histories(split, np.arange(n), history_len)  # [n,H]
    return int(len(np.unique(rows, axis=0)))


def _auc_of_first(scores: np.ndarray, split, n: int) -> float:
    """Our AUC over the first ``n`` impressions: the reference's figure, on its own impressions."""
    offsets = split.behaviors.candidate_offsets[: n + 1]
    return evaluate_flat(split.behaviors.labels[: offsets[-1]], scores[: offsets[-1]], offsets).auc


def auc_changes(ours: np.ndarray, plain: np.ndarray, labels: np.ndarray, offsets: np.ndarray) -> dict:
    """How the per-impression AUC of scores ``ours`` differs from that of ``plain`` (both [M], ranked
    by ``impression_ranks``, as evaluate_split does), and why.

    Ranks break exact ties by list order. Two titles of the same words in another order have
    mathematically equal vectors (NRMS has no word positions), so one path may give them bit-equal
    scores and the other not, and the pair's order then flips on the last bit. A click/non-click
    pair counts as a *rounding swap* only when both paths order it strictly and the orders differ;
    ``per_impression_auc_max_diff_without_exact_ties`` is the largest share of such pairs in one
    impression, and ``impressions_auc_changed_at_exact_ties`` counts the changed impressions that
    have none.

    >>> r = auc_changes(np.array([.5, .5, .1, .9, .2]), np.array([.5, .5 + 1e-9, .1, .9, .3]),
    ...                 np.array([0, 1, 0, 1, 0]), np.array([0, 3, 5]))
    >>> r["impressions_auc_changed"], r["impressions_auc_changed_at_exact_ties"]
    (1, 1)
    >>> auc_changes(np.array([.3, .2]), np.array([.2, .3]), np.array([1, 0]), np.array([0, 2]))[
    ...     "per_impression_auc_max_diff_without_exact_ties"]
    1.0
    """
    per = [per_impression_metrics(labels, -impression_ranks(s, offsets), offsets)[:, 0]
           for s in (ours, plain)]  # 2 x [M] -> 2 x [I]
    diff = np.abs(per[0] - per[1])  # [I]
    valid = ~np.isnan(diff)  # [I] impressions with a click and a non-click
    swaps = np.zeros(len(diff))  # [I] share of click/non-click pairs strictly ordered both ways, flipped
    changed = valid & (diff > 0)  # [I]
    for i in np.flatnonzero(changed):
        own = slice(offsets[i], offsets[i + 1])
        y = labels[own] > 0  # [m]
        signs = [np.sign(s[own][y][:, None] - s[own][~y][None, :]) for s in (ours, plain)]  # 2 x [P,N]
        swaps[i] = ((signs[0] != signs[1]) & (signs[0] != 0) & (signs[1] != 0)).mean()
    return {"per_impression_auc_max_diff": float(diff[valid].max()) if valid.any() else 0.0,
            "per_impression_auc_max_diff_without_exact_ties": float(swaps.max()) if len(swaps) else 0.0,
            "mean_auc_diff": float(abs(np.nanmean(per[0]) - np.nanmean(per[1]))) if valid.any() else 0.0,
            "impressions_auc_changed": int(changed.sum()),
            "impressions_auc_changed_at_exact_ties": int((changed & (swaps == 0)).sum())}


def _per_impression_auc_diff(model, split, n: int, batch_size: int, amp: bool) -> dict:
    """``auc_changes`` of the default path against ``precompute=False``'s."""
    flat = []
    for precompute in (True, False):
        scores, labels, offsets = score_impressions(model, split, max_impressions=n, batch_size=batch_size,
                                                    amp=amp and precompute, precompute=precompute)
        flat.append(scores)  # [M]
    return auc_changes(flat[0], flat[1], labels, offsets)


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--impressions", type=int, default=0, help="first N dev impressions for both paths (0: all)")
    p.add_argument("--baseline-impressions", type=int, default=0,
                   help="time the reference on the first N only (0: the same as --impressions)")
    p.add_argument("--rounds", type=int, default=2, help="timed runs of each path, in turns; the best counts")
    common.add_hogs(p)
    p.add_argument("--batch-size", type=int, default=1024, help="our encoding batch")
    p.add_argument("--baseline-batch-size", type=int, default=64, help="impressions per reference batch")
    p.add_argument("--run", help="a run folder: score its trained model (default: an untrained --preset model)")
    args, device = common.start(p, argv)
    split, model = common.scoring_setup(args, device)
    n = split.num_impressions if not args.impressions else min(args.impressions, split.num_impressions)
    n_base = n if not args.baseline_impressions else min(args.baseline_impressions, n)
    amp = device.type == "cuda"

    def run(precompute: bool, limit: int = n):  # the plain path is fp32 on every device
        return evaluate_split(model, split, max_impressions=limit, batch_size=args.batch_size,
                              amp=amp and precompute, precompute=precompute)

    run(True, min(n, 64)), run(False, min(n, 64))  # warm-up, both paths
    with common.hogs(args.hogs):
        laps = common.best_of_rounds({"ours": lambda: run(True), "fp32": lambda: run(False)}, args.rounds)
    ours_s, fp32_s = laps["ours"].best.seconds, laps["fp32"].best.seconds
    agreement = _per_impression_auc_diff(model, split, n, args.batch_size, amp)
    news_vectors, news_s = common.timed(lambda: encode_all_news(model, split, batch_size=args.batch_size, amp=amp))
    users, users_s = common.timed(lambda: encode_impression_users(model, split, news_vectors, np.arange(n),
                                                                  batch_size=args.batch_size, amp=amp))
    b = split.behaviors
    offsets = b.candidate_offsets[: n + 1]
    scores, score_s = common.timed(lambda: dot_scores(users, news_vectors, offsets, b.candidates[: offsets[-1]]))
    labels = b.labels[: offsets[-1]]
    per, metrics_s = common.timed(lambda: ranked_metrics(labels, impression_ranks(scores, offsets), offsets))  # [I,4]
    result = mean_metrics(per)

    def reference():
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            flat = naive_score_impressions(model, split, n_base, batch_size=args.baseline_batch_size, device=device)
        end = int(split.behaviors.candidate_offsets[n_base])
        return flat, evaluate_flat(split.behaviors.labels[:end], flat, split.behaviors.candidate_offsets[: n_base + 1])

    (base_scores, base_result), base_s = common.timed(reference)
    ours_rate, base_rate = n / ours_s, n_base / base_s
    titles_per_impression = model.config.history_len + np.diff(split.behaviors.candidate_offsets[: n + 1]).mean()
    common.emit("evaluate", {
        "device": str(device), "impressions": n, "baseline_impressions": n_base,
        "impressions_per_s": round(ours_rate, 1), "seconds": round(ours_s, 3),
        "baseline_impressions_per_s": round(base_rate, 2), "baseline_seconds": round(base_s, 3),
        "speedup": round(ours_rate / base_rate, 1),
        "fp32_impressions_per_s": round(n / fp32_s, 1), "speedup_vs_fp32": round(fp32_s / ours_s, 2),
        **agreement,
        "news_encode_s": round(news_s, 3), "news_encoded": len(split.news),
        "user_encode_s": round(users_s, 3), "users_encoded": _distinct_histories(split, n, model.config.history_len),
        "score_s": round(score_s, 3), "metrics_s": round(metrics_s, 3),
        "baseline_titles_encoded": int(round(titles_per_impression * n_base)),
        "auc": round(result.auc, 6), "baseline_auc": round(base_result.auc, 6),
        "auc_on_baseline_impressions": round(_auc_of_first(scores, split, n_base), 6),
        "max_score_diff": float(np.abs(scores[: len(base_scores)] - base_scores).max()) if len(base_scores) else 0.0,
    }, args=args, device=device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
