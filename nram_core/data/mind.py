"""Reading MIND's news.tsv and behaviors.tsv, with bad rows counted (or fatal under ``strict``).

news.tsv:      news_id, category, subcategory, title, abstract, url, title_entities, abstract_entities
behaviors.tsv: impression_id, user_id, time ("MM/DD/YYYY HH:MM:SS AM/PM"), history, impressions ("N1-1 N2-0")

A test split (MIND's ``MINDlarge_test``) lists its candidates without labels ("N1 N2"): such a row
is an *unlabelled* impression, its labels stored as -1. A row that mixes labelled and unlabelled
candidates is a bad row. A UTF-8 byte-order mark at the start of a file is dropped.

An impression id is ASCII digits and fits int64; it is kept as its value and its width, so that
``prediction.txt`` gives it back as written (``007`` stays ``007``, which MIND's scorer compares
as text). ``+5``, `` 5``, ``1_000`` or ``٣`` (which ``int()`` would accept) are bad rows.

A line is at most ``MAX_LINE_BYTES`` (16 MiB; MIND's longest is a few KB): a longer one is a bad
row (``line_too_long``) whose bytes are read in chunks and dropped, so a multi-GB line without a
newline costs at most about twice the cap in memory, and the lines after it keep their numbers.
Only regular files are read: a FIFO or a device (``/dev/zero``) is refused before any read.
"""
from __future__ import annotations

import calendar
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence

import numpy as np

from ..fileio import DataError

NEWS_FIELDS = ("news_id", "category", "subcategory", "title", "abstract", "url", "title_entities",
               "abstract_entities")
BEHAVIOR_FIELDS = ("impression_id", "user_id", "time", "history", "impressions")
_TIME_RE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2}):(\d{2}) ([AP]M)")
FIRST_LINES_KEPT = 5
UNLABELLED = -1  # the label of a candidate of an unlabelled (test) impression
_BOM = b"\xef\xbb\xbf"
# ``progress(what, done_bytes, total_bytes)``: how far reading a file has got (a CLI bar, the app's).
ReadProgress = Callable[[str, int, int], None]
_PROGRESS_EVERY = 1 << 16  # rows between two progress calls
_CHUNK_ROWS = 1 << 16  # rows parsed into Python lists before they become NumPy arrays
_INT64_MAX = np.iinfo(np.int64).max
_INT64_DIGITS = len(str(_INT64_MAX))
MAX_LINE_BYTES = 16 << 20  # the longest line read (its newline not counted); read at call time
_DRAIN_BYTES = 1 << 20  # the piece in which the rest of a longer line is read and dropped


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for binary reading; a DataError "PATH: not a regular file" for a folder, FIFO,
    socket or device. Opened without blocking, so a FIFO never waits for a writer, and checked on
    the open descriptor, so a file swapped after an earlier check is still caught. OSError (a
    missing or unreadable file) is the caller's to word."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataError(f"{path}: not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def capped_lines(handle: BinaryIO) -> Iterator[tuple[bytes | None, int]]:
    """``(line, size)`` for each line of a binary file: ``line`` with its newline, or None for a
    line longer than ``MAX_LINE_BYTES`` (the rest of it read in pieces and dropped, never held);
    ``size`` is the bytes the line takes in the file. One item per line, so line numbers hold."""
    limit = MAX_LINE_BYTES
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line, len(line)
            continue
        size = len(line)
        del line
        while True:
            rest = handle.readline(_DRAIN_BYTES)
            size += len(rest)
            if not rest or rest.endswith(b"\n"):
                break
        yield None, size


@dataclass
class FileReport:
    """What reading one file skipped, and why: counts plus the first few line numbers."""

    file: str
    rows: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_lines: dict[str, list[int]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # ids removed from otherwise good rows

    def skip(self, reason: str, lineno: int) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        lines = self.first_lines.setdefault(reason, [])
        if len(lines) < FIRST_LINES_KEPT:
            lines.append(lineno)

    def drop(self, what: str, count: int = 1) -> None:
        if count:
            self.dropped[what] = self.dropped.get(what, 0) + count

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        parts = [f"{self.file}: {self.kept}/{self.rows} rows kept"]
        for reason, count in sorted(self.skipped.items()):
            lines = ", ".join(map(str, self.first_lines.get(reason, [])))
            parts.append(f"  skipped {count} ({reason}), first at line {lines}")
        for what, count in sorted(self.dropped.items()):
            parts.append(f"  dropped {count} {what}")
        return "\n".join(parts)

    def to_dict(self) -> dict:
        return {"file": self.file, "rows": self.rows, "kept": self.kept, "skipped": self.skipped,
                "first_lines": self.first_lines, "dropped": self.dropped}

    @classmethod
    def from_dict(cls, data: dict) -> "FileReport":
        return cls(**data)


class _Rows:
    """Iterate (lineno, fields) of a TSV file, counting or raising on undecodable or short rows."""

    def __init__(self, path: Path, *, fields: tuple[str, ...], report: FileReport, strict: bool,
                 progress: ReadProgress | None = None):
        self.path, self.fields, self.report, self.strict, self.progress = path, fields, report, strict, progress

    def bad(self, lineno: int, field_name: str, reason: str, detail: str) -> None:
        if self.strict:
            raise DataError(f"{self.path}:{lineno}: field '{field_name}': {detail}")
        self.report.skip(reason, lineno)

    def __iter__(self):
        """Line by line from a buffered file: a 1 GB behaviors.tsv is never in memory at once."""
        try:
            with open_regular(self.path) as handle:
                yield from self._lines(handle)
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read ({exc.strerror or exc})") from exc

    def _lines(self, handle):
        total = os.fstat(handle.fileno()).st_size
        done = 0
        for lineno, (raw, size) in enumerate(capped_lines(handle), start=1):
            done += size
            if self.progress is not None and lineno % _PROGRESS_EVERY == 0:
                self.progress(str(self.path), done, total)
            if raw is None:
                self.report.rows += 1
                self.bad(lineno, "row", "line_too_long", f"longer than {MAX_LINE_BYTES:,} bytes")
                continue
            if lineno == 1 and raw.startswith(_BOM):  # written by some editors; never part of the first id
                raw = raw[len(_BOM):]
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            if not raw.strip():
                continue
            self.report.rows += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.bad(lineno, "row", "invalid_utf8", f"invalid UTF-8 at byte {exc.start}")
                continue
            parts = line.split("\t")
            if len(parts) != len(self.fields):
                self.bad(lineno, "row", "field_count",
                         f"expected {len(self.fields)} tab-separated fields, found {len(parts)}")
                continue
            yield lineno, parts
        if self.progress is not None:
            self.progress(str(self.path), done, total)


@dataclass
class RawNews:
    ids: list[str]
    categories: list[str]
    subcategories: list[str]
    titles: list[str]
    abstracts: list[str]
    title_entities: list[str]
    report: FileReport


def read_news(path: str | Path, *, strict: bool = False, progress: ReadProgress | None = None) -> RawNews:
    path = Path(path)
    report = FileReport(file=str(path))
    rows = _Rows(path, fields=NEWS_FIELDS, report=report, strict=strict, progress=progress)
    out = RawNews([], [], [], [], [], [], report)
    seen: set[str] = set()
    for lineno, (news_id, category, subcategory, title, abstract, _url, title_ents, _abs_ents) in rows:
        if not news_id:
            rows.bad(lineno, "news_id", "empty_news_id", "empty news id")
            continue
        if news_id in seen:  # MIND lists each news once; a repeat is ignored, not fatal
            report.drop("duplicate news rows")
            continue
        seen.add(news_id)
        out.ids.append(news_id)
        out.categories.append(category)
        out.subcategories.append(subcategory)
        out.titles.append(title)
        out.abstracts.append(abstract)
        out.title_entities.append(title_ents)
        report.kept += 1
    return out


def parse_time(text: str) -> int | None:
    """Seconds since the epoch (UTC) of MIND's ``11/15/2019 7:11:50 AM``; None if malformed.

    >>> parse_time("11/15/2019 12:37:50 PM") - parse_time("11/15/2019 12:37:50 AM")
    43200
    >>> parse_time("13/15/2019 1:00:00 PM") is None
    True
    >>> parse_time("01/01/0000 12:00:00 AM") is None  # no year 0 in the calendar
    True
    """
    match = _TIME_RE.fullmatch(text.strip())
    if not match:
        return None
    month, day, year, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not (year >= 1 and 1 <= month <= 12 and 1 <= hour <= 12 and minute < 60 and second < 60):
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    hour = hour % 12 + (12 if match.group(7) == "PM" else 0)
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


@dataclass
class RawBehaviors:
    """Impressions with news already resolved to row numbers of the split's news table (1-based)."""

    impression_ids: np.ndarray  # [I] int64
    impression_id_widths: np.ndarray  # [I] int64 characters of each id as written (``007``: 3)
    user_ids: Sequence[str]  # [I] a ``CodedIds`` over the sorted distinct ids (parsed or from the cache)
    times: np.ndarray  # [I] int64 seconds
    history_offsets: np.ndarray  # [I+1] int64
    history: np.ndarray  # int32 news rows, oldest click first
    candidate_offsets: np.ndarray  # [I+1] int64
    candidates: np.ndarray  # int32 news rows
    labels: np.ndarray  # int8, 1 = clicked, 0 = not clicked, -1 (UNLABELLED) = a test impression's candidate
    report: FileReport

    def impression_id_texts(self, lo: int = 0, hi: int | None = None) -> list[str]:
        """Impression ids ``lo:hi`` as behaviors.tsv wrote them: ASCII digits, so the value padded
        with zeros to its width is the original text."""
        values = self.impression_ids[lo:hi].tolist()
        widths = self.impression_id_widths[lo:hi].tolist()
        return [str(value).zfill(width) for value, width in zip(values, widths)]

    @property
    def labelled(self) -> np.ndarray:
        """[I] bool: whether each impression carries labels (False for a test split's rows)."""
        firsts = self.candidate_offsets[:-1]
        return self.labels[firsts] != UNLABELLED if len(firsts) else np.zeros(0, dtype=bool)


class CodedIds(Sequence[str]):
    """``names[codes[i]]`` as a sequence, without a Python string per row: a split's user id of
    each impression, from its sorted user ids and the [I] codes, for millions of impressions."""

    def __init__(self, names: Sequence[str], codes: np.ndarray):
        self.names, self.codes = names, codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index):  # an int gives a name, a slice a list of names
        if isinstance(index, slice):
            return [self.names[int(c)] for c in self.codes[index]]
        return self.names[int(self.codes[index])]

    def __iter__(self) -> Iterator[str]:
        return (self.names[int(c)] for c in self.codes)


class _Column:
    """A growing column of numbers: a short Python list, turned into a NumPy piece every chunk of
    rows, so that tens of millions of candidates never sit in memory as Python ints."""

    def __init__(self, dtype):
        self.dtype, self.pending, self.pieces = dtype, [], []

    def flush(self) -> None:
        if self.pending:
            self.pieces.append(np.asarray(self.pending, dtype=self.dtype))
            self.pending.clear()  # in place: callers hold its bound append/extend

    def array(self) -> np.ndarray:
        self.flush()
        return np.concatenate(self.pieces) if self.pieces else np.zeros(0, dtype=self.dtype)


def read_behaviors(path: str | Path, news_index: dict[str, int], *, strict: bool = False,
                   complete: bool = False, progress: ReadProgress | None = None) -> RawBehaviors:
    """Parse behaviors.tsv; ids without a news row are dropped and counted.

    ``news_index`` maps news id to its row (>= 1; 0 is reserved for padding).

    ``complete`` keeps every row with every candidate, as a leaderboard submission needs: a
    candidate without a news row becomes row 0 (the empty news) and is counted as unknown, an
    impression keeps its place even with no known candidate, and any bad row is an error.

    The file is read line by line and the numbers go to NumPy every ``_CHUNK_ROWS`` rows; the user
    ids come back as a ``CodedIds`` over the sorted distinct ids, so peak memory follows the
    arrays, not Python objects per candidate. ``progress`` is told how far the file has been read.
    """
    path = Path(path)
    report = FileReport(file=str(path))
    rows = _Rows(path, fields=BEHAVIOR_FIELDS, report=report, strict=strict or complete, progress=progress)
    columns = {name: _Column(dtype) for name, dtype in (
        ("impression_ids", np.int64), ("impression_id_widths", np.int64), ("user_codes", np.int32),
        ("times", np.int64), ("history_lengths", np.int64), ("history", np.int32), ("candidate_lengths", np.int64),
        ("candidates", np.int32), ("labels", np.int8))}
    pending = {name: column.pending for name, column in columns.items()}
    user_codes: dict[str, int] = {}  # in order of first appearance; sorted at the end
    for lineno, (imp_text, user, time_text, history_text, impressions_text) in rows:
        if not (imp_text.isascii() and imp_text.isdigit()):
            rows.bad(lineno, "impression_id", "bad_impression_id", f"not ASCII digits: {imp_text[:40]!r}")
            continue
        digits = imp_text.lstrip("0")
        if len(digits) > _INT64_DIGITS or int(digits or "0") > _INT64_MAX:
            rows.bad(lineno, "impression_id", "impression_id_out_of_range",
                     f"{imp_text[:40]!r}{'...' if len(imp_text) > 40 else ''} is beyond int64 "
                     f"(at most {_INT64_MAX})")
            continue
        if not user:
            rows.bad(lineno, "user_id", "empty_user_id", "empty user id")
            continue
        seconds = parse_time(time_text)
        if seconds is None:
            rows.bad(lineno, "time", "bad_time",
                     f"expected a valid date and time MM/DD/YYYY HH:MM:SS AM/PM (year 1 or later), "
                     f"got {time_text[:40]!r}")
            continue
        parsed = _candidates(impressions_text)
        if isinstance(parsed, str):
            rows.bad(lineno, "impressions", "bad_impression_label",
                     f"expected NEWSID-0 or NEWSID-1 for every candidate, or NEWSID for every candidate of "
                     f"a test row, got {parsed[:40]!r}")
            continue
        row_ids, row_labels = parsed
        row_cands = [news_index.get(news_id, 0) for news_id in row_ids]
        history_rows = [news_index.get(n, 0) for n in history_text.split()]
        kept_history = [r for r in history_rows if r]
        report.drop("unresolved history ids", len(history_rows) - len(kept_history))
        if complete:
            resolved = list(zip(row_cands, row_labels))
            report.drop("unknown candidate news (scored as empty titles)", sum(1 for c in row_cands if not c))
        else:
            resolved = [(c, y) for c, y in zip(row_cands, row_labels) if c]
            report.drop("unresolved impression ids", len(row_cands) - len(resolved))
            if not resolved:
                report.drop("impressions with no resolvable candidate")
                continue
        pending["impression_ids"].append(int(digits or "0"))
        pending["impression_id_widths"].append(len(imp_text))
        pending["user_codes"].append(user_codes.setdefault(user, len(user_codes)))
        pending["times"].append(seconds)
        pending["history_lengths"].append(len(kept_history))
        pending["history"].extend(kept_history)
        pending["candidate_lengths"].append(len(resolved))
        pending["candidates"].extend(c for c, _ in resolved)
        pending["labels"].extend(y for _, y in resolved)
        report.kept += 1
        if report.kept % _CHUNK_ROWS == 0:
            for column in columns.values():
                column.flush()
    arrays = {name: column.array() for name, column in columns.items()}
    names = sorted(user_codes)
    rank = np.empty(len(names), dtype=np.int32)  # first-appearance code -> place in the sorted names
    rank[np.fromiter((user_codes[n] for n in names), dtype=np.int64, count=len(names))] = np.arange(len(names))
    return RawBehaviors(
        impression_ids=arrays["impression_ids"],
        impression_id_widths=arrays["impression_id_widths"],
        user_ids=CodedIds(names, rank[arrays["user_codes"]]),
        times=arrays["times"],
        history_offsets=np.concatenate(([0], np.cumsum(arrays["history_lengths"], dtype=np.int64))),
        history=arrays["history"],
        candidate_offsets=np.concatenate(([0], np.cumsum(arrays["candidate_lengths"], dtype=np.int64))),
        candidates=arrays["candidates"],
        labels=arrays["labels"],
        report=report,
    )


def _candidates(text: str) -> tuple[list[str], list[int]] | str:
    """News ids and labels of an impressions field: all ``ID-0``/``ID-1`` (labelled), or all bare
    ids (a test row: labels UNLABELLED). Anything else returns the first offending item.

    >>> _candidates("N1-1 N2-0"), _candidates("N1 N2"), _candidates("N1 N2-0"), _candidates("N1-2")
    ((['N1', 'N2'], [1, 0]), (['N1', 'N2'], [-1, -1]), 'N2-0', 'N1-2')
    """
    items = text.split()
    if not items:
        return "(empty)"
    ids, labels = [], []
    bare = "-" not in items[0]
    for item in items:
        if bare:
            if "-" in item:
                return item
            ids.append(item)
            labels.append(UNLABELLED)
            continue
        news_id, dash, label = item.rpartition("-")
        if not dash or not news_id or label not in ("0", "1"):
            return item
        ids.append(news_id)
        labels.append(int(label))
    return ids, labels
