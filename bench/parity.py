"""``python -m bench.parity``: does the fast training path learn as well as the plain fp32 one?

For each seed, the same prepared run (corpus, word vectors, initial weights) is trained twice
for ``--epochs`` epochs: once on the default path (bf16 matmuls where the CPU has them,
length-chunked titles, fused Adam, fast dropout masks) and once on the plain fp32 path
(``RuntimeConfig.plain_fp32``). Both
are scored by the same ``evaluate_split`` on the whole dev split. Prints one JSON line with
the per-seed AUCs, the mean of each path and the largest per-seed difference.
"""
from __future__ import annotations

import numpy as np

from . import common


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (added to --seed)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-impressions", type=int, default=0, help="cap on train impressions (0: all)")
    args, device = common.start(p, argv)

    from nram_core.train import Trainer

    runs: dict[str, list[dict]] = {"default": [], "fp32": []}
    precision = None
    with common.corpus_dir(args.data) as folder:
        for seed in range(args.seed, args.seed + args.seeds):
            prepared = common.prepare(args, folder, epochs=args.epochs, seed=seed,
                                      max_impressions=args.max_impressions, max_dev_impressions=0)
            default = common.runtime()
            for name, runtime in (("default", default), ("fp32", default.plain_fp32())):
                trainer = Trainer(**prepared.trainer_args(), runtime=runtime, device=str(device))
                precision = precision or trainer.precision
                result, seconds = common.timed(trainer.fit)
                runs[name].append({"seed": seed, "auc": round(result.metrics["auc"], 6),
                                   "train_s": round(sum(h["seconds"] - h["eval_seconds"] for h in result.history), 1)})
    default = np.array([r["auc"] for r in runs["default"]])
    fp32 = np.array([r["auc"] for r in runs["fp32"]])
    common.emit("parity", {
        "device": str(device), "precision": precision, "default": runs["default"], "fp32": runs["fp32"],
        "default_mean_auc": round(float(default.mean()), 6), "fp32_mean_auc": round(float(fp32.mean()), 6),
        "mean_diff": round(float(default.mean() - fp32.mean()), 6),
        "max_abs_seed_diff": round(float(np.abs(default - fp32).max()), 6), "last_run_s": round(seconds, 1),
    }, args=args, device=device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
