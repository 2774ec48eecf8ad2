"""``python -m bench.train``: training samples/s of the Trainer vs the naive reference loop.

Both paths train the same model object with the same preset, batch size, negatives and
optimiser on the same corpus, alternating in ``--rounds`` rounds of ``--warmup`` + ``--steps``
steps each, and the best round of each is reported (the machine is shared and noisy).
Ours is ``nram_core.train.Trainer.fit`` itself (unique-news batches, trimmed padding,
pre-tokenised arrays, length-chunked titles, bf16 matmuls where the CPU has them, fused
Adam, workers/compile per the flags); the reference is ``bench.baseline.NaiveTrainSamples``
through a DataLoader and ``naive_logits``. The same Trainer on its plain fp32 path
(``TrainConfig.plain_fp32``: every GEMM in fp32, titles cut to the batch's longest, Adam's
per-tensor loop, ``F.dropout``'s masks, as the Trainer ran before issue 14) is timed in the
same rounds: ``speedup_vs_fp32_eager``.
``peak_rss_mb`` is the process peak after our rounds and before any reference step.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from nram_core.data.layout import resolve_layout

from nram_core.data.split import Corpus, load_corpus
from nram_core.model import NRAM
from nram_core.scoring import autocast_for
from nram_core.train import Callback, Trainer, pick_device, seed_everything

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
            self.samples += batches.num_samples - (len(batches) - 1) * batches.batch_size if last else batches.batch_size
            self.steps += 1
            self.end = now


def _cuda_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours_round(trainer: Trainer, warmup: int, steps: int) -> tuple[float, float]:
    """(samples/s, s/step) of ``steps`` Trainer steps after ``warmup`` steps."""
    clock = _StepClock(warmup)
    trainer.callbacks = [clock]
    trainer.train_config = dataclasses.replace(trainer.train_config, max_steps=warmup + steps)
    trainer.fit()
    elapsed = clock.end - clock.start
    return clock.samples / elapsed, elapsed / clock.steps


def baseline_round(loader_iter, model, optimizer, device, amp: bool, warmup: int, steps: int,
                   batch_size: int) -> tuple[float, float]:
    """(samples/s, s/step) of the reference loop: per-sample tokenising loader, every title encoded."""
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
    elapsed = time.perf_counter() - start
    return samples / elapsed, elapsed / steps


def _forever(loader):
    while True:
        yield from loader


def _parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per round and path")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each round (>= 1)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, help="override the preset's batch size")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers, for both paths")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 matmuls: autocast + TF32 on CUDA (both paths), the Linear GEMMs on a CPU with bf16")
    p.add_argument("--title-chunk", type=int, help="TrainConfig.title_chunk for our path (default: the preset's)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile our step (and time the eager step in the same rounds)")
    p.add_argument("--compare-workers", type=int,
                   help="also time our step with this many DataLoader workers in the same rounds")
    p.add_argument("--no-baseline", action="store_true")
    return p


def _naive_path(corpus, model, model_cfg, train_cfg, args, device):
    """The reference loader (an endless iterator) and its own Adam over the same parameters."""
    samples = NaiveTrainSamples(corpus.train, corpus.vocab, title_len=model_cfg.title_len,
                                history_len=model_cfg.history_len, negatives=train_cfg.negatives, seed=args.seed)
    loader = torch.utils.data.DataLoader(samples, batch_size=train_cfg.batch_size, shuffle=True,
                                         num_workers=args.workers, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    return _forever(loader), optimizer


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    args.warmup = max(1, args.warmup)
    common.apply_threads(args.threads)
    device = pick_device(args.device)
    with common.corpus_dir(args.data) as folder:
        load_start = time.perf_counter()
        corpus = load_corpus(resolve_layout(folder), title_len=common.preset(args.preset)[0].title_len,
                             splits=("train",))
        load_s = time.perf_counter() - load_start
    model_cfg, train_cfg = common.configs(args.preset, len(corpus.vocab), batch_size=args.batch_size,
                                          num_workers=args.workers, amp=args.amp, compile=args.compile,
                                          epochs=10_000, seed=args.seed)
    if args.title_chunk is not None:
        train_cfg = dataclasses.replace(train_cfg, title_chunk=args.title_chunk)
    seed_everything(args.seed)
    model = NRAM(model_cfg)
    train_only = Corpus(corpus.vocab, corpus.train, None)  # no dev split: no evaluation inside the timing

    def trainer(config):
        return Trainer(model_config=model_cfg, train_config=config, corpus=train_only, device=str(device),
                       model=model)

    trainers = {"ours": trainer(train_cfg)}  # the variants share the model: same weights, same work
    trainers["fp32_eager"] = trainer(dataclasses.replace(train_cfg.plain_fp32(), compile=False))
    if args.compile:
        trainers["eager"] = trainer(dataclasses.replace(train_cfg, compile=False))
    if args.compare_workers is not None:
        trainers["workers"] = trainer(dataclasses.replace(train_cfg, num_workers=args.compare_workers))
    epoch_samples = trainers["ours"].batches.num_samples
    record = {"bench": "train", "preset": args.preset, "device": str(device), "batch_size": train_cfg.batch_size,
              "workers": args.workers, "amp": args.amp, "precision": trainers["ours"].precision,
              "title_chunk": train_cfg.title_chunk, "compile": args.compile,
              "steps": args.steps, "rounds": args.rounds, "corpus_load_s": round(load_s, 3),
              "epoch_samples": epoch_samples, "machine": common.machine(device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed: dict[str, list[tuple[float, float]]] = {name: [] for name in [*trainers, "baseline"]}
    naive = optimizer = None
    for round_no in range(args.rounds):
        for name, variant in trainers.items():
            timed[name].append(ours_round(variant, args.warmup, args.steps))
        if round_no == 0:  # our peak, before any reference step
            record["peak_rss_mb"] = common.peak_rss_mb()
            if device.type == "cuda":
                record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                torch.cuda.reset_peak_memory_stats(device)
        if args.no_baseline:
            continue
        if naive is None:
            naive, optimizer = _naive_path(corpus, model, model_cfg, train_cfg, args, device)
        timed["baseline"].append(baseline_round(naive, model, optimizer, device, args.amp, args.warmup,
                                                args.steps, train_cfg.batch_size))
    best = {name: max(rounds) for name, rounds in timed.items() if rounds}  # (samples/s, s/step) of the best round
    ours = best["ours"][0]
    record.update(samples_per_s=round(ours, 2), ms_per_step=round(best["ours"][1] * 1e3, 2),
                  rounds_samples_per_s=[round(r[0], 2) for r in timed["ours"]],
                  projected_epoch_s=round(epoch_samples / ours, 1))
    record.update(fp32_eager_samples_per_s=round(best["fp32_eager"][0], 2),
                  speedup_vs_fp32_eager=round(ours / best["fp32_eager"][0], 2))
    if "eager" in best:
        record.update(eager_samples_per_s=round(best["eager"][0], 2), compile_speedup=round(ours / best["eager"][0], 2))
    if "workers" in best:
        record.update(compare_workers=args.compare_workers, compare_workers_samples_per_s=round(best["workers"][0], 2),
                      compare_workers_speedup=round(best["workers"][0] / ours, 2))
    if "baseline" in best:
        base = best["baseline"][0]
        record.update(baseline_samples_per_s=round(base, 2), baseline_ms_per_step=round(best["baseline"][1] * 1e3, 2),
                      baseline_rounds_samples_per_s=[round(r[0], 2) for r in timed["baseline"]],
                      baseline_projected_epoch_s=round(epoch_samples / base, 1), speedup=round(ours / base, 2),
                      process_peak_rss_mb=common.peak_rss_mb())
        if device.type == "cuda":
            record["baseline_peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    common.emit(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
