"""``python -m bench.profile``: where the CPU time of a training step and of an evaluation goes.

``torch.profiler`` records ``--steps`` Trainer steps (after a warm-up) of the chosen preset on the
demo corpus (or ``--data``), then one ``scoring.evaluate_split`` over ``--impressions`` dev
impressions with a seeded model of the same preset. It prints one JSON line per phase: the
wall time, and the operators that take the most self CPU time with their share of the phase's
total self CPU time. Shares, not seconds, are the figure to compare: the machine is noisy.
"""
from __future__ import annotations

import dataclasses
import time

from . import common


def _top(profile, n: int) -> list[dict]:
    events = profile.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return [{"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
            for e in ranked]


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="training steps recorded (after 2 warm-up steps)")
    p.add_argument("--impressions", type=int, default=500, help="dev impressions evaluated")
    p.add_argument("--top", type=int, default=12, help="operators listed per phase")
    args = p.parse_args(argv)
    common.apply_threads(args.threads)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from nram_core.data import load_corpus, resolve_layout
    from nram_core.data.split import Corpus
    from nram_core.model import NRAM
    from nram_core.scoring import evaluate_split
    from nram_core.train import Callback, Trainer, pick_device, seed_everything

    device = pick_device(args.device)
    with common.corpus_dir(args.data) as folder:
        corpus = load_corpus(resolve_layout(folder), title_len=common.preset(args.preset)[0].title_len)
    model_cfg, train_cfg = common.configs(args.preset, len(corpus.vocab), seed=args.seed, epochs=10_000,
                                          word_vectors="none")
    seed_everything(args.seed)
    trainer = Trainer(model_config=model_cfg, train_config=dataclasses.replace(train_cfg, max_steps=2),
                      corpus=Corpus(corpus.vocab, corpus.train, None), device=str(device))
    trainer.fit()  # warm-up: allocator, kernels, the first batches

    class Window(Callback):
        steps = 0

        def on_step(self, trainer, info):
            Window.steps += 1

    trainer.train_config = dataclasses.replace(train_cfg, max_steps=args.steps)  # fit() starts again at step 0
    trainer.callbacks = [Window()]
    activities = [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        trainer.fit()
        train_s = time.perf_counter() - started
    assert Window.steps == args.steps, (Window.steps, args.steps)
    common.emit({"bench": "profile", "phase": "train_step", "preset": args.preset, "steps": args.steps,
                 "batch_size": train_cfg.batch_size, "s_per_step": round(train_s / args.steps, 4),
                 "top": _top(prof, args.top), "machine": common.machine(device)})

    seed_everything(args.seed)
    model = NRAM(model_cfg).to(device).eval()
    split = corpus.dev if corpus.dev is not None else corpus.train
    evaluate_split(model, split, max_impressions=min(64, args.impressions))  # warm-up
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        evaluate_split(model, split, max_impressions=args.impressions)
        eval_s = time.perf_counter() - started
    common.emit({"bench": "profile", "phase": "evaluate_split", "preset": args.preset,
                 "impressions": args.impressions, "s": round(eval_s, 3), "top": _top(prof, args.top),
                 "torch": torch.__version__, "machine": common.machine(device)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
