"""``python -m bench.profile``: where the CPU time of a training step and of an evaluation goes.

``torch.profiler`` records ``--steps`` Trainer steps (after a warm-up) of the chosen preset on the
demo corpus (or ``--data``), then one ``scoring.evaluate_split`` over ``--impressions`` dev
impressions with a seeded model of the same preset. The one JSON line holds, per phase
(``train_step``, ``evaluate_split``), the wall time and the operators that take the most self
CPU time with their share of the phase's total self CPU time. Shares, not seconds, are the
figure to compare: the machine is noisy.
"""
from __future__ import annotations

import dataclasses

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
    args, device = common.start(p, argv)

    from torch.profiler import ProfilerActivity, profile

    from nram_core.model import NRAM
    from nram_core.scoring import evaluate_split
    from nram_core.train import Callback, seed_everything

    with common.corpus_dir(args.data) as folder:
        prepared = common.prepare(args, folder, seed=args.seed, epochs=10_000, word_vectors="none")
    train_cfg = prepared.train_config
    trainer = common.train_only(prepared, train_config=dataclasses.replace(train_cfg, max_steps=2),
                                device=str(device))
    trainer.fit()  # warm-up: allocator, kernels, the first batches

    class Window(Callback):
        steps = 0

        def on_step(self, trainer, info):
            Window.steps += 1

    trainer.train_config = dataclasses.replace(train_cfg, max_steps=args.steps)  # fit() starts again at step 0
    trainer.callbacks = [Window()]
    with profile(activities=[ProfilerActivity.CPU]) as train_prof:
        _, train_s = common.timed(trainer.fit)
    assert Window.steps == args.steps, (Window.steps, args.steps)

    seed_everything(args.seed)
    model = NRAM(prepared.model_config).to(device).eval()
    split = prepared.corpus.dev if prepared.corpus.dev is not None else prepared.corpus.train
    evaluate_split(model, split, max_impressions=min(64, args.impressions))  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as eval_prof:
        _, eval_s = common.timed(lambda: evaluate_split(model, split, max_impressions=args.impressions))
    common.emit("profile", {
        "device": str(device), "batch_size": train_cfg.batch_size,
        "train_step": {"s_per_step": round(train_s / args.steps, 4), "top": _top(train_prof, args.top)},
        "evaluate_split": {"s": round(eval_s, 3), "top": _top(eval_prof, args.top)},
    }, args=args, device=device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
