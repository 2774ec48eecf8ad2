"""Tokenising titles, the vocabulary, and pre-trained word vectors."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..fileio import DataError, atomic_write_json, read_json_lists
from .mind import MAX_LINE_BYTES, capped_lines, open_regular

# The NRMS authors' tokeniser (Microsoft recommenders' word_tokenize): lowercase,
# runs of word characters, and a few punctuation marks as their own tokens.
_TOKEN_RE = re.compile(r"[\w]+|[.,!?;|]")

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


def cached_index(owner: object, items: tuple[str, ...] | list[str], *, skip_first: bool) -> dict[str, int]:
    """``{item: position}`` of ``items``, built once and kept on ``owner`` (frozen dataclasses too).

    ``skip_first`` leaves out position 0 where it is padding rather than a real entry.
    """
    cached = owner.__dict__.get("_index")
    if cached is None:
        cached = {item: i for i, item in enumerate(items) if i or not skip_first}
        object.__setattr__(owner, "_index", cached)
    return cached


def tokenize(text: str) -> list[str]:
    """Lowercase word runs plus ``.,!?;|`` as tokens.

    >>> tokenize("Tom Brady's 3rd TD: wow!")
    ['tom', 'brady', 's', '3rd', 'td', 'wow', '!']
    """
    return _TOKEN_RE.findall(text.lower())


@dataclass(frozen=True)
class Vocab:
    """Word list where index 0 is padding and 1 is unknown; built from train titles only."""

    words: tuple[str, ...]

    @classmethod
    def build(cls, texts: Iterable[str], *, min_count: int = 1) -> "Vocab":
        counts = Counter(token for text in texts for token in tokenize(text))
        # Sort by falling count, then alphabetically, so the same data always gives the same ids.
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls((PAD, UNK, *kept))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def index(self) -> dict[str, int]:
        return cached_index(self, self.words, skip_first=False)

    @property
    def digest(self) -> str:
        return hashlib.blake2b("\n".join(self.words).encode(), digest_size=8).hexdigest()

    def encode(self, text: str, length: int) -> np.ndarray:
        """Token ids of ``text``, truncated or zero-padded to ``length``."""
        ids = [self.index.get(t, UNK_ID) for t in tokenize(text)[:length]]
        out = np.zeros(length, dtype=np.int32)
        out[: len(ids)] = ids
        return out

    def encode_many(self, texts: list[str], length: int) -> np.ndarray:
        out = np.zeros((len(texts), length), dtype=np.int32)
        index = self.index
        for row, text in enumerate(texts):
            ids = [index.get(t, UNK_ID) for t in tokenize(text)[:length]]
            out[row, : len(ids)] = ids
        return out

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, {"words": list(self.words)})

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        (words,) = read_json_lists(path, "words", what="a vocabulary file")
        if words[:2] != (PAD, UNK):
            raise DataError(f"{path}: field 'words' must start with {PAD!r}, {UNK!r}")
        strangers = [w for w in words if not isinstance(w, str) or not w]
        if strangers:
            raise DataError(f"{path}: field 'words' holds {len(strangers)} entries that are not words, "
                            f"e.g. {strangers[0]!r}")
        if len(set(words)) != len(words):
            seen: set[str] = set()
            repeated = next(w for w in words if w in seen or seen.add(w))
            raise DataError(f"{path}: field 'words' lists {repeated!r} more than once")
        return cls(words)


@dataclass(frozen=True)
class GloveResult:
    vectors: np.ndarray  # [vocab, dim] float32; row 0 (padding) is zero
    found: int  # vocabulary words (padding and unknown excluded) that the file covered

    def coverage(self, vocab: Vocab) -> float:
        return self.found / max(1, len(vocab) - 2)


def load_glove(path: str | Path, vocab: Vocab, *, dim: int, seed: int = 0) -> GloveResult:
    """Vectors in GloVe text format (``word v1 v2 ...``, space-separated, UTF-8) for the words of ``vocab``.

    Words the file lacks are drawn from N(0, 0.1); only vocabulary words are kept in memory, so a
    multi-GB file streams through (lines capped as in ``mind.capped_lines``).

    Refused in one line (DataError naming the file, and the line where there is one), in strict and
    non-strict runs alike: a path that is not a regular file; a line longer than ``MAX_LINE_BYTES``;
    a vocabulary word's row with the wrong number of values, a value that is not a number, or one
    that is not a finite float32 (``nan``, ``inf``, ``1e999``: training from it would diverge at its
    first step); and a file in which no vocabulary word was found (empty, not UTF-8, tab-separated).
    A bad row is refused rather than skipped because this loader keeps no skip report: a vector
    silently left out would change the run unseen. Rows of words outside the vocabulary are not
    parsed.
    """
    rng = np.random.default_rng(seed)
    vectors = rng.normal(0.0, 0.1, size=(len(vocab), dim)).astype(np.float32)
    vectors[PAD_ID] = 0.0
    index = vocab.index
    found: set[int] = set()
    settings = ("word_vectors",)
    try:
        with open_regular(path) as handle:
            for lineno, (raw, _size) in enumerate(capped_lines(handle), start=1):
                if raw is None:
                    raise DataError(f"{path}:{lineno}: line longer than {MAX_LINE_BYTES:,} bytes", settings=settings)
                line = raw.decode("utf-8", errors="replace").rstrip("\n").rstrip("\r")
                word, _, rest = line.partition(" ")
                row = index.get(word)
                if row is None or row < 2 or row in found:
                    continue
                values = rest.split(" ")
                if len(values) != dim:
                    raise DataError(f"{path}:{lineno}: field 'vector' has {len(values)} values, expected {dim}",
                                    settings=settings)
                try:
                    with np.errstate(over="ignore"):  # 1e39 overflows float32: caught as non-finite below
                        parsed = np.asarray(values, dtype=np.float32)
                except ValueError as exc:
                    raise DataError(f"{path}:{lineno}: field 'vector' is not numeric", settings=settings) from exc
                bad = ~np.isfinite(parsed)
                if bad.any():
                    first = values[int(np.argmax(bad))]
                    raise DataError(f"{path}:{lineno}: field 'vector' of {word!r} holds {first[:40]!r}, not a finite "
                                    f"float32 (training from it would have diverged)", settings=settings)
                vectors[row] = parsed
                found.add(row)
    except OSError as exc:
        raise DataError(f"{path}: cannot read word vectors ({exc.strerror or exc})", settings=settings) from exc
    if not found and len(vocab) > 2:
        raise DataError(f"{path}: no word of the vocabulary found (is it a GloVe text file: word then numbers, "
                        f"space-separated?)", settings=settings)
    return GloveResult(vectors=vectors, found=len(found))
