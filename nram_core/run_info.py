"""What a run folder says about itself, read without importing torch; and the two things every
entry point (CLI, app, suites) writes the same way: the folder's name (``create_run_dir``) and
what config.json records about the data (``data_info``).

The app's first page shows a model card (configs, vocabulary, size, dev metrics per epoch)
before anything needs the model itself; importing torch alone takes longer than all of that.
``checkpoint.load_run`` builds the model on top of ``read_run_info``.
"""
from __future__ import annotations

import itertools
import math
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ModelConfig, RuntimeConfig, TrainConfig, from_dict
from .data.layout import Layout
from .data.mind import ReadProgress
from .data.split import CategoryVocab, Split, align_categories, align_users, load_split
from .data.text import Vocab
from .data.users import UserVocab
from .fileio import DataError, json_loads, read_json
from .synth import read_truth

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CATEGORIES = "categories.json"
USERS = "users.json"
VOCAB = "vocab.json"


@dataclass
class RunInfo:
    """A run folder's configs, vocabulary, training state and the number of weights it stores."""

    path: Path
    vocab: Vocab
    model_config: ModelConfig
    train_config: TrainConfig
    runtime_config: RuntimeConfig  # how it was trained (runs written before the split kept it in "train")
    data: dict[str, Any]
    state: dict[str, Any]
    num_parameters: int
    categories: CategoryVocab | None  # the train split's category names, for a model that reads them
    weights_path: Path  # the best weights state.json committed (``committed_weights``)
    users: UserVocab | None  # the trained part's user ids, for a model that reads them

    def load_split(self, name: str, folder: Path, *, strict: bool = False, cache: bool = True,
                   complete: bool = False, progress: ReadProgress | None = None) -> Split:
        """A split as this model reads it: its vocabulary, its title length (and abstract length), its category ids
        (``complete``: every behaviors row and candidate, for a leaderboard submission;
        ``progress``: told how far a first read of each file has got)."""
        split = load_split(name, Path(folder), self.vocab, title_len=self.model_config.title_len, strict=strict,
                           cache=cache, complete=complete, progress=progress,
                           abstract_len=self.model_config.abstract_words)
        if self.categories is not None:
            split = align_categories(split, self.categories)
        return align_users(split, self.users) if self.users is not None else split


def run_slug(text: str, fallback: str = "run") -> str:
    """``text`` as a folder name: each run of characters other than letters, digits and ``._-``
    becomes one ``-``, with none at either end; ``fallback`` when nothing is left.

    >>> run_slug("my run: lr 1e-3!"), run_slug("  ../ ", "demo")
    ('my-run-lr-1e-3', 'demo')
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-.") or fallback


def create_run_dir(parent: str | Path, name: str, *, fallback: str = "run") -> Path:
    """Create a new, empty run folder ``parent/SLUG-YYYYmmdd-HHMMSS`` (SLUG: ``run_slug(name,
    fallback)``) and return it. When that name is taken (two runs started in the same second) the
    folder gets ``-2``, ``-3``, ...: each is made with one ``mkdir``, so no two runs ever share one."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{run_slug(name, fallback)}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in itertools.count(1):
        path = parent / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


def data_info(layout: Layout, *, preset: str | None = None, **extra: Any) -> dict[str, Any]:
    """What a run's config.json records about its data (its ``data`` field): the dataset's name,
    the train and dev split folders' names, the preset, and for a corpus that ``synth`` generated
    (truth.json beside the splits) the scale and seed that make it again; ``extra`` adds the
    caller's own entries (the app's dataset label as ``dataset``, a suite's model). The trainer
    adds the word vectors and the precision. Names, never the machine's paths: a run folder is
    shipped and shared, and a path says where someone's home folder was, not what the data was.

    >>> data_info(Layout(train=Path("/home/ada/mind/MINDsmall_train"), dev=Path("/home/ada/mind/MINDsmall_dev")))
    {'dataset': 'MINDsmall_train', 'train': 'MINDsmall_train', 'dev': 'MINDsmall_dev'}
    """
    info: dict[str, Any] = {"dataset": dataset_name(layout.train) if layout.train else None,
                            "train": layout.train.name if layout.train else None,
                            "dev": layout.dev.name if layout.dev else None}
    if preset is not None:
        info["preset"] = preset
    facts = read_truth(layout.train.parent) if layout.train else None
    if facts is not None:
        info["synthetic"] = {"scale": facts.get("scale"), "seed": facts.get("seed")}
    info.update(extra)
    return info


def dataset_name(train: Path) -> str:
    """A dataset's name from its train split's folder: the folder above a split named plainly
    ``train`` (``demo0/train``: ``demo0``), else the split folder's own name (``MINDsmall_train``).

    >>> dataset_name(Path("/data/demo0/train")), dataset_name(Path("/data/MINDsmall_train"))
    ('demo0', 'MINDsmall_train')
    """
    train = Path(train)
    return train.parent.name if train.name == "train" and train.parent.name else train.name


def _read_json_object(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_state(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "state.json"
    if not path.exists():
        return {}
    return _read_json_object(path)


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise DataError(f"{run_dir}: not a run folder (no config.json)")
    return _read_json_object(path)


def best_metrics(state: dict[str, Any]) -> dict[str, Any]:
    """The dev metrics of a run's best epoch (the weights it serves) from its state.json: the final
    record's, else the best epoch's record in the history; {} when there are none. Reads a hostile
    state without failing.

    >>> best_metrics({"best_epoch": 2, "history": [{"epoch": 1, "metrics": {"auc": 0.6}},
    ...                                            {"epoch": 2, "metrics": {"auc": 0.7}}]})
    {'auc': 0.7}
    >>> best_metrics({"best_epoch": 10**30, "history": 5})
    {}
    """
    final = state.get("final")
    if isinstance(final, dict) and "auc" in final:
        return final
    best, history = state.get("best_epoch"), state.get("history")
    for entry in history if isinstance(history, list) else []:
        if isinstance(entry, dict) and entry.get("epoch") == best:
            return entry["metrics"] if isinstance(entry.get("metrics"), dict) else {}
    return {}


def run_status(state: dict[str, Any]) -> str:
    """What a run folder's own state says: ``finished`` (all epochs, or stopped early), ``cancelled``
    (stopped by request after a finished epoch), ``incomplete`` (interrupted: ``--resume`` continues
    it) or ``no epoch`` (nothing committed yet). Whether it is running now only its trainer knows."""
    if not state:
        return "no epoch"
    if state.get("final") is not None:
        return "finished"
    return "cancelled" if state.get("cancelled") else "incomplete"


def named_file(run_dir: Path, name: object) -> Path | None:
    """The file ``name`` (as state.json names a checkpoint file) inside the run folder, or None when
    it is not a plain file name: a name never reaches a path elsewhere."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        return None
    return Path(run_dir) / name


def committed_weights(run_dir: Path, state: dict[str, Any]) -> Path:
    """The best weights of a run: the epoch file that state.json (the run's commit point) names,
    while it is there, else model.safetensors, its published copy (a --slim run keeps only that)."""
    best = (state.get("files") or {}).get("best") if isinstance(state.get("files"), dict) else None
    path = named_file(run_dir, best.get("name") if isinstance(best, dict) else None)
    return path if path is not None and path.is_file() else Path(run_dir) / WEIGHTS


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the JSON header that starts every safetensors file.

    The header's byte ranges must end exactly at the end of the file, so a file cut short
    (an interrupted copy) is refused here, before anything tries to load it.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(100_000_000, size - 8):  # the format caps headers at 100 MB
                raise ValueError(f"header length {length} in a file of {size} bytes")
            header = json_loads(f.read(length), source=path)
        tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
        shapes = {}
        for name, entry in tensors.items():
            shape = entry["shape"]
            if not all(isinstance(n, int) and n >= 0 for n in shape):
                raise ValueError(f"tensor {name!r} has shape {shape}")
            shapes[name] = list(shape)
        offsets = [entry["data_offsets"] for entry in tensors.values()]
        if not all(isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in pair) for pair in offsets):
            raise ValueError("data_offsets that are not pairs of byte positions")
        end = max((pair[1] for pair in offsets), default=0)
        if 8 + length + end != size:
            raise ValueError(f"the tensors end at byte {8 + length + end} but the file has {size} (cut short?)")
        return shapes
    except (OSError, struct.error, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"{path}: not a complete safetensors file ({exc})") from exc


def read_run_info(run_dir: str | Path) -> RunInfo:
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    try:  # each config checks its fields as it is made; the data sizes are this run's own
        model_config = from_dict(ModelConfig, config["model"])
        train_config = from_dict(TrainConfig, config["train"])
        runtime_config = from_dict(RuntimeConfig, config.get("runtime", config["train"]))
        model_config.check_data_sizes()
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{run_dir / 'config.json'}: missing or bad field ({exc})") from exc
    if not isinstance(config.get("data", {}), dict):
        raise DataError(f"{run_dir / 'config.json'}: field 'data' must be an object")
    vocab = Vocab.load(run_dir / VOCAB)
    if len(vocab) != model_config.vocab_size:
        raise DataError(f"{run_dir}: vocab.json has {len(vocab)} words but config says {model_config.vocab_size}")
    state = read_state(run_dir)
    weights_path = committed_weights(run_dir, state)
    if not weights_path.is_file():
        raise DataError(f"{run_dir}: no {WEIGHTS} (was the first epoch finished?)")
    categories = None
    if model_config.use_categories:
        if not (run_dir / CATEGORIES).is_file():
            raise DataError(f"{run_dir}: the model reads categories but {CATEGORIES} is missing")
        categories = CategoryVocab.load(run_dir / CATEGORIES)
        if (len(categories.categories), len(categories.subcategories)) != (model_config.num_categories,
                                                                            model_config.num_subcategories):
            raise DataError(f"{run_dir / CATEGORIES}: {len(categories.categories)} categories and "
                            f"{len(categories.subcategories)} subcategories, but config.json says "
                            f"{model_config.num_categories} and {model_config.num_subcategories}")
    users = None
    if model_config.reads_users:  # a model with a user embedding: the ids its rows stand for
        if not (run_dir / USERS).is_file():
            raise DataError(f"{run_dir}: the model reads user ids but {USERS} is missing")
        users = UserVocab.load(run_dir / USERS)
        if len(users) != model_config.num_users:
            raise DataError(f"{run_dir / USERS}: {len(users)} users, but config.json says {model_config.num_users}")
    shapes = safetensors_shapes(weights_path)
    return RunInfo(path=run_dir, vocab=vocab, model_config=model_config, train_config=train_config,
                   runtime_config=runtime_config, data=config.get("data", {}), state=state,
                   num_parameters=sum(math.prod(shape) for shape in shapes.values()), categories=categories,
                   weights_path=weights_path, users=users)
