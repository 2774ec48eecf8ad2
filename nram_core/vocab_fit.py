"""How well a model's vocabulary and title length fit a dataset's titles: the check the studio runs
before it lets a model score data it was not trained on."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.split import Split, build_vocab
from .data.text import UNK_ID, Vocab, tokenize
from .fileio import DataError

UNREADABLE_UNK_RATE = 0.95  # above this share of <unk> words (or under 5% titles with a known word): an error
WARN_UNK_RATE = 0.2
WARN_TRUNCATED = 0.2


@dataclass(frozen=True)
class VocabFit:
    """How well a model's vocabulary covers a dataset's titles."""

    unk_rate: float  # share of title words that map to <unk>
    truncated: float  # share of titles longer than the model's title_len
    known_titles: float  # share of titles with at least one known word
    same_vocab: bool | None  # the model's vocabulary equals the one this data's train split gives (None: unknown)
    level: str  # ok | warn | error
    message: str


def judge_fit(*, unk_rate: float, truncated: float, known_titles: float, same_vocab: bool | None,
              vocab_size: int, title_len: int) -> VocabFit:
    """The verdict on measured coverage: ``error`` when the model cannot read the titles at all,
    ``warn`` when many words are unknown or many titles are cut, else ``ok``.

    >>> judge_fit(unk_rate=0.02, truncated=0.0, known_titles=1.0, same_vocab=True, vocab_size=9, title_len=5).message
    'vocabulary fits'
    >>> judge_fit(unk_rate=0.3, truncated=0.0, known_titles=0.9, same_vocab=False, vocab_size=9, title_len=5).level
    'warn'
    >>> judge_fit(unk_rate=1.0, truncated=0.0, known_titles=0.0, same_vocab=None, vocab_size=9, title_len=5).level
    'error'
    """
    problems = []
    level = "ok"
    if known_titles < 0.05 or unk_rate > UNREADABLE_UNK_RATE:
        level = "error"
        problems.append(f"{unk_rate:.0%} of the title words of this dataset map to <unk> in the model's "
                        f"vocabulary ({vocab_size:,} words): this model was trained on other data and "
                        "cannot read these titles. Pick another model, or train one on this dataset.")
    else:
        if unk_rate > WARN_UNK_RATE:
            level = "warn"
            problems.append(f"{unk_rate:.0%} of the title words map to <unk>: the model's vocabulary comes "
                            "from other data, so those words carry no meaning for it.")
        if truncated > WARN_TRUNCATED:
            level = "warn"
            problems.append(f"{truncated:.0%} of the titles are longer than the model's title length "
                            f"({title_len} words) and are cut.")
    if level == "ok":
        message = "vocabulary fits" + ("" if same_vocab in (None, True) else " (built from other data)")
    else:
        message = " ".join(problems)
    return VocabFit(unk_rate=unk_rate, truncated=truncated, known_titles=known_titles, same_vocab=same_vocab,
                    level=level, message=message)


def vocab_fit(split: Split, vocab: Vocab, *, title_len: int, train_folder: Path | None = None,
              min_count: int = 1, abstracts: bool = False) -> VocabFit:
    """``judge_fit`` of ``split``'s titles as encoded with ``vocab`` (the split must have been read
    with it); ``train_folder``, when given, tells whether ``vocab`` is the one its titles (and, with
    ``abstracts``, for a model that reads them, its abstracts) build with ``min_count``."""
    tokens = split.news.tokens[1:]  # [N,title_len]; row 0 is padding
    n_words = int((tokens > 0).sum())
    unk_rate = float((tokens == UNK_ID).sum() / n_words) if n_words else 1.0
    known_titles = float((tokens > UNK_ID).any(axis=1).mean()) if len(tokens) else 0.0
    titles = split.news.titles[1:]
    lengths = np.fromiter((len(tokenize(t)) for t in titles), dtype=np.int64, count=len(titles))
    truncated = float((lengths > title_len).mean()) if len(lengths) else 0.0
    same_vocab = None
    if train_folder is not None:
        try:
            built = build_vocab(Path(train_folder), min_count=min_count, abstracts=abstracts)
            same_vocab = built.digest == vocab.digest
        except (DataError, OSError):
            same_vocab = None
    return judge_fit(unk_rate=unk_rate, truncated=truncated, known_titles=known_titles, same_vocab=same_vocab,
                     vocab_size=len(vocab), title_len=title_len)
