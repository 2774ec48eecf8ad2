"""``python -m bench.scoring_paths --run RUN``: a trained run's dev split scored on the fast path against the
per-impression path, for any family that has both.

The fast path (``nram_core.scoring``: every news encoded once, one user vector per distinct history, or per
distinct history and user id for LSTUR, then dot products) and the per-impression path (``score_batch`` on
batches of whole impressions, every title encoded again: what NPA, DKN and Wide&Deep must take) score the
same model on the same impressions, in turns over ``--rounds`` rounds; ``max_score_diff`` checks that they
agree.
"""
from __future__ import annotations

import numpy as np

from nram_core.scoring import encodes_news_apart, score_impressions

from . import common


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a run folder of a family with news vectors of its own "
                                                "(nram, naml, lstur)")
    p.add_argument("--impressions", type=int, default=0, help="first N dev impressions (0: all)")
    p.add_argument("--rounds", type=int, default=2, help="timed runs of each path, in turns; the best counts")
    common.add_hogs(p)
    args, device = common.start(p, argv)
    split, model = common.scoring_setup(args, device)
    if not encodes_news_apart(model):
        p.error(f"{args.run}: this model has no news vectors apart from the reader, so it has one path only")
    n = split.num_impressions if not args.impressions else min(args.impressions, split.num_impressions)

    def path(fast: bool):
        return score_impressions(model, split, max_impressions=n, fast=None if fast else False)[0]

    path(True), path(False)  # warm-up, both paths
    with common.hogs(args.hogs):
        laps = common.best_of_rounds({"fast": lambda: path(True), "per_impression": lambda: path(False)}, args.rounds)
    fast, slow = laps["fast"].best, laps["per_impression"].best
    common.emit("scoring_paths", {
        "kind": model.config.kind, "device": str(device), "impressions": n,
        "impressions_per_s": round(n / fast.seconds, 1), "seconds": round(fast.seconds, 3),
        "per_impression_impressions_per_s": round(n / slow.seconds, 1),
        "per_impression_seconds": round(slow.seconds, 3), "speedup": round(slow.seconds / fast.seconds, 1),
        "max_score_diff": float(np.abs(fast.value - slow.value).max()) if n else 0.0,
    }, args=args, device=device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
