"""What a split holds, summarised once when it is prepared and stored with its cache: the studio's
Overview charts and user picker read these few numbers instead of scanning millions of rows.

``summarise`` computes them from a split's arrays (``Split.overview`` calls it); ``save``/``load``
keep them next to the cached arrays (``stats.json`` and one ``users_*.npy`` per column,
memory-mapped on a warm start).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .mind import RawBehaviors

_BLOCK = 1 << 23  # candidates looked up per step when counting clicks by category (bounded memory)


@dataclass(frozen=True)
class UserTable:
    """One entry per user of the split (in the order of ``Split.user_ids``)."""

    impressions: np.ndarray  # [U] int64 impressions of the user
    clicks: np.ndarray  # [U] int64 clicks over all of them
    history: np.ndarray  # [U] int64 clicks in the history as of the latest impression
    scorable: np.ndarray  # [U] bool: the latest impression has a click and a non-click
    latest: np.ndarray  # [U] int64 the latest impression's number

    def __len__(self) -> int:
        return len(self.impressions)


@dataclass(frozen=True)
class SplitStats:
    """The split's figures and the counts behind the Overview charts (plain Python, JSON-ready)."""

    news: int
    users: int
    impressions: int
    clicks: int
    candidates: int
    news_per_category: dict[str, int]
    shown_per_category: dict[str, int]  # candidates of that category
    clicks_per_category: dict[str, int]
    impressions_per_hour: dict[int, int]  # the hour's start (seconds since the epoch, UTC) -> impressions

    @property
    def ctr(self) -> float:
        return self.clicks / max(1, self.candidates)


def user_table(behaviors: RawBehaviors, users: np.ndarray, n_users: int) -> UserTable:
    """Per-user counts from the impression arrays (vectorised: no loop over users); ``users`` [I]
    is each impression's user, a number below ``n_users``.

    >>> from types import SimpleNamespace as S
    >>> b = S(history_offsets=np.array([0, 2, 2, 5]), times=np.array([5, 1, 9]),
    ...       candidate_offsets=np.array([0, 2, 3, 5]), labels=np.array([1, 0, 1, 0, 0], dtype=np.int8))
    >>> t = user_table(b, np.array([0, 1, 0]), 2)
    >>> t.impressions.tolist(), t.clicks.tolist(), t.history.tolist(), t.scorable.tolist(), t.latest.tolist()
    ([2, 1], [1, 1], [3, 0], [False, False], [2, 1])
    """
    b = behaviors
    users = np.asarray(users, dtype=np.int64)
    order = np.lexsort((b.times, users))  # by user, then time
    latest = np.full(n_users, -1, dtype=np.int64)
    latest[users[order]] = order  # the last write per user wins: the latest impression
    starts = b.candidate_offsets[:-1]
    if len(b.labels) and len(starts):
        clicks = np.add.reduceat((b.labels == 1).astype(np.int64), starts)
        skips = np.add.reduceat((b.labels == 0).astype(np.int64), starts)
    else:
        clicks = skips = np.zeros(len(starts), dtype=np.int64)
    at = np.maximum(latest, 0)
    seen = latest >= 0
    hist_len = np.diff(b.history_offsets)
    return UserTable(
        impressions=np.bincount(users, minlength=n_users).astype(np.int64),
        clicks=np.bincount(users, weights=clicks, minlength=n_users).astype(np.int64),
        history=np.where(seen, hist_len[at] if len(hist_len) else 0, 0).astype(np.int64),
        scorable=seen & (clicks[at] > 0) & (skips[at] > 0) if len(clicks) else np.zeros(n_users, dtype=bool),
        latest=latest,
    )


def summarise(behaviors: RawBehaviors, users: np.ndarray, n_users: int, *, categories: list[str],
              news_category: np.ndarray) -> tuple[SplitStats, UserTable]:
    """The split's figures and its ``user_table``, from its behaviors, each impression's user
    (below ``n_users``), its category names and each news row's category [N+1] (row 0: padding).

    >>> from types import SimpleNamespace as S
    >>> b = S(history_offsets=np.array([0, 0, 1]), times=np.array([3600, 7300]), impression_ids=np.array([1, 2]),
    ...       candidates=np.array([1, 2, 2]), candidate_offsets=np.array([0, 2, 3]),
    ...       labels=np.array([1, 0, 1], dtype=np.int8))
    >>> figures, users = summarise(b, np.array([0, 0]), 1, categories=["a", "b"], news_category=np.array([0, 0, 1]))
    >>> figures.news, figures.clicks, figures.clicks_per_category, figures.impressions_per_hour, len(users)
    (2, 2, {'a': 1, 'b': 1}, {3600: 1, 7200: 1}, 1)
    """
    b = behaviors
    names = list(categories)
    per_news = np.bincount(news_category[1:], minlength=len(names))
    shown = np.zeros(len(names), dtype=np.int64)
    clicked = np.zeros(len(names), dtype=np.int64)
    for lo in range(0, len(b.candidates), _BLOCK):
        category = news_category[b.candidates[lo: lo + _BLOCK]]
        shown += np.bincount(category, minlength=len(names))[: len(names)]
        clicked += np.bincount(category, weights=b.labels[lo: lo + _BLOCK] == 1, minlength=len(names)
                               ).astype(np.int64)[: len(names)]
    hours, counts = np.unique(np.asarray(b.times) // 3600 * 3600, return_counts=True)
    stats = SplitStats(
        news=len(news_category) - 1, users=n_users, impressions=len(b.impression_ids),
        clicks=int((b.labels == 1).sum()), candidates=len(b.candidates),
        news_per_category={n: int(c) for n, c in zip(names, per_news)},
        shown_per_category={n: int(c) for n, c in zip(names, shown) if c},
        clicks_per_category={n: int(c) for n, c in zip(names, clicked) if c},
        impressions_per_hour={int(h): int(c) for h, c in zip(hours, counts)},
    )
    return stats, user_table(b, users, n_users)


_USER_COLUMNS = ("impressions", "clicks", "history", "scorable", "latest")


def save(stats: SplitStats, users: UserTable, folder: Path) -> None:
    """Into a folder being written (the cache's temporary folder, renamed as a whole after)."""
    (folder / "stats.json").write_text(json.dumps(asdict(stats)), encoding="utf-8")
    for name in _USER_COLUMNS:
        np.save(folder / f"users_{name}.npy", np.ascontiguousarray(getattr(users, name)), allow_pickle=False)


def load(folder: Path) -> tuple[SplitStats, UserTable]:
    """Raises OSError, ValueError or KeyError when the files are missing or damaged."""
    data = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    data["impressions_per_hour"] = {int(k): v for k, v in data["impressions_per_hour"].items()}
    stats = SplitStats(**data)
    users = UserTable(**{name: np.load(folder / f"users_{name}.npy", mmap_mode="r", allow_pickle=False)
                         for name in _USER_COLUMNS})
    return stats, users
