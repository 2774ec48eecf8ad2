"""``python -m bench.train``: training samples/s of the Trainer vs the naive reference loop.

Both paths train the same model object with the same preset, batch size, negatives and
optimiser on the same corpus, alternating in ``--rounds`` rounds of ``--warmup`` + ``--steps``
steps each, and the best round of each is reported (the machine is shared and noisy).
Ours is ``nram_core.train.Trainer.fit`` itself (unique-news batches, trimmed padding,
pre-tokenised arrays, length-chunked titles, bf16 matmuls where the CPU has them, fused
Adam, workers/compile per the flags); the reference is ``bench.baseline.NaiveTrainSamples``
through a DataLoader and ``naive_logits``. The same Trainer on its plain fp32 path
(``RuntimeConfig.plain_fp32``: every GEMM in fp32, titles cut to the batch's longest, Adam's
per-tensor loop, ``F.dropout``'s masks, as the Trainer ran before issue 14) is timed in the
same rounds: ``speedup_vs_fp32_eager``.
The Trainers come from ``prepare_run`` on the train split (random word vectors: the vectors'
values do not change a step's work). ``peak_rss_mb`` is the process peak before any reference
step. ``--model naml|lstur|npa`` times another family at its own sizes for the preset
(``config.FAMILY_SIZES``), against its plain fp32 path; the reference loop is NRAM's only.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from nram_core.fastpath import autocast_for
from nram_core.config import KINDS
from nram_core.families import build_model
from nram_core.train import Callback, Trainer, seed_everything

from . import common
from .baseline import NaiveTrainSamples, naive_logits


class _StepClock(Callback):
    """Times the steps after the warm-up ones; counts the samples of each timed step."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.samples, self.steps = warmup, None, None, 0, 0

    def on_step(self, trainer, info) -> None:
        now = time.perf_counter()
        if info.global_step == self.warmup:
            self.start = now
        elif info.global_step > self.warmup:
            batches = trainer.batches
            last = info.step == info.steps_in_epoch
            full = batches.batch_size
            self.samples += batches.num_samples - (len(batches) - 1) * full if last else full
            self.steps += 1
            self.end = now


def _cuda_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours_round(trainer: Trainer, warmup: int, steps: int) -> common.Lap:
    """``steps`` Trainer steps after ``warmup`` steps: their seconds, samples (work) and steps (value)."""
    clock = _StepClock(warmup)
    trainer.callbacks = [clock]
    trainer.train_config = dataclasses.replace(trainer.train_config, max_steps=warmup + steps)
    trainer.fit()
    return common.Lap(clock.end - clock.start, work=clock.samples, value=clock.steps)


def baseline_round(loader_iter, model, optimizer, device, amp: bool, warmup: int, steps: int) -> common.Lap:
    """The same for the reference loop: per-sample tokenising loader, every title encoded."""
    model.train()
    start = samples = 0
    for step in range(warmup + steps):
        if step == warmup:
            _cuda_sync(device)
            start, samples = time.perf_counter(), 0
        history, mask, candidates, labels = next(loader_iter)
        history, mask = history.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        candidates, labels = candidates.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast_for(device, amp):
            logits = naive_logits(model, history, mask, candidates)  # [B,1+K]
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        samples += len(labels)
    return common.Lap(time.perf_counter() - start, work=samples, value=steps)


def _forever(loader):
    while True:
        yield from loader


def _parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per round and path")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each round (>= 1)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, help="override the preset's batch size")
    common.add_hogs(p)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers, for both paths")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 matmuls: autocast + TF32 on CUDA (both paths), the Linear GEMMs on a CPU with bf16")
    p.add_argument("--title-chunk", type=int, help="RuntimeConfig.title_chunk for our path (default: its default)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile our step (and time the eager step in the same rounds)")
    p.add_argument("--compare-workers", type=int,
                   help="also time our step with this many DataLoader workers in the same rounds")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--model", choices=KINDS, default="nram",
                   help="the model family to time (its own sizes for --preset); the reference NRMS loop is NRAM's "
                        "only, so another family is timed without it")
    return p


def _naive_path(prepared, model, args, device):
    """The reference loader (an endless iterator) and its own Adam over the same parameters."""
    corpus, model_cfg, train_cfg = prepared.corpus, prepared.model_config, prepared.train_config
    samples = NaiveTrainSamples(corpus.train, corpus.vocab, title_len=model_cfg.title_len,
                                history_len=model_cfg.history_len, negatives=train_cfg.negatives, seed=args.seed)
    loader = torch.utils.data.DataLoader(samples, batch_size=train_cfg.batch_size, shuffle=True,
                                         num_workers=args.workers, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    return _forever(loader), optimizer


def main(argv=None) -> int:
    args, device = common.start(_parser(), argv)
    args.warmup = max(1, args.warmup)
    with common.corpus_dir(args.data) as folder:
        prepared, load_s = common.timed(lambda: common.prepare(
            args, folder, dev=False, batch_size=args.batch_size, epochs=10_000, seed=args.seed, word_vectors="none"))
    runtime = common.runtime(num_workers=args.workers, amp=args.amp, compile=args.compile, title_chunk=args.title_chunk)
    seed_everything(args.seed)
    model = build_model(prepared.model_config)  # shared by every path: same weights, same work
    if args.model != "nram":
        args.no_baseline = True

    def trainer(config):
        return common.train_only(prepared, runtime=config, device=str(device), model=model)

    paths = {"ours": trainer(runtime), "fp32_eager": trainer(dataclasses.replace(runtime.plain_fp32(), compile=False))}
    if args.compile:
        paths["eager"] = trainer(dataclasses.replace(runtime, compile=False))
    if args.compare_workers is not None:
        paths["workers"] = trainer(dataclasses.replace(runtime, num_workers=args.compare_workers))
    ours = paths["ours"]
    figures = {"device": str(device), "model": args.model, "batch_size": prepared.train_config.batch_size,
               "precision": ours.precision,
               "title_chunk": runtime.title_chunk, "corpus_load_s": round(load_s, 3),
               "epoch_samples": ours.batches.num_samples}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rounds = {name: (lambda t=t: ours_round(t, args.warmup, args.steps)) for name, t in paths.items()}
    if not args.no_baseline:
        rounds["baseline"] = _baseline_path(prepared, model, args, device, figures)
    with common.hogs(args.hogs):
        laps = common.best_of_rounds(rounds, args.rounds)
    figures.setdefault("peak_rss_mb", common.peak_rss_mb())  # no reference path: after all our rounds
    if "baseline" in laps and device.type == "cuda":
        figures["baseline_peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    common.emit("train", {**figures, **_figures(laps, figures["epoch_samples"])}, args=args, device=device)
    return 0


def _baseline_path(prepared, model, args, device, figures: dict):
    """One round of the reference loop; its first call notes our peak memory, before any reference step."""
    state = {}

    def one_round() -> common.Lap:
        if not state:
            figures["peak_rss_mb"] = common.peak_rss_mb()
            if device.type == "cuda":
                figures["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                torch.cuda.reset_peak_memory_stats(device)
            state["loader"], state["optimizer"] = _naive_path(prepared, model, args, device)
        return baseline_round(state["loader"], model, state["optimizer"], device, args.amp, args.warmup, args.steps)
    return one_round


def _figures(laps: dict[str, common.Laps], epoch_samples: int) -> dict:
    """Samples/s of each path's best round (``Lap.value``: its steps), and the ratios."""
    best = {name: path.best for name, path in laps.items()}
    ours = best["ours"].rate
    out = {"samples_per_s": round(ours, 2), "ms_per_step": round(best["ours"].seconds / best["ours"].value * 1e3, 2),
           "rounds_samples_per_s": [round(lap.rate, 2) for lap in laps["ours"]],
           "projected_epoch_s": round(epoch_samples / ours, 1),
           "fp32_eager_samples_per_s": round(best["fp32_eager"].rate, 2),
           "speedup_vs_fp32_eager": round(ours / best["fp32_eager"].rate, 2)}
    if "eager" in best:
        out.update(eager_samples_per_s=round(best["eager"].rate, 2),
                   compile_speedup=round(ours / best["eager"].rate, 2))
    if "workers" in best:
        out.update(compare_workers_samples_per_s=round(best["workers"].rate, 2),
                   compare_workers_speedup=round(best["workers"].rate / ours, 2))
    if "baseline" in best:
        base = best["baseline"]
        out.update(baseline_samples_per_s=round(base.rate, 2),
                   baseline_ms_per_step=round(base.seconds / base.value * 1e3, 2),
                   baseline_rounds_samples_per_s=[round(lap.rate, 2) for lap in laps["baseline"]],
                   baseline_projected_epoch_s=round(epoch_samples / base.rate, 1), speedup=round(ours / base.rate, 2),
                   process_peak_rss_mb=common.peak_rss_mb())
    return out


if __name__ == "__main__":
    raise SystemExit(main())
