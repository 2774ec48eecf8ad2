"""``python -m bench.candidates``: each CPU speed candidate, timed against the plain fp32 path in one run.

``score --run RUN --data DIR`` scores the dev split of ``--data`` with the trained model of
``--run``: the plain fp32 path (``precompute=False``), the default path (projection tables and
length-sorted histories), the default path with bf16 Linear GEMMs (``fastpath.kernels``), dynamic
int8 Linear layers (``torch.ao.quantization.quantize_dynamic``) and bf16 autocast. For each: the
best of ``--rounds`` timings (the paths take turns in each round), the speed-up over the plain
path, the mean dev AUC difference and the largest per-impression AUC difference (ties by
``metrics.impression_ranks``).

``onnx --run RUN --data DIR`` times the user encoder, the largest part of a default scoring
run, on the dev split's distinct histories: PyTorch's default path (``scoring.encode_histories``)
against the same encoder exported to ONNX and run by ONNX Runtime on the same length-sorted
chunks (needs ``pip install onnxruntime onnx``; not a project requirement).

``train [--data DIR] [--preset P]`` times Trainer steps (best of ``--rounds`` rounds, each
path in turn on one shared model): the plain fp32 path (``RuntimeConfig.plain_fp32``), each
change alone on top of it, the default, and the default with foreach instead of fused Adam.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import numpy as np

from nram_core.config import PRESETS

from . import common


def score_main(args: argparse.Namespace) -> dict:
    import torch

    from nram_core.fastpath import kernels
    from nram_core.metrics import impression_ranks, per_impression_metrics
    from nram_core.scoring import score_impressions

    split, model = common.scoring_setup(args, torch.device("cpu"))

    def measure(net, context, precompute: bool) -> common.Lap:
        """The scoring run's seconds (inside the context, not entering it) and each impression's AUC."""
        with context():
            (scores, labels, offsets), seconds = common.timed(lambda: score_impressions(net, split,
                                                                                        precompute=precompute))
        return common.Lap(seconds, value=per_impression_metrics(labels, -impression_ranks(scores, offsets),
                                                                 offsets)[:, 0])

    # a loaded run is not installed (plain nn.Linear layers), which is what the quantiser converts
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    variants = {
        "fp32_plain": (model, contextlib.nullcontext, False),
        "default_precompute": (model, contextlib.nullcontext, True),
        "precompute_bf16_matmuls": (model, lambda: kernels(model, matmul_dtype=torch.bfloat16), True),
        "int8_dynamic": (int8, contextlib.nullcontext, False),
        "bf16_autocast": (model, lambda: torch.autocast("cpu", dtype=torch.bfloat16), False),
    }
    for net, context, precompute in variants.values():  # warm-up
        with context():
            score_impressions(net, split, max_impressions=64, precompute=precompute)
    laps = common.best_of_rounds({name: lambda v=variant: measure(*v) for name, variant in variants.items()},
                                 args.rounds)
    base = laps["fp32_plain"].best
    record = {"impressions": split.num_impressions}
    for name, path in laps.items():
        lap = path.best
        record[name] = {"s": round(lap.seconds, 3), "speedup_vs_fp32": round(base.seconds / lap.seconds, 2),
                        "mean_auc_diff": round(float(np.nanmean(lap.value) - np.nanmean(base.value)), 6),
                        "max_impression_auc_diff": round(float(np.nanmax(np.abs(lap.value - base.value))), 4)}
    return record


def onnx_main(args: argparse.Namespace) -> dict:
    import importlib.util
    import io

    import torch

    from nram_core.data.batching import gather_histories
    from nram_core.fastpath import by_length, lengths_of, news_table
    from nram_core.scoring import distinct_histories, encode_all_news, encode_histories

    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"bench.candidates onnx: {' and '.join(missing)} not installed "
                         f"(pip install {' '.join(missing)})")
    import onnxruntime

    split, model = common.scoring_setup(args, torch.device("cpu"))
    history, mask = gather_histories(split, np.arange(split.num_impressions), model.config.history_len)
    first, _ = distinct_histories(history, mask)
    history, mask = history[first], mask[first]  # [U,H] distinct histories
    lengths = lengths_of(torch.from_numpy(mask))  # [U]
    news = encode_all_news(model, split)  # [N+1,D]

    class FromProjections(torch.nn.Module):  # the user encoder after the news table's gather
        def __init__(self):
            super().__init__()
            self.encoder = model.user_encoder

        def forward(self, q, k, v, keep):
            context, _ = self.encoder.contextualise(None, keep, qkv=(q, k, v, keep))  # 3 x [b,w,D] -> [b,w,D]
            return self.encoder.pooling(context, keep)[0]  # [b,w,D] -> [b,D]

    with torch.inference_mode():
        table = news_table(model.user_encoder, news)
        width = int(lengths.max())
        example = (*table.project(torch.from_numpy(history[:8, :width])), torch.from_numpy(mask[:8, :width]))
    buffer = io.BytesIO()
    torch.onnx.export(FromProjections().eval(), example, buffer, input_names=["q", "k", "v", "keep"],
                      output_names=["user"], dynamo=False, opset_version=17,
                      dynamic_axes={**{n: {0: "b", 1: "w"} for n in ("q", "k", "v", "keep")}, "user": {0: "b"}})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def with_onnx() -> torch.Tensor:
        def encode(rows: torch.Tensor, cut: int) -> torch.Tensor:
            picked = rows.numpy()
            q, k, v = table.project(torch.from_numpy(history[picked, :cut]))  # [b,cut] -> 3 x [b,cut,D]
            feed = {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "keep": mask[picked, :cut]}
            return torch.from_numpy(session.run(None, feed)[0])  # [b,D]
        with torch.inference_mode():
            return by_length(lengths, 1024, encode)  # [U,D]

    def with_torch() -> torch.Tensor:
        return encode_histories(model, news, history, mask)  # [U,D]

    paths = {"torch_default": with_torch, "onnxruntime": with_onnx}
    for path in paths.values():  # warm-up
        path()
    best = {name: laps.best for name, laps in common.best_of_rounds(paths, args.rounds).items()}
    torch_s, onnx_s = best["torch_default"].seconds, best["onnxruntime"].seconds
    return {"onnxruntime": onnxruntime.__version__, "histories": len(history),
            "torch_default_s": round(torch_s, 3), "onnxruntime_s": round(onnx_s, 3),
            "onnxruntime_speedup": round(torch_s / onnx_s, 2),
            "max_abs_diff": float((best["torch_default"].value - best["onnxruntime"].value).abs().max())}


def train_main(args: argparse.Namespace) -> dict:
    import torch

    from nram_core.model import NRAM
    from nram_core.train import seed_everything

    from .train import ours_round

    with common.corpus_dir(args.data) as folder:
        prepared = common.prepare(args, folder, dev=False, epochs=10_000, seed=args.seed, word_vectors="none")
    default = common.runtime()
    plain = default.plain_fp32()
    seed_everything(args.seed)
    model = NRAM(prepared.model_config)
    paths = {  # name -> (runtime config, Adam options)
        "fp32_plain": (plain, {}),
        "fast_dropout": (dataclasses.replace(plain, fast_dropout=True), {}),
        "title_chunk": (dataclasses.replace(plain, title_chunk=default.title_chunk or 256), {}),
        "bf16_matmuls": (dataclasses.replace(plain, amp=True), {}),
        "fused_adam": (dataclasses.replace(plain, fused_adam=True), {}),
        "default": (default, {}),
        "default_adam_foreach": (dataclasses.replace(default, fused_adam=False), {"foreach": True}),
    }
    trainers = {}
    recipe = prepared.train_config
    for name, (config, adam) in paths.items():
        trainer = common.train_only(prepared, runtime=config, device="cpu", model=model)
        if adam:
            trainer.optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                                 **adam)
        trainers[name] = trainer
    laps = common.best_of_rounds({name: lambda t=t: ours_round(t, args.warmup, args.steps)
                                  for name, t in trainers.items()}, args.rounds)
    base = laps["fp32_plain"].best.rate
    record = {"batch_size": recipe.batch_size, "precision": trainers["default"].precision}
    for name, path in laps.items():
        rate = path.best.rate
        record[name] = {"samples_per_s": round(rate, 1), "speedup_vs_fp32_plain": round(rate / base, 2)}
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    for what, about in (("score", "scoring paths of a trained run"),
                        ("onnx", "the user encoder in ONNX Runtime against PyTorch")):
        s = sub.add_parser(what, help=about)
        s.add_argument("--run", required=True, help="a trained run folder")
        s.add_argument("--data", required=True, help="the MIND-format corpus it was trained on (its dev split)")
        s.add_argument("--rounds", type=int, default=3)
    t = sub.add_parser("train", help="training paths")
    t.add_argument("--data", help="MIND-format corpus (default: the demo corpus, seed 0, generated)")
    t.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    figures = {"score": score_main, "onnx": onnx_main, "train": train_main}[args.what](args)
    common.emit(f"candidates-{args.what}", figures, args=args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
