"""``python -m nram_core COMMAND``: demo-data, download, train, evaluate, recommend, predict, explain,
attention, faithfulness, beyond, experiment.

Errors are one line on stderr and exit code 2. Results are JSON on stdout: one line per command,
recommend a line per news. Here the flags are parsed; ``commands`` runs each command and
``progress`` draws on stderr while it works.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from typing import NoReturn, Sequence

from ..config import DATA_SIZES, KINDS, PRESETS, ModelConfig, RuntimeConfig, TrainConfig, flag_of
from ..data.archive import MAX_RATIO, MAX_UNZIPPED_BYTES
from ..data.download import MIND_SIZES, MIND_SPLITS
from ..fileio import DataError
from .commands import (cmd_attention, cmd_beyond, cmd_demo_data, cmd_download, cmd_evaluate, cmd_experiment,
                       cmd_explain, cmd_faithfulness, cmd_predict, cmd_recommend, cmd_train)


# ---- shared argument groups ------------------------------------------------------------------
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
    for cls in (ModelConfig, TrainConfig, RuntimeConfig):
        for f in dataclasses.fields(cls):
            if f.name in DATA_SIZES + ("kind",) + skip:  # sizes: always from the data; the kind: --model
                continue
            flag = flag_of(f.name)
            text = f"{cls.__name__}.{f.name} " + ("(default from preset)" if cls is not RuntimeConfig
                                                  else f"(default {f.default})")
            if isinstance(f.default, bool):
                group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            else:
                group.add_argument(flag, dest=f.name, type=type(f.default), default=None, help=text)


# ---- argument types --------------------------------------------------------------------------
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


def _positive_number(value: str) -> float:
    """A finite number above 0 (a NaN cap would let every comparison pass)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return number


def _seed(value: str) -> int:
    number = _whole_number(value, lowest=0)
    if number >= 2**32:  # NumPy's and torch's seeds are unsigned 32-bit
        raise argparse.ArgumentTypeError(f"must be < 2**32, got {number}")
    return number


def _steps(value: str) -> int:
    return _whole_number(value, lowest=2)


def _device(value: str) -> str:
    """A device this torch build and machine have (``train.pick_device`` checks it)."""
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"unknown device {value!r}: use cpu, cuda, cuda:N or mps")
    if value != "cpu":
        from ..train import pick_device  # torch only when a device other than cpu is asked for

        try:
            pick_device(value)
        except DataError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return value


# ---- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m nram_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate the synthetic MIND-format demo corpus")
    p.add_argument("out_dir")
    p.add_argument("--scale", choices=("demo", "small", "large"), default="demo")
    p.add_argument("--seed", type=_seed, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("download", help="download and extract MIND from the official host")
    p.add_argument("--size", choices=MIND_SIZES, default="demo")
    p.add_argument("--dest", default=None, help="folder for the zips and splits (default: $NRAM_HOME/mind/SIZE)")
    p.add_argument("--splits", nargs="+", choices=MIND_SPLITS, default=list(MIND_SPLITS))
    p.add_argument("--base-url", default=None, help="mirror to download from instead of the official host")
    p.add_argument("--max-unzipped-gb", type=_positive_number, default=MAX_UNZIPPED_BYTES / (1 << 30),
                   help="refuse an archive that unpacks to more than this (zip bombs; MINDlarge fits)")
    p.add_argument("--max-zip-ratio", type=_positive_number, default=MAX_RATIO,
                   help="refuse a member that unpacks more than this many times its compressed size")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("train", help="train a model; prints one JSON line of dev metrics")
    _add_data_args(p)
    p.add_argument("--model", dest="kind", choices=KINDS, default="nram",
                   help="model family: nram (this paper's); naml (multi-view CNN news encoder over title, "
                        "abstract and categories, Wu et al. 2019); lstur (CNN news encoder, GRU user encoder with a "
                        "long-term user embedding, An et al. 2019); npa (CNN news encoder with personalized word "
                        "and news attention from a user-id embedding, Wu et al. 2019); --preset picks its size")
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
    p.add_argument("--suite", default="paper", help="paper, heads, negatives, ablation, sota or all; several "
                                                     "joined by commas (paper,ablation) train a shared model once")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--epochs", type=int, default=None, help="epochs per model (default from the preset)")
    p.add_argument("--seeds", type=_positive_int, default=3, help="seeds 0..N-1 per model")
    p.add_argument("--out", help="suite folder (default NRAM_HOME/experiments/SUITE-PRESET-eEPOCHS-DATA); "
                                 "rerunning with the same folder continues an interrupted suite")
    p.add_argument("--max-impressions", type=int, default=None, help="cap on train impressions (0 = all)")
    p.add_argument("--max-dev-impressions", type=int, default=None, help="cap on dev impressions scored (0 = all)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--validation", type=float, default=None,
                   help="latest share of train held out to choose each model's epoch (default from the preset, 0.1; "
                        "0: train on all of train and score the last epoch)")
    p.add_argument("--device", type=_device, help="cpu, cuda, ... (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_experiment)

    for name, func, text in (("evaluate", cmd_evaluate, "dev metrics of a run; prints one JSON line"),
                             ("recommend", cmd_recommend, "top news of the catalog for a user"),
                             ("predict", cmd_predict, "write prediction.txt and prediction.zip (leaderboard format)"),
                             ("explain", cmd_explain, "attention and per-click contributions for a user and a news"),
                             ("attention", cmd_attention, "how peaked the word and click attention is (normalised "
                                                          "entropy; topical/common ratio on a synthetic corpus)"),
                             ("faithfulness", cmd_faithfulness, "does removing the most-attended words move the score "
                                                                "more than random ones, or the top words by "
                                                                "integrated gradients? one JSON line"),
                             ("beyond", cmd_beyond, "beyond-accuracy figures of the dev users' top-N lists, the "
                                                    "model's and popularity's; one JSON line")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--run", required=True, help="run folder (holds config.json, vocab.json, model.safetensors)")
        _add_data_args(p)
        p.add_argument("--device", type=_device, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
        p.set_defaults(func=func)
        if name in ("evaluate", "predict"):
            p.add_argument("--split", choices=("dev", "train"), default=None,
                           help="which split of --data to score (default: dev; a --data that is itself one "
                                "split folder is that split)")
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
        if name == "faithfulness":
            p.add_argument("--impressions", type=_count, default=None,
                           help="test the candidates of the first N dev impressions (0: all; default "
                                "faithfulness.DEFAULT_IMPRESSIONS, 300)")
            p.add_argument("--seed", type=_seed, default=0, help="seed of the random words")
            p.add_argument("--steps", type=_steps, default=None,
                           help="points of the integrated-gradients path integral (default "
                                "faithfulness.DEFAULT_STEPS, 8)")
        if name == "beyond":
            p.add_argument("--top", type=_positive_int, default=10, help="length of each user's list")
    return parser


# The flag of each setting a core DataError names (``DataError.settings``); others are --field-name.
_FLAGS = {"data": "--data", "train": "--train", "dev": "--dev", "out": "--out", "resume": "--resume",
          "word_vectors": "--word-vectors", "max_unzipped_gb": "--max-unzipped-gb",
          "max_zip_ratio": "--max-zip-ratio"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ValueError) as exc:
        flags = [_FLAGS.get(name, flag_of(name)) for name in getattr(exc, "settings", ())]
        print(f"error: {exc}" + (f" (see {', '.join(flags)})" if flags else ""), file=sys.stderr)
        return 2
    except OSError as exc:  # a full or read-only disk, a folder where a file should be, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
