"""Word vectors for the news encoder: learned from the corpus's own news text, or read from a file.

NRMS starts from pretrained word vectors (GloVe). Offline there is no GloVe, but every MIND
folder carries the text of its news: ``corpus_vectors`` trains skip-gram word2vec (gensim) on
the tokenised titles and abstracts of the run's news.tsv files. Only news text is read: no
behaviors row, so no click, reaches the vectors.

The vectors are deterministic for a seed (one worker thread, seeded initialisation) and cached
under ``NRAM_HOME/prepared`` by a hash of the input files, the vocabulary and the settings.
``word_vectors`` is the one entry point for the ``--word-vectors corpus|none|PATH`` choice.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..fileio import DataError, atomic_path, cache_write, nram_home
from .mind import read_news
from .layout import Layout
from .split import _file_digest
from .text import PAD_ID, Vocab, load_glove, tokenize

CORPUS, NONE = "corpus", "none"
CACHE_VERSION = 1


@dataclass(frozen=True)
class Word2VecSettings:
    """Skip-gram settings. ``min_epochs`` and ``min_words`` set the passes: at least
    ``min_epochs``, more on a small corpus until about ``min_words`` tokens were seen in all."""

    window: int = 5
    negative: int = 5
    min_count: int = 1  # every train-title word gets a vector; rare words stay close to their start
    sample: float = 1e-3
    min_epochs: int = 5
    max_epochs: int = 50
    min_words: int = 5_000_000

    def epochs_for(self, tokens: int) -> int:
        wanted = -(-self.min_words // max(1, tokens))  # ceil
        return int(min(self.max_epochs, max(self.min_epochs, wanted)))


@dataclass(frozen=True, kw_only=True)
class WordVectors:
    """An embedding matrix for a vocabulary, with where it came from."""

    vectors: np.ndarray  # [V,E] float32; row 0 (padding) is zero
    source: str  # "corpus" or the file's path
    found: int  # vocabulary words (padding and unknown excluded) that received a learned/read vector
    vocab_size: int

    @property
    def coverage(self) -> float:
        return self.found / max(1, self.vocab_size - 2)

    @property
    def digest(self) -> str:
        """Content hash of the matrix, recorded in the run folder."""
        return hashlib.blake2b(np.ascontiguousarray(self.vectors).tobytes(), digest_size=12).hexdigest()

    def describe(self) -> dict:
        return {"source": self.source, "coverage": round(self.coverage, 6), "found": self.found,
                "dim": int(self.vectors.shape[1]), "sha": self.digest}


def news_files(layout: Layout) -> list[Path]:
    """Every news.tsv the run reads: train's, then dev's when it is another file."""
    files: list[Path] = []
    for folder in (layout.train, layout.dev):
        if folder is not None and (folder / "news.tsv").resolve() not in {f.resolve() for f in files}:
            files.append(folder / "news.tsv")
    return files


def news_sentences(files: Sequence[Path], *, strict: bool = False) -> list[list[str]]:
    """Tokenised titles and abstracts (one sentence each) of every news row, each news id once,
    in file order. Reads news.tsv only."""
    seen: set[str] = set()
    sentences: list[list[str]] = []
    for path in files:
        raw = read_news(path, strict=strict)
        for news_id, title, abstract in zip(raw.ids, raw.titles, raw.abstracts):
            if news_id in seen:  # MIND's dev news repeat many train news rows
                continue
            seen.add(news_id)
            for text in (title, abstract):
                tokens = tokenize(text)
                if tokens:
                    sentences.append(tokens)
    return sentences


def _gensim_version() -> str:
    """Part of the cache key: the same seed is promised the same vectors by one gensim version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gensim")
    except PackageNotFoundError:  # train_word2vec says so in one line
        return "missing"


def _stable_hash(text: str) -> int:
    # gensim seeds per-word state with hashfxn; Python's hash() changes with every process.
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(sentences: list[list[str]], *, dim: int, seed: int,
                   settings: Word2VecSettings = Word2VecSettings()) -> dict[str, np.ndarray]:
    """Skip-gram word2vec on ``sentences``; ``{word: vector}``. One worker thread, so the same
    input and seed give the same vectors."""
    try:
        from gensim.models import Word2Vec
    except ImportError as exc:
        raise DataError(f"corpus word vectors need gensim ({exc}): pip install -r requirements.txt, "
                        "or train without them (word_vectors 'none')", settings=("word_vectors",)) from exc

    tokens = sum(len(s) for s in sentences)
    if tokens == 0:
        return {}
    model = Word2Vec(sentences=sentences, vector_size=dim, window=settings.window, min_count=settings.min_count,
                     sg=1, negative=settings.negative, sample=settings.sample, workers=1, seed=seed,
                     epochs=settings.epochs_for(tokens), hashfxn=_stable_hash)
    return {word: model.wv.vectors[i] for i, word in enumerate(model.wv.index_to_key)}


def _matrix(found_vectors: dict[str, np.ndarray], vocab: Vocab, *, dim: int, seed: int) -> tuple[np.ndarray, int]:
    """[V,E] rows for the vocabulary; words without a learned vector are drawn with the learned
    vectors' own standard deviation (over all their values), so they sit among them."""
    rows = [i for i, w in enumerate(vocab.words) if i >= 2 and w in found_vectors]
    learned = np.stack([found_vectors[vocab.words[i]] for i in rows]).astype(np.float32) if rows else None
    spread = float(learned.std()) if learned is not None and learned.size > 1 else 0.1
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, spread, size=(len(vocab), dim)).astype(np.float32)
    if learned is not None:
        matrix[rows] = learned
    matrix[PAD_ID] = 0.0
    return matrix, len(rows)


def corpus_vectors(layout: Layout, vocab: Vocab, *, dim: int, seed: int, strict: bool = False,
                   cache: bool = True, settings: Word2VecSettings = Word2VecSettings(),
                   on_status: Callable[[str], None] | None = None) -> WordVectors:
    """Word2vec vectors for ``vocab`` from the news text of ``layout``, cached by content and settings."""
    files = news_files(layout)
    if not files:
        raise DataError("corpus word vectors need a news.tsv: pass a train split")
    key_text = json.dumps({"v": CACHE_VERSION, "files": [_file_digest(f) for f in files], "vocab": vocab.digest,
                           "dim": dim, "seed": seed, "strict": strict, "settings": dataclasses.asdict(settings),
                           "gensim": _gensim_version()}, sort_keys=True)
    key = hashlib.blake2b(key_text.encode(), digest_size=12).hexdigest()
    path = nram_home() / "prepared" / f"vectors-{key}.npz"
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                cached, found = npz["vectors"], int(npz["found"])
            if cached.shape == (len(vocab), dim) and cached.dtype == np.float32:
                return WordVectors(vectors=cached, source=CORPUS, found=found, vocab_size=len(vocab))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache entry is rebuilt below
    if on_status is not None:
        on_status(f"training word vectors on the news text of {', '.join(str(f) for f in files)}")
    learned = train_word2vec(news_sentences(files, strict=strict), dim=dim, seed=seed, settings=settings)
    matrix, found = _matrix(learned, vocab, dim=dim, seed=seed)
    if cache:
        def save() -> None:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, vectors=matrix, found=np.int64(found))

        cache_write(save)
    return WordVectors(vectors=matrix, source=CORPUS, found=found, vocab_size=len(vocab))


def file_vectors(path: str | Path, vocab: Vocab, *, dim: int, seed: int) -> WordVectors:
    """Vectors in GloVe text format for ``vocab`` (see ``text.load_glove``)."""
    result = load_glove(path, vocab, dim=dim, seed=seed)
    return WordVectors(vectors=result.vectors, source=str(path), found=result.found, vocab_size=len(vocab))


def check_choice(choice: str) -> None:
    """Fail early (before any data is read) on a ``--word-vectors`` path that is not a regular
    file: missing, a folder, a FIFO or a device (``/dev/zero``). Only ``stat`` is called: nothing
    is opened, so a FIFO never blocks. The file's rows are checked as it is read (``text.load_glove``)."""
    if choice in (CORPUS, NONE):
        return
    hint = "use 'corpus', 'none' or a GloVe-format text file"
    try:
        info = os.stat(Path(choice).expanduser())
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"word vectors {choice}: no such file ({hint})", settings=("word_vectors",)) from None
    except OSError as exc:  # a symlink loop, a name too long, no permission
        raise DataError(f"word vectors {choice}: cannot read ({exc.strerror or exc})",
                        settings=("word_vectors",)) from None
    except ValueError:  # an embedded NUL
        raise DataError(f"word vectors {choice!r}: not a valid path", settings=("word_vectors",)) from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"word vectors {choice}: not a regular file ({hint})", settings=("word_vectors",))


def word_vectors(choice: str, *, layout: Layout, vocab: Vocab, dim: int, seed: int, strict: bool = False,
                 cache: bool = True, on_status: Callable[[str], None] | None = None) -> WordVectors | None:
    """The ``--word-vectors`` choice: ``corpus`` (word2vec on the news text), ``none`` (random
    initialisation, returns None) or the path of a GloVe-format text file."""
    if choice == NONE:
        return None
    if choice == CORPUS:
        return corpus_vectors(layout, vocab, dim=dim, seed=seed, strict=strict, cache=cache, on_status=on_status)
    check_choice(choice)
    return file_vectors(Path(choice).expanduser(), vocab, dim=dim, seed=seed)


__all__ = ["CORPUS", "NONE", "Word2VecSettings", "WordVectors", "check_choice", "corpus_vectors", "file_vectors", "news_files",
           "news_sentences", "train_word2vec", "word_vectors"]
