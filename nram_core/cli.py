"""``python -m nram_core COMMAND``: demo-data, download, train, evaluate, recommend, predict, explain,
attention, experiment.

Errors are one line on stderr and exit code 2; results are one JSON line on stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator, NoReturn, Sequence

import numpy as np

from .callbacks import Callback, EpochInfo, StepInfo, TrainResult
from .config import ModelConfig, TrainConfig, preset, with_overrides, PRESETS
from .data.download import MAX_RATIO, MAX_UNZIPPED_BYTES
from .fileio import DataError, atomic_path, atomic_write_with, json_text, nram_home


# ---- shared argument groups ---------------------------------------------------------------
def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="MIND root (train/ + dev/, MIND*_train/ + MIND*_dev/, their zips) "
                                       "or a single split folder or zip")
    parser.add_argument("--train", dest="train_dir", help="train split folder or zip")
    parser.add_argument("--dev", dest="dev_dir", help="dev split folder or zip")
    parser.add_argument("--strict", action="store_true", help="fail on the first bad row instead of skipping it")
    parser.add_argument("--no-cache", action="store_true", help="re-parse and re-tokenise instead of using the cache")


def _vector_file(value: str) -> str:
    if value in ("corpus", "none"):
        raise argparse.ArgumentTypeError(f"--glove takes a file; for {value!r} use --word-vectors {value}")
    return value


def _add_config_flags(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """One --flag per config field, so every field is settable without editing files (``skip``: fields
    that have their own, richer flag)."""
    group = parser.add_argument_group("config fields (override the preset)")
    for cls in (ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            if f.name in ("vocab_size", "num_categories", "num_subcategories") + skip:  # sizes: always from the data
                continue
            flag = f"--{f.name.replace('_', '-')}"
            text = f"{cls.__name__}.{f.name} (default from preset)"
            if isinstance(f.default, bool):
                group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            else:
                group.add_argument(flag, dest=f.name, type=type(f.default), default=None, help=text)


def _layout(args: argparse.Namespace):
    """The data the flags name; a core error gets the flag it came from."""
    from .data.layout import resolve_layout

    if args.data is None and args.train_dir is None and args.dev_dir is None:
        raise DataError("no data given: pass --data DIR (or --train DIR --dev DIR)")
    try:
        return resolve_layout(args.data, train=args.train_dir, dev=args.dev_dir)
    except DataError as exc:
        flag = "--data" if args.train_dir is None and args.dev_dir is None else "--train/--dev"
        raise DataError(f"{flag} {exc}") from exc


def _print_json(record: dict[str, Any]) -> None:
    print(json_text(record), flush=True)  # strict JSON: a NaN would be null, never a bare NaN


def _metrics_line(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("auc", "mrr", "ndcg@5", "ndcg@10", "impressions", "skipped_impressions")
    return {k: (round(metrics[k], 6) if isinstance(metrics[k], float) else metrics[k]) for k in keys}


# The flag of each setting a core DataError names (``DataError.settings``); others are --field-name.
_FLAGS = {"data": "--data", "train": "--train", "dev": "--dev", "out": "--out", "resume": "--resume",
          "word_vectors": "--word-vectors", "max_unzipped_gb": "--max-unzipped-gb",
          "max_zip_ratio": "--max-zip-ratio"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit code 2), not a page of usage."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _whole_number(value: str, *, lowest: int, meaning: str = "") -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < lowest:
        raise argparse.ArgumentTypeError(f"must be >= {lowest}{meaning}, got {number}")
    return number


def _positive_int(value: str) -> int:
    return _whole_number(value, lowest=1)


def _count(value: str) -> int:
    """A cap where 0 means no cap."""
    return _whole_number(value, lowest=0, meaning=" (0: no cap)")


def _device(value: str) -> str:
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"unknown device {value!r}: use cpu, cuda, cuda:N or mps")
    return value


# ---- commands --------------------------------------------------------------------------------
def cmd_demo_data(args: argparse.Namespace) -> int:
    from .synth import generate

    start = time.perf_counter()
    out = generate(args.out_dir, scale=args.scale, seed=args.seed)
    truth = json.loads((Path(out) / "truth.json").read_text())
    print(f"wrote {args.scale} corpus (seed {args.seed}) to {out} in {time.perf_counter() - start:.1f}s",
          file=sys.stderr)
    _print_json({"out": str(out), "oracle": truth["oracle"], "counts": truth.get("counts", {})})
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .data.download import default_dest, download_mind, tqdm_progress

    dest = Path(args.dest).expanduser() if args.dest else default_dest(args.size)
    with tqdm_progress() as progress:
        folders = download_mind(args.size, dest, splits=args.splits, base_url=args.base_url, on_progress=progress,
                                max_bytes=int(args.max_unzipped_gb * (1 << 30)), max_ratio=args.max_zip_ratio)
    _print_json({split: str(path) for split, path in folders.items()})
    return 0


class _ReadingBars:
    """A tqdm bar per file while a split is read the first time; a warm start (the prepared arrays
    mapped) or a file read in under a second draws nothing."""

    def __init__(self, enabled: bool = True):
        from .data.download import TqdmProgress

        self.bars = TqdmProgress(delay=1.0, file=sys.stderr, leave=False) if enabled else None

    def __call__(self, path: str, done: int, total: int) -> None:
        if self.bars is not None:
            self.bars(f"reading {Path(path).parent.name}/{Path(path).name}", done, total)

    def __enter__(self) -> "_ReadingBars":
        return self

    def __exit__(self, *exc) -> None:
        if self.bars is not None:
            self.bars.close()


class _ProgressBar(Callback):
    """CLI face of the trainer's callbacks: a tqdm bar per epoch and a line of dev metrics."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def on_step(self, trainer, info: StepInfo) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=info.steps_in_epoch, desc=f"epoch {info.epoch}", file=sys.stderr, leave=False)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{info.loss:.4f}", samples_s=f"{info.samples_per_s:.0f}")

    def on_epoch_end(self, trainer, info: EpochInfo) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        shown = ", ".join(f"{k} {v:.4f}" for k, v in (info.metrics or {}).items() if isinstance(v, float))
        print(f"epoch {info.epoch}: loss {info.train_loss:.4f} {shown} ({info.seconds:.1f}s)", file=sys.stderr)

    def on_train_end(self, trainer, result: TrainResult) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .synth import read_truth
    from .train import Trainer, prepare_run

    model_cfg, train_cfg = preset(args.preset)
    overrides = vars(args)
    model_cfg = with_overrides(model_cfg, overrides)
    train_cfg = with_overrides(train_cfg, overrides)
    model_cfg.validate(data_sizes=False)  # fail on bad flags before reading the data
    train_cfg.validate()
    dist_info, device = distributed.init_from_env(args.device)  # under torchrun: join the process group
    rank0 = dist_info.is_main  # only rank 0 prints and writes
    layout = _layout(args)
    with distributed.main_first(), _ReadingBars(rank0 and not args.no_progress) as reading:
        # rank 0 fills the data and vector caches, the other ranks then read them
        prepared = prepare_run(layout, model_cfg, train_cfg, strict=args.strict, cache=not args.no_cache,
                               on_status=(lambda text: print(text, file=sys.stderr)) if rank0 else None,
                               on_progress=reading)
    corpus = prepared.corpus
    for split in (corpus.train, corpus.dev):
        if rank0 and split is not None and any(r.total_skipped or r.dropped for r in split.reports):
            print(split.summary(), file=sys.stderr)
    vectors = prepared.word_vectors
    if rank0:
        print(f"word vectors: {train_cfg.word_vectors}" + (
            f", {vectors.coverage:.1%} of the vocabulary found ({vectors.found} of {len(corpus.vocab) - 2} words)"
            if vectors is not None else " (random initialisation)"), file=sys.stderr)
    out = Path(args.out) if args.out else nram_home() / "runs" / f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(distributed.broadcast_object(str(out)))  # every rank uses rank 0's run folder name
    data_info = {"train": str(layout.train), "dev": str(layout.dev) if layout.dev else None, "preset": args.preset}
    facts = read_truth(args.data)
    if facts is not None:  # a generated corpus: record how to make it again
        data_info["synthetic"] = {"scale": facts.get("scale"), "seed": facts.get("seed")}
    trainer = Trainer(**prepared.trainer_args(), run_dir=out, callbacks=[_ProgressBar(not args.no_progress)],
                      device=device, resume=args.resume, data_info=data_info)
    if rank0:
        ranks = f", {dist_info.world_size} ranks" if dist_info.enabled else ""
        print(f"training on {trainer.device}{ranks}, {trainer.precision} -> {out} "
              f"({trainer.batches.num_samples} samples/epoch)", file=sys.stderr)
    result = trainer.fit()
    distributed.finish()
    if not rank0:
        return 0
    if args.slim:  # a run to ship: drop what only --resume needs
        from .checkpoint import slim

        slim(out)
    if result.metrics is None:
        print("no dev split: nothing to evaluate", file=sys.stderr)
        _print_json({"run": str(out), "epochs": result.epochs_done})
        return 0
    _print_json({**_metrics_line(result.metrics), "run": str(out), "best_epoch": result.best_epoch})
    return 0


def _scored_split(args: argparse.Namespace, layout) -> tuple[str, Path]:
    """The split that evaluate/predict score: --split, else dev; a --data that is itself one split
    folder is that split. Never silently another split than the one asked for."""
    asked = getattr(args, "split", None)
    if asked is None and layout.dev is None and layout.train is not None and args.data is not None \
            and Path(args.data).expanduser().resolve() == layout.train.resolve():
        return "dev", layout.train  # --data names one split folder (or zip) itself
    name = asked or "dev"
    folder = layout.dev if name == "dev" else layout.train
    if folder is None:
        other = " (pass --split train to score the train split)" if name == "dev" and layout.train else ""
        raise DataError(f"--data {args.data or args.dev_dir or args.train_dir}: has no {name} split{other}")
    return name, folder


def _load_run_and_split(args: argparse.Namespace, split_name: str = "dev", *, complete: bool = False):
    """The run of --run, and the split it scores: the one ``_scored_split`` picks for evaluate and
    predict, else the ``split_name`` split (dev, falling back to train for the explorer commands).
    ``complete``: every behaviors row and candidate (``mind.read_behaviors``), as predict needs."""
    from .checkpoint import load_run
    from .train import pick_device

    run = load_run(args.run, device=pick_device(getattr(args, "device", None)))
    layout = _layout(args)
    if hasattr(args, "split"):
        split_name, folder = _scored_split(args, layout)
    else:
        folder = layout.dev if split_name == "dev" and layout.dev is not None else layout.train
    if folder is None:
        raise DataError("no split to use: pass --data or --dev")
    with _ReadingBars() as reading:
        split = run.load_split(split_name, folder, strict=args.strict, cache=not args.no_cache, complete=complete,
                               progress=reading)
    if any(r.total_skipped or r.dropped for r in split.reports):
        print(split.summary(), file=sys.stderr)
    return run, split


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .scoring import evaluate_split

    run, split = _load_run_and_split(args)
    result = evaluate_split(run.model, split, max_impressions=args.max_impressions, precompute=args.precompute)
    if result.impressions == 0:
        if split.num_impressions and not split.behaviors.labelled.any():
            raise DataError(f"{split.folder / 'behaviors.tsv'}: has no labels (a test split?): evaluate needs "
                            "labelled impressions; predict ranks these")
        raise DataError(f"{split.folder}: nothing to score: none of its {split.num_impressions} impressions "
                        f"(after --max-impressions) has both a click and a non-click")
    _print_json({**_metrics_line(result.as_dict()), "split": str(split.folder)})
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from .recommend import Recommender

    run, split = _load_run_and_split(args)
    rec = Recommender(run.model, split)
    history = split.user_history(args.user)
    ranked = rec.rank_catalog(history, top=args.top, category=args.category)
    news = split.news
    for rank, (row, score, prob) in enumerate(zip(ranked.rows, ranked.scores, ranked.probabilities), start=1):
        _print_json({"rank": rank, "news_id": news.ids[row], "score": round(float(score), 5),
                     "probability": round(float(prob), 5), "category": news.categories[news.category[row]],
                     "title": news.titles[row]})
    return 0


PREDICT_BLOCK = 1 << 16  # impressions ranked and written at a time (a MIND-large test split has 57M candidates)


def prediction_lines(split, scores: np.ndarray, offsets: np.ndarray) -> Iterator[str]:
    """MIND leaderboard lines ``ImpId [r1,r2,...]`` with their newline, one per impression in file
    order, ranked ``PREDICT_BLOCK`` impressions at a time: the 1-based rank of each candidate in its
    listed order, ties broken by ``metrics.impression_ranks``."""
    from .metrics import impression_ranks

    ids = split.behaviors.impression_ids
    for lo in range(0, len(offsets) - 1, PREDICT_BLOCK):
        part = offsets[lo: min(lo + PREDICT_BLOCK, len(offsets) - 1) + 1]  # [b+1]
        ranks = impression_ranks(scores[part[0]: part[-1]], part).tolist()  # [m] for the block's candidates
        starts = (part - part[0]).tolist()
        for i, imp_id in enumerate(ids[lo: lo + len(part) - 1].tolist()):
            yield f"{imp_id} [{','.join(map(str, ranks[starts[i]: starts[i + 1]]))}]\n"


def cmd_predict(args: argparse.Namespace) -> int:
    from .scoring import score_impressions

    # Every row gets a line: unknown news are empty titles, a bad row is an error, not a skip.
    run, split = _load_run_and_split(args, complete=True)
    unknown = split.behaviors.report.dropped.get("unknown candidate news (scored as empty titles)", 0)
    if split.num_impressions == 0:
        raise DataError(f"{split.folder / 'behaviors.tsv'}: no impressions to rank")
    scores, _labels, offsets = score_impressions(run.model, split, precompute=args.precompute)
    out = Path(args.out) if args.out else Path(args.run)

    def write_lines(tmp: Path) -> None:  # streamed: the text of 2.4M impressions is never all in memory
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(prediction_lines(split, scores, offsets))

    atomic_write_with(out / "prediction.txt", write_lines)
    with atomic_path(out / "prediction.zip") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(out / "prediction.txt", "prediction.txt")
    labelled = int(split.behaviors.labelled.sum())
    _print_json({"prediction": str(out / "prediction.txt"), "zip": str(out / "prediction.zip"),
                 "impressions": len(offsets) - 1, "labelled_impressions": labelled,
                 "unknown_candidates": int(unknown), "cold_users": int((np.diff(split.behaviors.history_offsets)
                                                                         == 0).sum())})
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .recommend import Recommender

    run, split = _load_run_and_split(args)
    rec = Recommender(run.model, split)
    history = split.user_history(args.user)[-run.model_config.history_len:]
    candidate = rec.row_of(args.news)
    exp = rec.explain(history, np.array([candidate]))
    words = run.vocab.words
    news = split.news

    def weighted_words(row: int, weights: np.ndarray) -> list[list]:
        tokens = news.tokens[row]
        return [[words[t], round(float(w), 4)] for t, w in zip(tokens, weights) if t]

    clicks = [
        {"news_id": news.ids[row], "title": news.titles[row], "click_weight": round(float(exp.click_weights[i]), 4),
         "contribution": round(float(exp.contributions[0, i]), 5),
         "words": weighted_words(row, exp.history_word_weights[i])}
        for i, row in enumerate(history)
    ]
    clicks.sort(key=lambda c: -abs(c["contribution"]))
    _print_json({"user": args.user, "news_id": args.news, "title": news.titles[candidate],
                 "score": round(float(exp.scores[0]), 5),
                 "sum_of_contributions": round(float(exp.contributions[0].sum()), 5),
                 "candidate_words": weighted_words(candidate, exp.candidate_word_weights[0]), "clicks": clicks,
                 **({"candidate_views": dict(zip(("title", "category", "subcategory"),
                                                 (round(float(w), 4) for w in exp.candidate_view_weights[0])))}
                    if exp.candidate_view_weights.size else {})})
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from .attention_stats import attention_stats
    from .synth import read_truth

    run, split = _load_run_and_split(args)
    stats = attention_stats(run.model, split, run.vocab, truth=read_truth(args.data or split.folder.parent),
                            max_news=args.max_news, max_impressions=args.max_impressions)
    _print_json({k: (round(v, 6) if isinstance(v, float) else v) for k, v in stats.items()})
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from .experiments import run_suite

    last = {"line": ""}

    def progress(p) -> None:
        if args.no_progress:
            if p.message and p.phase in ("done", "skipped", "finished"):
                print(f"[{p.run}/{p.runs}] {p.message}", file=sys.stderr, flush=True)
            return
        if p.message:
            print(f"[{p.run}/{p.runs}] {p.model} seed {p.seed}: {p.message}", file=sys.stderr, flush=True)
        elif p.phase == "train" and p.step % 20 == 0:
            line = (f"[{p.run}/{p.runs}] {p.model} seed {p.seed}: epoch {p.epoch}/{p.epochs} "
                    f"step {p.step}/{p.steps_in_epoch} loss {p.loss:.4f}")
            if line != last["line"]:
                print(line, file=sys.stderr, flush=True)
                last["line"] = line

    train = {"max_impressions": args.max_impressions, "max_dev_impressions": args.max_dev_impressions,
             "batch_size": args.batch_size, "lr": args.lr}
    layout = _layout(args)
    folder = run_suite(suite=args.suite, layout=layout, out=args.out, preset=args.preset, epochs=args.epochs,
                       seeds=args.seeds, train_overrides=train, device=args.device, progress=progress,
                       strict=args.strict, cache=not args.no_cache)
    _print_json({"suite": args.suite, "out": str(folder), "results": str(folder / "results.csv"),
                 "report": str(folder / "results.md")})
    return 0


# ---- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m nram_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate the synthetic MIND-format demo corpus")
    p.add_argument("out_dir")
    p.add_argument("--scale", choices=("demo", "small", "large"), default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("download", help="download and extract MIND from the official host")
    p.add_argument("--size", choices=("demo", "small", "large"), default="demo")
    p.add_argument("--dest", default=None, help="folder for the zips and splits (default: $NRAM_HOME/mind/SIZE)")
    p.add_argument("--splits", nargs="+", choices=("train", "dev"), default=["train", "dev"])
    p.add_argument("--base-url", default=None, help="mirror to download from instead of the official host")
    p.add_argument("--max-unzipped-gb", type=float, default=MAX_UNZIPPED_BYTES / (1 << 30),
                   help="refuse an archive that unpacks to more than this (zip bombs; MINDlarge fits)")
    p.add_argument("--max-zip-ratio", type=float, default=MAX_RATIO,
                   help="refuse a member that unpacks more than this many times its compressed size")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("train", help="train a model; prints one JSON line of dev metrics")
    _add_data_args(p)
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--out", help="run folder (default NRAM_HOME/runs/PRESET-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    vectors = p.add_mutually_exclusive_group()
    vectors.add_argument("--word-vectors", dest="word_vectors", metavar="corpus|none|PATH",
                         help="starting word vectors: 'corpus' (word2vec on the data's news text, the presets' "
                              "default), 'none' (random) or a GloVe-format text file (dimension = --word-dim)")
    vectors.add_argument("--glove", dest="word_vectors", metavar="PATH", type=_vector_file,
                         help="the same as --word-vectors PATH")
    p.add_argument("--device", type=_device, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--slim", action="store_true", help="delete the resume state at the end (for shipping a model)")
    _add_config_flags(p, skip=("word_vectors",))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("experiment", help="train and compare a suite of models (NRAM, baselines, ablations)")
    _add_data_args(p)
    p.add_argument("--suite", default="paper", help="paper, heads, negatives, ablation or all; several joined by "
                                                     "commas (paper,ablation) train a shared model once")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--epochs", type=int, default=None, help="epochs per model (default from the preset)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model")
    p.add_argument("--out", help="suite folder (default NRAM_HOME/experiments/SUITE-PRESET-eEPOCHS-DATA); "
                                 "rerunning with the same folder continues an interrupted suite")
    p.add_argument("--max-impressions", type=int, default=None, help="cap on train impressions (0 = all)")
    p.add_argument("--max-dev-impressions", type=int, default=None, help="cap on dev impressions scored (0 = all)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--device", type=_device, help="cpu, cuda, ... (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_experiment)

    for name, func, text in (("evaluate", cmd_evaluate, "dev metrics of a run; prints one JSON line"),
                             ("recommend", cmd_recommend, "top news of the catalog for a user"),
                             ("predict", cmd_predict, "write prediction.txt and prediction.zip (leaderboard format)"),
                             ("explain", cmd_explain, "attention and per-click contributions for a user and a news"),
                             ("attention", cmd_attention, "how peaked the word and click attention is (normalised "
                                                          "entropy; topical/common ratio on a synthetic corpus)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--run", required=True, help="run folder (holds config.json, vocab.json, model.safetensors)")
        _add_data_args(p)
        p.add_argument("--device", type=_device, help="cpu, cuda, cuda:1 ... (default: cpu)")
        p.set_defaults(func=func)
        if name in ("evaluate", "predict"):
            p.add_argument("--split", choices=("dev", "train"), default=None,
                           help="which split of --data to score (default: dev; a --data that is itself one "
                                "split folder is that split)")
        if name in ("evaluate", "predict"):
            p.add_argument("--precompute", action=argparse.BooleanOptionalAction, default=True,
                           help="project every word and news vector once and encode histories by length "
                                "(exact; --no-precompute is the plain fp32 path, for comparison)")
        if name == "evaluate":
            p.add_argument("--max-impressions", type=_count, default=0)
        if name == "recommend":
            p.add_argument("--user", required=True)
            p.add_argument("--top", type=_positive_int, default=10)
            p.add_argument("--category")
        if name == "predict":
            p.add_argument("--out", help="folder for prediction.txt/zip (default: the run folder)")
        if name == "attention":
            p.add_argument("--max-news", type=_positive_int, default=5000)
            p.add_argument("--max-impressions", type=_positive_int, default=5000)
        if name == "explain":
            p.add_argument("--user", required=True)
            p.add_argument("--news", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ValueError) as exc:
        flags = [_FLAGS.get(name, f"--{name.replace('_', '-')}") for name in getattr(exc, "settings", ())]
        print(f"error: {exc}" + (f" (see {', '.join(flags)})" if flags else ""), file=sys.stderr)
        return 2
    except OSError as exc:  # a full or read-only disk, a folder where a file should be, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
