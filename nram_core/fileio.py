"""Small filesystem helpers shared by every module that writes to disk.

Writes are atomic: a temp file in the destination folder, fsynced, then ``os.replace`` and an
fsync of the folder, so a crash or a power cut never leaves a half-written file where a good one
used to be.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import Any, Callable, Iterator


class DataError(ValueError):
    """Bad user input (a file, a folder, a row). The CLI prints it as one line and exits 2.

    ``settings`` names the settings (config fields or run options: ``resume``, ``out``,
    ``word_vectors``, ``dev``) that would fix it; each front end words them its own way (the CLI
    as its flags), so the message itself names none."""

    def __init__(self, message: str, *, settings: tuple[str, ...] = ()):
        super().__init__(message)
        self.settings = tuple(settings)


def nram_home() -> Path:
    """Root of caches and runs: $NRAM_HOME, else ~/.cache/nram. Read at call time, never at import."""
    return Path(os.environ.get("NRAM_HOME") or Path.home() / ".cache" / "nram").expanduser()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it over ``path``, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path, mode = _new_temp_file(path)
    try:
        yield tmp_path
        if stat.S_IMODE(tmp_path.stat().st_mode) != mode:  # a writer that made its own file (safetensors: 0600)
            os.chmod(tmp_path, mode)
        _fsync_file(tmp_path)  # the bytes reach the disk before the name points at them
        os.replace(tmp_path, path)
        _fsync_folder(path.parent)  # and the rename itself survives a power cut
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _new_temp_file(path: Path) -> tuple[Path, int]:
    """A new empty hidden temp file beside ``path``, and its permission bits: those open() gives a new
    file (0666 less the umask). Made with os.open rather than mkstemp (0600), so the umask applies
    without being read, which only changing it process-wide can do."""
    tmp, fd = _create_beside(path, lambda candidate: os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _create_beside(path: Path, create: Callable[[Path], Any]) -> tuple[Path, Any]:
    """``create(tmp)`` on the first free hidden name ``.NAME.RANDOM.tmp`` beside ``path`` (it must raise
    FileExistsError when the name is taken); returns the name and what ``create`` gave."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return tmp, create(tmp)
        except FileExistsError:
            continue


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open folders (Windows) has no folder fsync either
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse a folder fsync; the file itself is already on disk
        pass
    finally:
        os.close(fd)


def temp_dir_beside(path: str | os.PathLike) -> Path:
    """A new empty folder beside ``path`` (its parent made if needed), with the permissions mkdir
    would give, to fill and then rename over ``path``; a crash leaves only a hidden ``.*.tmp``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp (0700), so the process umask applies without being changed
    tmp, _ = _create_beside(path, Path.mkdir)
    return tmp


LOCK_FILE = ".lock"


class FolderLock:
    """One writer per folder: an OS advisory lock (``flock``) on ``folder/.lock``, taken before the
    writer writes anything else there. The OS releases it when the process ends, however it ends
    (a crash or SIGKILL included), so a stale lock never blocks the next run. The file itself stays:
    removing a lock file lets a process that opened the old one and one that creates a new one both
    hold "the" lock. The holder writes who it is into the file, for the refusal a second writer gets.
    Platforms without ``fcntl`` (Windows) get no lock."""

    def __init__(self, folder: str | os.PathLike, *, what: str = "folder", settings: tuple[str, ...] = ()):
        self.folder = Path(folder)
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:
            return
        path = self.folder / LOCK_FILE
        try:  # O_NOFOLLOW: a .lock that links elsewhere must not make the writer write there
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            raise DataError(f"{path}: cannot be opened as this {what}'s lock file ({exc.strerror}); "
                            f"remove it") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise DataError(f"{path}: not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "a process that has not said which"
            os.close(fd)
            raise DataError(f"{self.folder}: another process is writing this {what} ({holder}); wait for it to "
                            f"finish or choose another {what}", settings=settings) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None, recursively: strict JSON has no NaN.

    >>> finite({"auc": float("nan"), "runs": [1.5, float("inf")]})
    {'auc': None, 'runs': [1.5, None]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj: Any, **options: Any) -> str:
    """Strict JSON (no NaN, no Infinity: they become null), keys sorted."""
    return json.dumps(finite(obj), allow_nan=False, sort_keys=True, **options)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json_text(obj, indent=2) + "\n")


MAX_SMALL_FILE = 256 << 20  # run-folder JSON (a MIND-large vocabulary is a few MB)


def read_regular_text(path: str | os.PathLike, *, limit: int = MAX_SMALL_FILE) -> str:
    """UTF-8 text of a regular file of at most ``limit`` bytes. A device, FIFO or socket (also behind
    a symlink: /dev/zero, /dev/urandom) is refused before any read, and reading stops at the limit,
    so a hostile path costs neither time nor memory. Raises FileNotFoundError, DataError or
    UnicodeDecodeError."""
    info = os.stat(path)  # follows symlinks: what would be read
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path}: not a regular file")
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{path}: larger than {limit:,} bytes")
    return data.decode("utf-8")


MAX_JSON_DEPTH = 64  # run-folder JSON nests 3 or 4 levels; json.loads recurses once per level

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str | bytes, *, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest (brackets inside strings do not
    count), scanning no deeper than ``limit + 1``: a cheap check before ``json.loads``, whose
    recursion a hostile file could otherwise exhaust.

    >>> json_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def json_loads(text: str | bytes, *, source: str | os.PathLike) -> Any:
    """``json.loads`` with the nesting depth checked first. Raises ValueError (a DataError naming
    ``source`` when it nests deeper than MAX_JSON_DEPTH)."""
    if json_depth(text) > MAX_JSON_DEPTH:
        raise DataError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value of a small regular file; any problem (unreadable, not UTF-8, not JSON,
    nested too deep) is a one-line DataError naming the file."""
    try:
        return json_loads(read_regular_text(path), source=path)
    except DataError:
        raise
    except ValueError as exc:  # bad JSON or bad UTF-8
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def read_json_lists(path: str | os.PathLike, *fields: str, what: str) -> tuple[tuple, ...]:
    """The named list fields of a JSON object file, as tuples; any problem is a DataError that
    names the file and says it is not ``what`` (e.g. "a vocabulary file")."""
    try:
        data = json_loads(read_regular_text(path), source=path)
        values = [data[field] for field in fields]
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not {what} ({exc})") from exc
    for field, value in zip(fields, values):
        if not isinstance(value, list):
            raise DataError(f"{path}: not {what} (field {field!r} is not a list)")
    return tuple(tuple(value) for value in values)


def cache_write(write: Callable[[], None]) -> bool:
    """Run a write into a cache. A cache only saves time, so a full or read-only disk skips it
    (returns False) instead of failing the work that wanted it."""
    try:
        write()
        return True
    except OSError:
        return False


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Let ``writer`` fill a temp path (e.g. ``safetensors.torch.save_file``), then rename."""
    with atomic_path(path) as tmp:
        writer(tmp)
