"""Small filesystem helpers shared by every module that writes to disk.

Writes are atomic: a temp file in the destination folder, then ``os.replace``, so a
crash never leaves a half-written file where a good one used to be.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


def read_json_lists(path: str | os.PathLike, *fields: str, what: str) -> tuple[tuple, ...]:
    """The named list fields of a JSON object file, as tuples; any problem is a DataError that
    names the file and says it is not ``what`` (e.g. "a vocabulary file")."""
    try:
        data = json.loads(read_regular_text(path))
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
