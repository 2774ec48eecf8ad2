"""The user ids a model knows: ``UserVocab``, the users of the part of train a model was trained on.

A split's ``users`` are codes into its **own** sorted ``user_ids``, so the same code means different
users in train and dev. A model that embeds user ids (LSTUR, NPA) reads them as ids of one
vocabulary, taken from the impressions it trains on and saved with the run as users.json. Id 0 is
the unknown user: a dev or test user absent from that vocabulary gets it (as recommenders'
``uid2index.get(uid, 0)`` does), and so does any user the model never trained on.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ..fileio import DataError, atomic_write_json, read_json_lists


class Users(Protocol):
    """What a user vocabulary reads of a split (``data.split.Split``, which imports this module)."""

    user_ids: Sequence[str]  # the split's distinct user ids, sorted
    users: np.ndarray  # [I] codes of each impression's user into user_ids

UNKNOWN_USER = ""  # ids[0]: MIND has no empty user id (read_behaviors skips such rows)


def _shown(value: object) -> str:
    """A value for a one-line message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(ids: tuple) -> str | None:
    """What makes ``ids`` not a user vocabulary (id 0 unknown, the rest distinct sorted non-empty
    strings), or None."""
    if not ids or ids[0] != UNKNOWN_USER:
        return f"the first id must be {UNKNOWN_USER!r} (the unknown user)"
    strangers = [u for u in ids[1:] if not isinstance(u, str) or not u]
    if strangers:
        return f"{len(strangers)} entries are not user ids, e.g. {_shown(strangers[0])}"
    for before, after in zip(ids[1:], ids[2:]):
        if before == after:
            return f"{_shown(after)} is listed more than once"
        if before > after:
            return f"the ids are not sorted ({_shown(before)} before {_shown(after)})"
    return None


@dataclass(frozen=True)
class UserVocab:
    """User ids; ``ids[0] == ""`` is the unknown user (id 0), the rest are sorted.

    >>> from types import SimpleNamespace
    >>> train = SimpleNamespace(user_ids=["U1", "U2", "U3"], users=np.array([2, 0, 2], np.int32))
    >>> vocab = UserVocab.from_split(train)  # U2 has no impression: not a user of the model
    >>> vocab.ids, len(vocab)
    (('', 'U1', 'U3'), 3)
    >>> dev = SimpleNamespace(user_ids=["U0", "U3"], users=np.array([1, 0, 1], np.int32))
    >>> vocab.codes(dev).tolist()  # U3, U0 (unknown), U3
    [2, 0, 2]
    >>> vocab.code("U3"), vocab.code("U9")
    (2, 0)
    """

    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        problem = _problem(self.ids)
        if problem is not None:
            raise ValueError(f"not a user vocabulary (field 'users': {problem})")

    @classmethod
    def from_split(cls, split: Users) -> "UserVocab":
        """The distinct users of the split's impressions (a carved part shares the whole split's
        ``user_ids``, so the ids come from its impressions, not from that list)."""
        present = np.unique(np.asarray(split.users))  # [u] codes into split.user_ids
        names = {split.user_ids[int(code)] for code in present}
        names.discard(UNKNOWN_USER)
        return cls((UNKNOWN_USER, *sorted(names)))

    def __len__(self) -> int:
        return len(self.ids)

    def code(self, user_id: str) -> int:
        """The id of one user (a binary search); 0 when the vocabulary lacks it."""
        at = bisect.bisect_left(self.ids, user_id, 1)
        return at if user_id and at < len(self.ids) and self.ids[at] == user_id else 0

    def codes(self, split: Users) -> np.ndarray:
        """Each impression's user as an id of this vocabulary, [I] int64; 0 for a user it lacks.
        One binary search per distinct user of the split, then one gather per impression."""
        known = np.asarray(self.ids[1:], dtype=object)  # [V-1] sorted; object dtype compares exactly
        names = np.fromiter(split.user_ids, dtype=object, count=len(split.user_ids))  # [u], not fixed-width
        at = np.searchsorted(known, names)  # [u] in 0..V-1
        found = at < len(known)
        found[found] = known[at[found]] == names[found]
        table = np.where(found, at + 1, 0).astype(np.int64)  # [u] split code -> vocabulary id
        return table[np.asarray(split.users, dtype=np.int64)] if len(table) else np.zeros(len(split.users), np.int64)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, {"users": list(self.ids)})

    @classmethod
    def load(cls, path: str | Path) -> "UserVocab":
        (ids,) = read_json_lists(path, "users", what="a user vocabulary")
        try:
            return cls(ids)
        except ValueError as exc:  # the checks of __post_init__, now naming the file
            raise DataError(f"{path}: {exc}") from exc
