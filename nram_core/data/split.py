"""From MIND split folders to encoded, cached splits: ``Split`` (``News`` and behaviors arrays),
``Corpus`` (the splits with their vocabulary) and ``CategoryVocab``.

``layout.resolve_layout`` finds the train and dev folders (or zips) that a user points at;
``load_split`` parses one folder and encodes every title once into an int32 array (and, for a
model that reads abstracts, every abstract), cached on disk under a key made of the input files'
hash and the settings, so a second run neither re-parses nor re-tokenises.
"""
from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fileio import DataError, atomic_write_text, cache_write, nram_home, read_json_lists
from . import stats
from .layout import Layout
from .mind import CodedIds, FileReport, RawBehaviors, ReadProgress, read_behaviors, read_news
from .text import Vocab, cached_index
from .users import UserVocab

# 2: unlabelled (test) rows kept, the complete mode, BOM stripped; 3: one .npy per array;
# 4: the split's overview (stats.json, users_*.npy) stored with it; 5: impression id widths (ids kept as written)
CACHE_VERSION = 5


def _file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "blake2b").hexdigest()[:32]


def split_key(folder: Path) -> str:
    """Content hash of a split's two files."""
    return hashlib.blake2b(
        (_file_digest(folder / "news.tsv") + _file_digest(folder / "behaviors.tsv")).encode(), digest_size=12
    ).hexdigest()


@dataclass
class News:
    """The news table of one split. Row 0 is the padding news (no words)."""

    ids: list[str]  # [N+1], ids[0] == ""
    titles: list[str]
    abstracts: list[str]
    title_entities: list[str]  # raw MIND JSON
    categories: list[str]  # distinct names
    subcategories: list[str]
    category: np.ndarray  # [N+1] int32 into categories
    subcategory: np.ndarray  # [N+1] int32 into subcategories
    tokens: np.ndarray  # [N+1, title_len] int32
    # [N+1, abstract_len] int32, for a model that reads abstracts (``load_split(abstract_len=...)``, cached
    # with the split); None otherwise.
    abstract_tokens: np.ndarray | None = None
    # [N+1, title_len] int32 entity id per title token, set by nram_core.data.entities.with_entities
    # (never cached: it depends on the run's entity vocabulary); None until then.
    entities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def index(self) -> dict[str, int]:
        return cached_index(self, self.ids, skip_first=True)


@dataclass
class Split:
    name: str
    folder: Path
    news: News
    behaviors: RawBehaviors
    user_ids: list[str]  # distinct users
    users: np.ndarray  # [I] int32 into user_ids
    reports: list[FileReport]
    # What ``overview`` returns: loaded with the cache, else computed by its first call
    overview_data: tuple[stats.SplitStats, stats.UserTable] | None = field(default=None, repr=False)
    # [I] int64: each impression's user as an id of a model's ``UserVocab`` (``align_users``); None when the
    # model reads no user ids. It depends on the run, so the split's cache never holds it.
    model_users: np.ndarray | None = field(default=None, repr=False)

    def overview(self) -> tuple[stats.SplitStats, stats.UserTable]:
        """The split's figures, chart counts and per-user table (``stats.summarise``), computed once."""
        if self.overview_data is None:
            self.overview_data = stats.summarise(self.behaviors, self.users, len(self.user_ids),
                                                 categories=self.news.categories, news_category=self.news.category)
        return self.overview_data

    @property
    def num_impressions(self) -> int:
        return len(self.behaviors.impression_ids)

    def impression_range(self, max_impressions: int = 0) -> tuple[np.ndarray, int]:
        """Candidate offsets [I+1] (from 0) of the first ``max_impressions`` impressions (all when 0),
        and the number of candidates they hold."""
        n = self.num_impressions if not max_impressions else min(max_impressions, self.num_impressions)
        offsets = self.behaviors.candidate_offsets[: n + 1]
        return offsets - offsets[0], int(offsets[-1])

    def history_lengths(self, max_impressions: int = 0) -> np.ndarray:
        """Clicks in the history of each of the first ``max_impressions`` impressions (all when 0)."""
        n = self.num_impressions if not max_impressions else min(max_impressions, self.num_impressions)
        return np.diff(self.behaviors.history_offsets[: n + 1])

    def read_report(self) -> str:
        """What reading the split's files skipped or repaired: one summary line per file."""
        return "\n".join(r.summary() for r in self.reports)

    def history_of(self, impression: int) -> np.ndarray:
        b = self.behaviors
        return b.history[b.history_offsets[impression]: b.history_offsets[impression + 1]]

    def candidates_of(self, impression: int) -> tuple[np.ndarray, np.ndarray]:
        b = self.behaviors
        lo, hi = b.candidate_offsets[impression], b.candidate_offsets[impression + 1]
        return b.candidates[lo:hi], b.labels[lo:hi]

    def user_code(self, user_id: str) -> int | None:
        """The user's place in ``user_ids`` (sorted): a binary search, not a scan of 1M ids; None if absent."""
        at = bisect.bisect_left(self.user_ids, user_id)
        return at if at < len(self.user_ids) and self.user_ids[at] == user_id else None

    def user_impressions(self, user_id: str) -> np.ndarray:
        """Impression numbers (row order in behaviors.tsv) of a user, oldest first."""
        at = self.user_code(user_id)
        if at is None:
            raise DataError(f"unknown user id {user_id!r} in {self.folder}")
        found = np.flatnonzero(self.users == at)
        return found[np.argsort(self.behaviors.times[found], kind="stable")]

    def user_history(self, user_id: str) -> np.ndarray:
        """The user's clicked-news rows (oldest first) as of their latest impression."""
        return self.history_of(int(self.user_impressions(user_id)[-1]))


def _parse_split(name: str, folder: Path, vocab: Vocab, *, title_len: int, strict: bool,
                 complete: bool = False, progress: ReadProgress | None = None, abstract_len: int = 0) -> Split:
    raw = read_news(folder / "news.tsv", strict=strict, progress=progress)
    ids = [""] + raw.ids
    categories = sorted(set(raw.categories))
    subcategories = sorted(set(raw.subcategories))
    cat_index = {c: i for i, c in enumerate(categories)}
    sub_index = {s: i for i, s in enumerate(subcategories)}
    news = News(
        ids=ids,
        titles=[""] + raw.titles,
        abstracts=[""] + raw.abstracts,
        title_entities=["[]"] + raw.title_entities,
        categories=categories,
        subcategories=subcategories,
        category=np.asarray([0] + [cat_index[c] for c in raw.categories], dtype=np.int32),
        subcategory=np.asarray([0] + [sub_index[s] for s in raw.subcategories], dtype=np.int32),
        tokens=vocab.encode_many([""] + raw.titles, title_len),
        abstract_tokens=vocab.encode_many([""] + raw.abstracts, abstract_len) if abstract_len else None,
    )
    behaviors = read_behaviors(folder / "behaviors.tsv", news.index, strict=strict, complete=complete,
                               progress=progress)
    coded = behaviors.user_ids  # a CodedIds over the sorted distinct user ids
    return Split(name=name, folder=folder, news=news, behaviors=behaviors, user_ids=coded.names,
                 users=coded.codes, reports=[raw.report, behaviors.report])


_ARRAYS_NEWS = ("category", "subcategory", "tokens")
_ABSTRACTS = "news_abstract_tokens"  # cached only for a split read with ``abstract_len`` (its own key)
_ARRAYS_BEHAVIORS = ("impression_ids", "impression_id_widths", "times", "history_offsets", "history",
                     "candidate_offsets", "candidates", "labels")


def _array_names(abstracts: bool = False) -> list[str]:
    return ([f"news_{k}" for k in _ARRAYS_NEWS] + [f"beh_{k}" for k in _ARRAYS_BEHAVIORS] + ["users"]
            + ([_ABSTRACTS] if abstracts else []))


def _save_split(split: Split, dest: Path) -> None:
    """Write the split to ``dest`` as one NAME.npy per array + meta.json, atomically (temp folder,
    then rename). Plain .npy files, so that a warm start maps them instead of reading them."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        arrays = {f"news_{k}": getattr(split.news, k) for k in _ARRAYS_NEWS}
        arrays.update({f"beh_{k}": getattr(split.behaviors, k) for k in _ARRAYS_BEHAVIORS})
        arrays["users"] = split.users
        if split.news.abstract_tokens is not None:
            arrays[_ABSTRACTS] = split.news.abstract_tokens
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        meta = {
            "name": split.name, "folder": str(split.folder), "user_ids": split.user_ids,
            "news": {k: getattr(split.news, k) for k in ("ids", "titles", "abstracts", "title_entities",
                                                          "categories", "subcategories")},
            "reports": [r.to_dict() for r in split.reports],
        }
        atomic_write_text(tmp / "meta.json", json.dumps(meta))
        stats.save(*split.overview(), tmp)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process cached the same split first; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_cached(dest: Path, *, abstracts: bool = False) -> Split | None:
    """The cached split, its arrays memory-mapped copy-on-write (pages are read as they are used;
    a write stays private to this process); None when the entry is missing or damaged (or lacks
    the abstract tokens that ``abstracts`` asks for)."""
    try:
        meta = json.loads((dest / "meta.json").read_text(encoding="utf-8"))
        arrays = {name: np.load(dest / f"{name}.npy", mmap_mode="c", allow_pickle=False)
                  for name in _array_names(abstracts)}
        overview_data = stats.load(dest)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    reports = [FileReport.from_dict(r) for r in meta["reports"]]
    news = News(**meta["news"], **{k: arrays[f"news_{k}"] for k in _ARRAYS_NEWS},
                abstract_tokens=arrays.get(_ABSTRACTS))
    behaviors = RawBehaviors(user_ids=CodedIds(meta["user_ids"], arrays["users"]), report=reports[1],
                             **{k: arrays[f"beh_{k}"] for k in _ARRAYS_BEHAVIORS})
    return Split(name=meta["name"], folder=Path(meta["folder"]), news=news, behaviors=behaviors,
                 user_ids=meta["user_ids"], users=arrays["users"], reports=reports, overview_data=overview_data)


def _discard(entry: Path) -> None:
    """Remove a cache entry: renamed first (one atomic step), so no reader sees it half-deleted."""
    try:
        gone = Path(tempfile.mkdtemp(prefix=f".{entry.name}.old.", dir=entry.parent))
        os.replace(entry, gone / entry.name)
    except OSError:
        return  # another process moved it first, or the folder is read-only: the cache stays best-effort
    shutil.rmtree(gone, ignore_errors=True)


def load_split(name: str, folder: Path, vocab: Vocab, *, title_len: int, strict: bool = False,
               cache: bool = True, complete: bool = False, progress: ReadProgress | None = None,
               abstract_len: int = 0) -> Split:
    """Parse and encode one split, or load it from the cache when the files and settings match.
    ``complete``: every behaviors row with every candidate (see ``mind.read_behaviors``);
    ``progress``: told how far each file has been read (a cold parse only); ``abstract_len``: also
    encode each news' abstract to that many tokens (``News.abstract_tokens``; 0: not at all)."""
    if abstract_len < 0:
        raise ValueError(f"abstract_len must be >= 0, got {abstract_len}")
    if not cache:
        return _parse_split(name, folder, vocab, title_len=title_len, strict=strict, complete=complete,
                            progress=progress, abstract_len=abstract_len)
    abstracts = f"|abstracts {abstract_len}" if abstract_len else ""  # a title-only key stays as it was
    key = hashlib.blake2b(
        f"{CACHE_VERSION}|{split_key(folder)}|{vocab.digest}|{title_len}|{int(strict)}|{int(complete)}|{name}"
        f"{abstracts}".encode(), digest_size=12,
    ).hexdigest()
    dest = nram_home() / "prepared" / key
    cached = _load_cached(dest, abstracts=bool(abstract_len)) if dest.is_dir() else None
    if cached is not None:
        cached.folder = folder
        return cached
    if dest.is_dir():  # damaged (or from an older layout): out of the way, so that the new entry can land
        _discard(dest)
    split = _parse_split(name, folder, vocab, title_len=title_len, strict=strict, complete=complete,
                         progress=progress, abstract_len=abstract_len)
    cache_write(lambda: _save_split(split, dest))
    return split


def build_vocab(train_folder: Path, *, min_count: int, strict: bool = False, cache: bool = True,
                progress: ReadProgress | None = None, abstracts: bool = False) -> Vocab:
    """Vocabulary of the train titles (``abstracts``: and abstracts, for a model that reads them),
    cached by the train files' hash, ``min_count`` and what it covers."""
    covers = "-abstracts" if abstracts else ""  # a title vocabulary keeps the file name it always had
    path = nram_home() / "prepared" / f"vocab-{split_key(train_folder)}-{min_count}{covers}.json"
    if cache and path.is_file():
        return Vocab.load(path)
    raw = read_news(train_folder / "news.tsv", strict=strict, progress=progress)
    vocab = Vocab.build(raw.titles + raw.abstracts if abstracts else raw.titles, min_count=min_count)
    if cache:
        cache_write(lambda: vocab.save(path))
    return vocab


@dataclass
class Corpus:
    vocab: Vocab
    train: Split | None
    dev: Split | None
    validation: Split | None = None  # the latest part of train, held out to choose the epoch (``carve_validation``)


def take_impressions(split: Split, rows: np.ndarray, *, name: str) -> Split:
    """The impressions ``rows`` (in that order) of ``split`` as a split of their own, named ``name``,
    sharing its news table and user ids.

    >>> from nram_core.data.mind import FileReport, RawBehaviors
    >>> b = RawBehaviors(impression_ids=np.array([1, 2, 3]), impression_id_widths=np.array([1, 1, 1]),
    ...                  user_ids=["u", "v", "u"], times=np.array([10, 30, 20]),
    ...                  history_offsets=np.array([0, 1, 1, 3]), history=np.array([5, 6, 7], np.int32),
    ...                  candidate_offsets=np.array([0, 2, 4, 6]), candidates=np.arange(6, dtype=np.int32),
    ...                  labels=np.array([1, 0, 0, 1, 1, 0], np.int8), report=FileReport("b.tsv"))
    >>> s = Split("train", Path("."), None, b, ["u", "v"], np.array([0, 1, 0], np.int32), [])
    >>> part = take_impressions(s, np.array([2, 0]), name="validation")
    >>> part.behaviors.impression_ids.tolist(), part.behaviors.history.tolist(), part.behaviors.labels.tolist()
    ([3, 1], [6, 7, 5], [1, 0, 1, 0])
    """
    b = split.behaviors
    rows = np.asarray(rows, dtype=np.int64)

    def ragged(offsets: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lengths = offsets[rows + 1] - offsets[rows]  # [R]
        new_offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))  # [R+1]
        starts = np.repeat(offsets[rows] - new_offsets[:-1], lengths)  # [sum lengths]
        return new_offsets, values[starts + np.arange(new_offsets[-1], dtype=np.int64)]

    history_offsets, history = ragged(b.history_offsets, b.history)
    candidate_offsets, candidates = ragged(b.candidate_offsets, b.candidates)
    _, labels = ragged(b.candidate_offsets, b.labels)
    behaviors = dataclasses.replace(
        b, impression_ids=b.impression_ids[rows], impression_id_widths=b.impression_id_widths[rows],
        user_ids=(CodedIds(b.user_ids.names, b.user_ids.codes[rows]) if isinstance(b.user_ids, CodedIds)
                  else [b.user_ids[int(r)] for r in rows]),
        times=b.times[rows], history_offsets=history_offsets, history=history,
        candidate_offsets=candidate_offsets, candidates=candidates, labels=labels)
    return Split(name=name, folder=split.folder, news=split.news, behaviors=behaviors, user_ids=split.user_ids,
                 users=split.users[rows], reports=[],
                 model_users=split.model_users[rows] if split.model_users is not None else None)


def carve_validation(split: Split, fraction: float) -> tuple[Split, Split]:
    """Split ``split`` (train) by time: the latest ``fraction`` of its impressions (at least one) become
    the validation split that chooses the epoch and stops training early, the rest the part that is
    trained on; dev is then scored once, unseen by any choice. MIND's dev follows its train in time,
    and so does this validation part. Equal times keep file order (a stable sort), so the cut is
    deterministic."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation must be in (0, 1), got {fraction}")
    count = split.num_impressions
    held = max(1, int(round(count * fraction)))
    if held >= count:
        raise DataError(f"{split.folder}: {count} impression(s) are too few to hold out a validation part")
    order = np.argsort(split.behaviors.times, kind="stable")  # [I] oldest first
    fit_rows, validation_rows = np.sort(order[: count - held]), np.sort(order[count - held:])
    return (take_impressions(split, fit_rows, name=split.name),
            take_impressions(split, validation_rows, name="validation"))


def load_corpus(layout: Layout, *, title_len: int, min_count: int = 1, vocab: Vocab | None = None,
                splits: tuple[str, ...] = ("train", "dev"), strict: bool = False, cache: bool = True,
                progress: ReadProgress | None = None, abstract_len: int = 0) -> Corpus:
    """Load the requested splits. Without ``vocab`` (a new model), it is built from train: from its
    titles, and with ``abstract_len`` (a model that reads abstracts) from its abstracts too, whose
    tokens the splits then carry (``News.abstract_tokens``)."""
    if vocab is None:
        vocab = build_vocab(layout.require("train"), min_count=min_count, strict=strict, cache=cache,
                            progress=progress, abstracts=bool(abstract_len))
    loaded = {}
    for name in ("train", "dev"):
        folder = layout.train if name == "train" else layout.dev
        if name in splits and folder is not None:
            loaded[name] = load_split(name, folder, vocab, title_len=title_len, strict=strict, cache=cache,
                                      progress=progress, abstract_len=abstract_len)
    return Corpus(vocab=vocab, train=loaded.get("train"), dev=loaded.get("dev"))


# ---- the train-derived category vocabulary --------------------------------------------------
UNKNOWN_CATEGORY = "<unk>"


@dataclass(frozen=True)
class CategoryVocab:
    """Category and subcategory names of the train split; id 0 is unknown.

    ``Split.news.categories`` is sorted per split, so the same id means different categories
    in train and dev. A model that reads category ids is trained and evaluated on splits
    remapped through this vocabulary (``align_categories``), which is saved with the run.
    """

    categories: tuple[str, ...]  # [0] == UNKNOWN_CATEGORY
    subcategories: tuple[str, ...]

    @classmethod
    def from_split(cls, split: Split) -> "CategoryVocab":
        return cls((UNKNOWN_CATEGORY, *split.news.categories), (UNKNOWN_CATEGORY, *split.news.subcategories))

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps({"categories": list(self.categories),
                                            "subcategories": list(self.subcategories)}, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "CategoryVocab":
        categories, subcategories = read_json_lists(path, "categories", "subcategories",
                                                    what="a category vocabulary")
        return cls(categories, subcategories)


def align_categories(split: Split, vocab: CategoryVocab) -> Split:
    """A copy of ``split`` whose ``news.category``/``subcategory`` (and the name lists) are those of
    ``vocab``: names the vocabulary lacks map to 0 (unknown). The padding news keeps 0."""
    import dataclasses

    def remap(ids: np.ndarray, names: list[str], known: tuple[str, ...]) -> np.ndarray:
        index = {name: i for i, name in enumerate(known) if i}
        table = np.asarray([index.get(name, 0) for name in names] or [0], dtype=np.int32)
        out = table[ids] if len(names) else np.zeros_like(ids)
        out[0] = 0  # row 0 is the padding news
        return out

    news = dataclasses.replace(
        split.news,
        categories=list(vocab.categories), subcategories=list(vocab.subcategories),
        category=remap(split.news.category, split.news.categories, vocab.categories),
        subcategory=remap(split.news.subcategory, split.news.subcategories, vocab.subcategories),
    )
    return dataclasses.replace(split, news=news)


def with_train_categories(corpus: Corpus) -> tuple[Corpus, CategoryVocab]:
    """The corpus with both splits remapped to the train split's category vocabulary, and that vocabulary."""
    if corpus.train is None:
        raise DataError("a model that reads categories needs a train split to take their vocabulary from")
    vocab = CategoryVocab.from_split(corpus.train)
    aligned = Corpus(vocab=corpus.vocab, train=align_categories(corpus.train, vocab),
                     dev=align_categories(corpus.dev, vocab) if corpus.dev is not None else None)
    return aligned, vocab


# ---- the trained part's user vocabulary (``data.users``) ------------------------------------
def align_users(split: Split, vocab: UserVocab) -> Split:
    """A copy of ``split`` whose ``model_users`` [I] are its impressions' users as ids of ``vocab``
    (0: a user the vocabulary lacks)."""
    return dataclasses.replace(split, model_users=vocab.codes(split))


def with_train_users(corpus: Corpus) -> tuple[Corpus, UserVocab]:
    """The corpus with train, dev and validation aligned to the users of train's impressions (after a
    validation carve, the part trained on: a user seen only in validation is unknown), and that vocabulary."""
    if corpus.train is None:
        raise DataError("a model that reads user ids needs a train split to take them from")
    vocab = UserVocab.from_split(corpus.train)

    def aligned(split: Split | None) -> Split | None:
        return align_users(split, vocab) if split is not None else None

    return dataclasses.replace(corpus, train=aligned(corpus.train), dev=aligned(corpus.dev),
                               validation=aligned(corpus.validation)), vocab
