"""``python -m bench.parity``: does the fast training path learn as well as the plain fp32 one?

For each seed, the same prepared run (corpus, word vectors, initial weights) is trained twice
for ``--epochs`` epochs: once on the default path (bf16 matmuls where the CPU has them,
length-chunked titles, fused Adam, fast dropout masks) and once on the plain fp32 path
(``TrainConfig.plain_fp32``). Both
are scored by the same ``evaluate_split`` on the whole dev split. Prints one JSON line with
the per-seed AUCs, the mean of each path and the largest per-seed difference.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from . import common


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (added to --seed)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-impressions", type=int, default=0, help="cap on train impressions (0: all)")
    args = p.parse_args(argv)
    common.apply_threads(args.threads)

    from nram_core.data.layout import resolve_layout
    from nram_core.train import Trainer, pick_device, prepare_run

    device = pick_device(args.device)
    runs: dict[str, list[dict]] = {"default": [], "fp32": []}
    precision = None
    with common.corpus_dir(args.data) as folder:
        layout = resolve_layout(folder)
        for seed in range(args.seed, args.seed + args.seeds):
            model_cfg, train_cfg = common.preset(args.preset)
            train_cfg = dataclasses.replace(train_cfg, epochs=args.epochs, seed=seed,
                                            max_impressions=args.max_impressions, max_dev_impressions=0)
            prepared = prepare_run(layout, model_cfg, train_cfg)
            plain = prepared.train_config.plain_fp32()
            for name, cfg in (("default", prepared.train_config), ("fp32", plain)):
                trainer = Trainer(**{**prepared.trainer_args(), "train_config": cfg}, device=str(device))
                precision = precision or trainer.precision
                start = time.perf_counter()
                result = trainer.fit()
                seconds = time.perf_counter() - start
                runs[name].append({"seed": seed, "auc": round(result.metrics["auc"], 6),
                                   "train_s": round(sum(h["seconds"] - h["eval_seconds"] for h in result.history), 1)})
    default = np.array([r["auc"] for r in runs["default"]])
    fp32 = np.array([r["auc"] for r in runs["fp32"]])
    common.emit({"bench": "parity", "preset": args.preset, "epochs": args.epochs, "device": str(device),
                 "precision": precision, "seeds": args.seeds, "default": runs["default"], "fp32": runs["fp32"],
                 "default_mean_auc": round(float(default.mean()), 6), "fp32_mean_auc": round(float(fp32.mean()), 6),
                 "mean_diff": round(float(default.mean() - fp32.mean()), 6),
                 "max_abs_seed_diff": round(float(np.abs(default - fp32).max()), 6),
                 "last_run_s": round(seconds, 1), "machine": common.machine(device)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
