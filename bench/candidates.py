"""``python -m bench.candidates``: each CPU speed candidate, timed against the plain fp32 path in one run.

``score --run RUN --data DIR`` scores the dev split of ``--data`` with the trained model of
``--run``: the plain fp32 path (``precompute=False``), the default path (projection tables and
length-sorted histories), the default path with bf16 Linear GEMMs (``model.kernels``), dynamic
int8 Linear layers (``torch.ao.quantization.quantize_dynamic``) and bf16 autocast. For each:
the best of ``--rounds`` timings (the paths take turns in each round), the speed-up over the plain path, the mean dev AUC
difference and the largest per-impression AUC difference (ties by ``metrics.impression_ranks``).

``onnx --run RUN --data DIR`` times the user encoder, the largest part of a default scoring
run, on the dev split's distinct histories: PyTorch's default path (``scoring.encode_histories``)
against the same encoder exported to ONNX and run by ONNX Runtime on the same length-sorted
chunks (needs ``pip install onnxruntime onnx``; not a project requirement).

``train [--data DIR] [--preset P]`` times Trainer steps (best of ``--rounds`` rounds, each
path in turn on one shared model): the plain fp32 path (``TrainConfig.plain_fp32``), each
change alone on top of it, the default, and the default with foreach instead of fused Adam.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import time

import numpy as np

from . import common


def score_main(args: argparse.Namespace) -> dict:
    import torch

    from nram_core.checkpoint import load_run
    from nram_core.data import load_corpus, resolve_layout
    from nram_core.metrics import impression_ranks, per_impression_metrics
    from nram_core.model import Linear, kernels
    from nram_core.scoring import score_impressions

    run = load_run(args.run)
    split = load_corpus(resolve_layout(args.data), title_len=run.model_config.title_len, vocab=run.vocab,
                        splits=("dev",)).dev

    def measure(model, context, precompute: bool) -> tuple[float, np.ndarray]:
        with context():
            started = time.perf_counter()
            scores, labels, offsets = score_impressions(model, split, precompute=precompute)
            seconds = time.perf_counter() - started
        return seconds, per_impression_metrics(labels, -impression_ranks(scores, offsets), offsets)[:, 0]

    plain_copy = copy.deepcopy(run.model)
    for module in list(plain_copy.modules()):  # the quantiser converts exact nn.Linear modules only
        for name, child in list(module.named_children()):
            if isinstance(child, Linear):
                layer = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                layer.load_state_dict(child.state_dict())
                setattr(module, name, layer)
    int8 = torch.ao.quantization.quantize_dynamic(plain_copy, {torch.nn.Linear}, dtype=torch.qint8)
    variants = {
        "fp32_plain": (run.model, contextlib.nullcontext, False),
        "default_precompute": (run.model, contextlib.nullcontext, True),
        "precompute_bf16_matmuls": (run.model, lambda: kernels(run.model, matmul_dtype=torch.bfloat16), True),
        "int8_dynamic": (int8, contextlib.nullcontext, False),
        "bf16_autocast": (run.model, lambda: torch.autocast("cpu", dtype=torch.bfloat16), False),
    }
    for model, context, precompute in variants.values():  # warm-up
        with context():
            score_impressions(model, split, max_impressions=64, precompute=precompute)
    timed: dict[str, tuple[float, np.ndarray]] = {}
    for _ in range(args.rounds):  # round by round, so that every path sees the same machine load
        for name, variant in variants.items():
            seconds, auc = measure(*variant)
            timed[name] = (min(seconds, timed[name][0]) if name in timed else seconds, auc)
    base_s, base_auc = timed["fp32_plain"]
    record = {"bench": "candidates-score", "impressions": split.num_impressions}
    for name, (seconds, auc) in timed.items():
        record[name] = {"s": round(seconds, 3), "speedup_vs_fp32": round(base_s / seconds, 2),
                        "mean_auc_diff": round(float(np.nanmean(auc) - np.nanmean(base_auc)), 6),
                        "max_impression_auc_diff": round(float(np.nanmax(np.abs(auc - base_auc))), 4)}
    return record


def onnx_main(args: argparse.Namespace) -> dict:
    import importlib.util
    import io

    import torch

    from nram_core.checkpoint import load_run
    from nram_core.data import load_corpus, resolve_layout
    from nram_core.data.batching import gather_histories
    from nram_core.model import by_length, lengths_of
    from nram_core.scoring import distinct_histories, encode_all_news, encode_histories

    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"bench.candidates onnx: {' and '.join(missing)} not installed "
                         f"(pip install {' '.join(missing)})")
    import onnxruntime

    run = load_run(args.run)
    model = run.model.eval()
    split = load_corpus(resolve_layout(args.data), title_len=run.model_config.title_len, vocab=run.vocab,
                        splits=("dev",)).dev
    history, mask = gather_histories(split, np.arange(split.num_impressions), run.model_config.history_len)
    first, _ = distinct_histories(history, mask)
    history, mask = history[first], mask[first]  # [U,H] distinct histories
    lengths = lengths_of(torch.from_numpy(mask))  # [U]
    news = encode_all_news(model, split)  # [N+1,D]

    class FromProjections(torch.nn.Module):  # the user encoder after the news table's gather
        def __init__(self):
            super().__init__()
            self.encoder = model.user_encoder

        def forward(self, q, k, v, keep):
            return self.encoder(None, keep, projected=(q, k, v))[0]  # 3 x [b,w,D] -> [b,D]

    with torch.inference_mode():
        table = model.news_table(news)
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
    timed: dict[str, float] = {}
    vectors: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        for name, path in paths.items():
            started = time.perf_counter()
            vectors[name] = path()
            timed[name] = min(timed.get(name, float("inf")), time.perf_counter() - started)
    return {"bench": "candidates-onnx", "onnxruntime": onnxruntime.__version__, "histories": len(history),
            "torch_default_s": round(timed["torch_default"], 3), "onnxruntime_s": round(timed["onnxruntime"], 3),
            "onnxruntime_speedup": round(timed["torch_default"] / timed["onnxruntime"], 2),
            "max_abs_diff": float((vectors["torch_default"] - vectors["onnxruntime"]).abs().max())}


def train_main(args: argparse.Namespace) -> dict:
    import torch

    from nram_core.data.layout import resolve_layout
    from nram_core.data.split import Corpus, load_corpus
    from nram_core.model import NRAM
    from nram_core.train import Trainer, seed_everything

    from .train import ours_round

    with common.corpus_dir(args.data) as folder:
        corpus = load_corpus(resolve_layout(folder), title_len=common.preset(args.preset)[0].title_len,
                             splits=("train",))
    model_cfg, default = common.configs(args.preset, len(corpus.vocab), epochs=10_000, seed=args.seed)
    plain = default.plain_fp32()
    seed_everything(args.seed)
    model = NRAM(model_cfg)
    train_only = Corpus(corpus.vocab, corpus.train, None)
    paths = {  # name -> (config, Adam options)
        "fp32_plain": (plain, {}),
        "fast_dropout": (dataclasses.replace(plain, fast_dropout=True), {}),
        "title_chunk": (dataclasses.replace(plain, title_chunk=default.title_chunk or 256), {}),
        "bf16_matmuls": (dataclasses.replace(plain, amp=True), {}),
        "fused_adam": (dataclasses.replace(plain, fused_adam=True), {}),
        "default": (default, {}),
        "default_adam_foreach": (dataclasses.replace(default, fused_adam=False), {"foreach": True}),
    }
    trainers = {}
    for name, (config, adam) in paths.items():
        trainer = Trainer(model_config=model_cfg, train_config=config, corpus=train_only, device="cpu", model=model)
        if adam:
            trainer.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                                 **adam)
        trainers[name] = trainer
    timed: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            timed[name].append(ours_round(trainer, args.warmup, args.steps)[0])
    base = max(timed["fp32_plain"])
    record = {"bench": "candidates-train", "preset": args.preset, "batch_size": default.batch_size,
              "precision": trainers["default"].precision, "steps": args.steps, "rounds": args.rounds}
    for name, rates in timed.items():
        record[name] = {"samples_per_s": round(max(rates), 1), "speedup_vs_fp32_plain": round(max(rates) / base, 2)}
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("score", help="scoring paths of a trained run")
    s.add_argument("--run", required=True, help="a trained run folder")
    s.add_argument("--data", required=True, help="the MIND-format corpus it was trained on (dev split scored)")
    s.add_argument("--rounds", type=int, default=3)
    o = sub.add_parser("onnx", help="the user encoder in ONNX Runtime against PyTorch")
    o.add_argument("--run", required=True, help="a trained run folder")
    o.add_argument("--data", required=True, help="the MIND-format corpus it was trained on (dev split)")
    o.add_argument("--rounds", type=int, default=3)
    t = sub.add_parser("train", help="training paths")
    t.add_argument("--data", help="MIND-format corpus (default: the demo corpus, seed 0, generated)")
    t.add_argument("--preset", default="paper")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    record = {"score": score_main, "onnx": onnx_main, "train": train_main}[args.what](args)
    common.emit({**record, "machine": common.machine()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
