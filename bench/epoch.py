"""``python -m bench.epoch``: training samples/s and the process's memory across an epoch.

The real ``Trainer`` (the preset's batch size, negatives and CPU fast path) trains on the train
split of ``--data`` (at MIND-large scale: 2.2M impressions, 4.7M clicks, so 73k steps of 64)
for one epoch, or for its first ``--max-steps`` steps. The dev split is not loaded (no
evaluation), and the word vectors are random (``word_vectors="none"``): what is measured is
the training loop, not the preparation, which ``bench.prepare`` times.

It prints one JSON line: ``samples_per_s`` (after ``--warmup`` steps), the resident set size of
this process at the first step (``rss_start_mb``), at the last (``rss_end_mb``) and its largest
sample (``rss_max_mb``, sampled every ``--every`` steps), the steps done and the steps in the
epoch (``epoch_s_projected``: the whole epoch at the measured rate when ``--max-steps`` cut it).
The resident set counts the pages of the memory-mapped split that the sampled batches have
touched so far, which the kernel can drop at any time; ``anon_*_mb`` (``RssAnon``) is the
process's own memory, without them. ``rss_by_step`` lists [step, rss, anon] samples.
Flat memory means ``anon_end_mb`` close to ``anon_start_mb`` with the whole epoch run.
"""
from __future__ import annotations

import time

from nram_core.callbacks import Callback

from . import common


def rss_mb() -> tuple[float, float]:
    """This process's resident set size now and its anonymous part (Linux /proc/self/status), MB."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                fields[name] = int(value.split()[0]) / 1024  # kB -> MB
    return fields.get("VmRSS", float("nan")), fields.get("RssAnon", float("nan"))


class _Watch(Callback):
    def __init__(self, *, warmup: int, every: int):
        self.warmup, self.every = warmup, every
        self.rss: list[tuple[int, tuple[float, float]]] = []
        self.started = self.ended = None
        self.samples = 0
        self.steps_in_epoch = 0

    def on_step(self, trainer, info) -> None:
        now = time.perf_counter()
        self.steps_in_epoch = info.steps_in_epoch
        if info.global_step == 1 or info.global_step % self.every == 0:
            self.rss.append((info.global_step, rss_mb()))
        if info.global_step == self.warmup:
            self.started = now
        elif info.global_step > self.warmup:
            self.samples += trainer.batches.batch_size
            self.ended = now

    def on_train_end(self, trainer, result) -> None:
        if not self.rss or self.rss[-1][0] != result.global_step:
            self.rss.append((result.global_step, rss_mb()))


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0], default_preset="demo")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: the whole epoch)")
    p.add_argument("--warmup", type=int, default=20, help="steps left out of samples_per_s")
    p.add_argument("--every", type=int, default=500, help="steps between two RSS samples")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers building batches")
    args, device = common.start(p, argv)
    with common.corpus_dir(args.data) as folder:
        prepared, load_s = common.timed(lambda: common.prepare(
            args, folder, dev=False, epochs=1, max_steps=args.max_steps, seed=args.seed, word_vectors="none"))
    watch = _Watch(warmup=args.warmup, every=args.every)
    trainer = common.train_only(prepared, device=str(device), callbacks=[watch],
                                runtime=common.runtime(num_workers=args.workers))
    rss_before = rss_mb()[0]
    trainer.fit()
    seconds = (watch.ended - watch.started) if watch.started and watch.ended else float("nan")
    rate = watch.samples / seconds if seconds == seconds and seconds > 0 else None
    steps_done = watch.rss[-1][0]
    common.emit("epoch", {
        "device": str(device), "precision": trainer.precision, "impressions": prepared.corpus.train.num_impressions,
        "samples_in_epoch": trainer.batches.num_samples,
        "steps_in_epoch": watch.steps_in_epoch, "steps_done": steps_done,
        "whole_epoch": steps_done >= watch.steps_in_epoch,
        "samples_per_s": round(rate, 1) if rate else None,
        "epoch_s_projected": round(trainer.batches.num_samples / rate, 1) if rate else None,
        "load_s": round(load_s, 1), "rss_before_fit_mb": round(rss_before, 1),
        "rss_start_mb": round(watch.rss[0][1][0], 1), "rss_end_mb": round(watch.rss[-1][1][0], 1),
        "rss_max_mb": round(max(r for _, (r, _) in watch.rss), 1),
        "anon_start_mb": round(watch.rss[0][1][1], 1), "anon_end_mb": round(watch.rss[-1][1][1], 1),
        "anon_max_mb": round(max(a for _, (_, a) in watch.rss), 1),
        "rss_by_step": [[s, round(r, 1), round(a, 1)] for s, (r, a) in watch.rss[:: max(1, len(watch.rss) // 12)]],
        "peak_rss_mb": common.peak_rss_mb(),
    }, args=args, device=device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
