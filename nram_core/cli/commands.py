"""What each command of ``python -m nram_core`` does (``cmd_NAME``, given the parsed flags): read
the data the flags name, call the core, print the result as JSON lines on stdout. Errors are raised
(``DataError``); ``cli.main`` prints them as one line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..config import RuntimeConfig, preset, with_overrides
from ..fileio import DataError, json_text, nram_home
from .progress import ReadingBars, SuiteLines, TqdmProgress, TrainingBar


def _layout(args: argparse.Namespace):
    """The data the flags name; a core error gets the flag it came from."""
    from ..data.layout import resolve_layout

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


def cmd_demo_data(args: argparse.Namespace) -> int:
    from ..synth import generate

    start = time.perf_counter()
    out = generate(args.out_dir, scale=args.scale, seed=args.seed)
    truth = json.loads((Path(out) / "truth.json").read_text())
    print(f"wrote {args.scale} corpus (seed {args.seed}) to {out} in {time.perf_counter() - start:.1f}s",
          file=sys.stderr)
    _print_json({"out": str(out), "oracle": truth["oracle"], "counts": truth.get("counts", {})})
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ..data.download import default_dest, download_mind

    dest = Path(args.dest).expanduser() if args.dest else default_dest(args.size)
    with TqdmProgress() as progress:
        folders = download_mind(args.size, dest, splits=args.splits, base_url=args.base_url, on_progress=progress,
                                max_bytes=int(args.max_unzipped_gb * (1 << 30)), max_ratio=args.max_zip_ratio)
    _print_json({split: str(path) for split, path in folders.items()})
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..run_info import create_run_dir, data_info
    from ..train import Trainer, prepare_run

    model_cfg, train_cfg = preset(args.preset, kind=args.kind)
    overrides = vars(args)
    model_cfg = with_overrides(model_cfg, overrides)  # a bad flag fails here, before the data is read
    train_cfg = with_overrides(train_cfg, overrides)
    runtime = with_overrides(RuntimeConfig(), overrides)
    dist_info, device = distributed.init_from_env(args.device)  # under torchrun: join the process group
    rank0 = dist_info.is_main  # only rank 0 prints and writes
    layout = _layout(args)
    with distributed.main_first(), ReadingBars(rank0 and not args.no_progress) as reading:
        # rank 0 fills the data and vector caches, the other ranks then read them
        prepared = prepare_run(layout, model_cfg, train_cfg, strict=args.strict, cache=not args.no_cache,
                               on_status=(lambda text: print(text, file=sys.stderr)) if rank0 else None,
                               on_progress=reading)
    corpus = prepared.corpus
    for split in (corpus.train, corpus.dev):
        if rank0 and split is not None and any(r.total_skipped or r.dropped for r in split.reports):
            print(split.read_report(), file=sys.stderr)
    vectors = prepared.word_vectors
    if rank0:
        print(f"word vectors: {train_cfg.word_vectors}" + (
            f", {vectors.coverage:.1%} of the vocabulary found ({vectors.found} of {len(corpus.vocab) - 2} words)"
            if vectors is not None else " (random initialisation)"), file=sys.stderr)
    name = args.preset if args.kind == "nram" else f"{args.kind}-{args.preset}"
    out = Path(args.out) if args.out else create_run_dir(nram_home() / "runs", name) if rank0 else None
    out = Path(distributed.broadcast_object(str(out)))  # every rank uses rank 0's run folder
    try:
        trainer = Trainer(**prepared.trainer_args(), run_dir=out, callbacks=[TrainingBar(not args.no_progress)],
                          device=device, resume=args.resume, data_info=data_info(layout, preset=args.preset),
                          runtime=runtime)
        if rank0:
            ranks = f", {dist_info.world_size} ranks" if dist_info.enabled else ""
            print(f"training on {trainer.device}{ranks}, {trainer.precision} -> {out} "
                  f"({trainer.batches.num_samples} samples/epoch)", file=sys.stderr)
        result = trainer.fit()
    except BaseException:
        if rank0 and not args.out and not (out / "state.json").exists():
            # The folder this command made for the run, which committed no epoch (a refusal, a
            # divergence or a stop in epoch 1): leave no half run behind. A named --out is the user's.
            shutil.rmtree(out, ignore_errors=True)
        raise
    distributed.finish()
    if not rank0:
        return 0
    if args.slim:  # a run to ship: drop what only --resume needs
        from ..checkpoint import slim

        slim(out)
    if result.metrics is None:
        print("no dev split: nothing to evaluate", file=sys.stderr)
        _print_json({"run": str(out), "epochs": result.epochs_done})
        return 0
    _print_json({**_metrics_line(result.metrics), "run": str(out), "best_epoch": result.best_epoch,
                 "chosen_on": result.chosen_on})
    return 0


def _scored_split(args: argparse.Namespace, layout) -> tuple[str, Path]:
    """The split that evaluate/predict score: --split, else dev; a --data that is itself one split
    folder is that split. Never silently another split than the one asked for."""
    asked = getattr(args, "split", None)
    given = Path(args.data).expanduser() if args.data is not None else None
    if asked is None and layout.dev is None and layout.train is not None and given is not None \
            and (given.resolve() == layout.train.resolve() or given.is_file()):
        return "dev", layout.train  # --data names one split folder, or a zip of one split, itself
    name = asked or "dev"
    folder = layout.dev if name == "dev" else layout.train
    if folder is None:
        other = " (pass --split train to score the train split)" if name == "dev" and layout.train else ""
        raise DataError(f"--data {args.data or args.dev_dir or args.train_dir}: has no {name} split{other}")
    return name, folder


def _load_run_and_split(args: argparse.Namespace, *, complete: bool = False):
    """The run of --run, and the split it scores: the one ``_scored_split`` picks for evaluate and
    predict; for the explorer commands (recommend, explain, attention) the dev split, else train.
    ``complete``: every behaviors row and candidate (``mind.read_behaviors``), as predict needs."""
    from ..checkpoint import load_run
    from ..train import pick_device

    run = load_run(args.run, device=pick_device(getattr(args, "device", None)))
    layout = _layout(args)
    if hasattr(args, "split"):
        split_name, folder = _scored_split(args, layout)
    else:  # loaded under the name "dev" even when it is the train folder (the name keys the cache)
        split_name, folder = "dev", layout.dev if layout.dev is not None else layout.train
    if folder is None:
        raise DataError("no split to use: pass --data or --dev")
    with ReadingBars() as reading:
        split = run.load_split(split_name, folder, strict=args.strict, cache=not args.no_cache, complete=complete,
                               progress=reading)
    if any(r.total_skipped or r.dropped for r in split.reports):
        print(split.read_report(), file=sys.stderr)
    return run, split


@contextlib.contextmanager
def _scoring_run(args: argparse.Namespace) -> Iterator[None]:
    """A scoring error (``scoring.check_finite_scores``) names the run folder whose model gave it."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"--run {args.run}: {exc}", settings=exc.settings) from exc


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..scoring import evaluate_split

    run, split = _load_run_and_split(args)
    with _scoring_run(args):
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
    from ..recommend import Recommender

    run, split = _load_run_and_split(args)
    rec = Recommender(run.model, split)
    rec = rec.for_user(rec.user_id(args.user))  # LSTUR, NPA: the user's id (0: a user the run never trained on)
    history = split.user_history(args.user)
    ranked = rec.rank_catalog(history, top=args.top, category=args.category)
    news = split.news
    for rank, (row, score, prob) in enumerate(zip(ranked.rows, ranked.scores, ranked.probabilities), start=1):
        _print_json({"rank": rank, "news_id": news.ids[row], "score": round(float(score), 5),
                     "probability": round(float(prob), 5), "category": news.categories[news.category[row]],
                     "title": news.titles[row]})
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..predict import write_predictions
    from ..scoring import score_impressions

    # Every row gets a line: unknown news are empty titles, a bad row is an error, not a skip.
    run, split = _load_run_and_split(args, complete=True)
    unknown = split.behaviors.report.dropped.get("unknown candidate news (scored as empty titles)", 0)
    if split.num_impressions == 0:
        raise DataError(f"{split.folder / 'behaviors.tsv'}: no impressions to rank")
    with _scoring_run(args):
        scores, _labels, offsets = score_impressions(run.model, split, precompute=args.precompute)
    text, archive = write_predictions(Path(args.out) if args.out else Path(args.run), split, scores, offsets)
    labelled = int(split.behaviors.labelled.sum())
    _print_json({"prediction": str(text), "zip": str(archive),
                 "impressions": len(offsets) - 1, "labelled_impressions": labelled,
                 "unknown_candidates": int(unknown), "cold_users": int((np.diff(split.behaviors.history_offsets)
                                                                         == 0).sum())})
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from ..recommend import Recommender, click_effects, has_click_attention, word_weights

    run, split = _load_run_and_split(args)
    rec = Recommender(run.model, split)
    rec = rec.for_user(rec.user_id(args.user))  # LSTUR, NPA: the user's id (0: a user the run never trained on)
    history = split.user_history(args.user)[-run.model_config.history_len:]
    candidate = rec.row_of(args.news)
    exp = rec.explain(history, np.array([candidate]))
    history_weights, candidate_weights = word_weights(exp)
    attended = has_click_attention(exp)  # LSTUR's GRU has no per-click weights: measured effects instead
    words = run.vocab.words
    news = split.news

    def weighted_words(row: int, weights: np.ndarray) -> list[list]:
        tokens = news.tokens[row]
        return [[words[t], round(float(w), 4)] for t, w in zip(tokens, weights) if t]

    def per_click(i: int) -> dict[str, float]:
        if attended:
            return {"click_weight": round(float(exp.click_weights[i]), 4),
                    "contribution": round(float(exp.contributions[0, i]), 5)}
        return {"effect": round(float(click_effects(exp)[0, i]), 5)}  # score with the click minus without it

    clicks = [{"news_id": news.ids[row], "title": news.titles[row], **per_click(i),
               "words": weighted_words(row, history_weights[i])} for i, row in enumerate(history)]
    clicks.sort(key=lambda c: -abs(c["contribution" if attended else "effect"]))
    record = {"user": args.user, "news_id": args.news, "title": news.titles[candidate], "model": rec.kind,
              "score": round(float(exp.scores[0]), 5)}
    if attended:
        record["sum_of_contributions"] = round(float(exp.contributions[0].sum()), 5)
    if hasattr(exp, "unknown_user_scores"):  # a family that reads user ids: the same history as the unknown user
        record["unknown_user_score"] = round(float(exp.unknown_user_scores[0]), 5)
    if getattr(exp, "exact", False):  # LSTUR con: the score splits into its two user vectors
        record["short_term_score"] = round(float(exp.short_term_scores[0]), 5)
        record["long_term_score"] = round(float(exp.long_term_scores[0]), 5)
    record.update(candidate_words=weighted_words(candidate, candidate_weights[0]), clicks=clicks)
    views = getattr(exp, "candidate_view_weights", np.zeros(0))
    if views.size:  # NRAM with categories: title, category, subcategory; NAML: title, abstract, category, subcategory
        names = ("title", "abstract", "category", "subcategory") if views.shape[1] == 4 else ("title", "category",
                                                                                             "subcategory")
        record["candidate_views"] = dict(zip(names, (round(float(w), 4) for w in views[0])))
    _print_json(record)
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from ..attention_stats import attention_stats
    from ..synth import read_truth

    run, split = _load_run_and_split(args)
    stats = attention_stats(run.model, split, run.vocab, truth=read_truth(args.data or split.folder.parent),
                            max_news=args.max_news, max_impressions=args.max_impressions)
    _print_json({k: (round(v, 6) if isinstance(v, float) else v) for k, v in stats.items()})
    return 0


def _rounded(record: dict[str, Any]) -> dict[str, Any]:
    """Floats to 6 places, inside lists and dicts too."""
    def one(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 6)
        if isinstance(value, list):
            return [one(v) for v in value]
        if isinstance(value, dict):
            return {k: one(v) for k, v in value.items()}
        return value
    return one(record)


def cmd_faithfulness(args: argparse.Namespace) -> int:
    from ..faithfulness import faithfulness

    run, split = _load_run_and_split(args)
    with _scoring_run(args):
        chosen = {name: value for name, value in (("impressions", args.impressions), ("steps", args.steps))
                  if value is not None}  # unset: the core's defaults
        result = faithfulness(run.model, split, seed=args.seed, **chosen)
    if result["titles"] == 0:
        raise DataError(f"{split.folder}: nothing to test: no candidate title of the first "
                        f"{result['impressions']} impressions has two or more words of the model's vocabulary")
    _print_json({**_rounded(result), "split": str(split.folder)})
    return 0


def cmd_beyond(args: argparse.Namespace) -> int:
    from ..baselines import Popularity
    from ..beyond import beyond_accuracy, list_impressions
    from ..scoring import encode_all_news, encodes_news_apart

    layout = _layout(args)
    if layout.dev is None or layout.train is None:
        raise DataError(f"--data {args.data or args.dev_dir or args.train_dir}: beyond needs a train and a dev split "
                        "(the lists are of the dev users; popularity and novelty count the train clicks)")
    run, dev = _load_run_and_split(args)
    if not len(list_impressions(dev, args.top)):
        raise DataError(f"{dev.folder}: no impression has more than {args.top} candidates to choose a top "
                        f"{args.top} from", settings=("top",))
    with ReadingBars() as reading:
        train = run.load_split("train", layout.train, strict=args.strict, cache=not args.no_cache, progress=reading)
    with _scoring_run(args):
        # One ruler for intra-list diversity: the run's news vectors measure both rankings' lists,
        # or none when the model has none of its own (then the figure is null for both).
        vectors = encode_all_news(run.model, dev).float().cpu().numpy() if encodes_news_apart(run.model) else None
        model = beyond_accuracy(run.model, dev, train, top=args.top, vectors=vectors)
        popular = beyond_accuracy(Popularity(train), dev, train, top=args.top, vectors=vectors)
    _print_json({**_rounded(model), "popularity": _rounded(popular), "split": str(dev.folder)})
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from ..experiments import run_suite

    train = {"max_impressions": args.max_impressions, "max_dev_impressions": args.max_dev_impressions,
             "batch_size": args.batch_size, "lr": args.lr, "validation": args.validation}
    layout = _layout(args)
    folder = run_suite(suite=args.suite, layout=layout, out=args.out, preset=args.preset, epochs=args.epochs,
                       seeds=args.seeds, train_overrides=train, device=args.device,
                       progress=SuiteLines(args.no_progress), strict=args.strict, cache=not args.no_cache)
    _print_json({"suite": args.suite, "out": str(folder), "results": str(folder / "results.csv"),
                 "report": str(folder / "results.md")})
    return 0
