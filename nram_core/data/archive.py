"""Zip archives from outside: check them (``verify_zip``) and unpack them without letting a
member escape the destination or flood the disk (``safe_extract``).

A bad archive is refused with a :class:`DataError` naming the file and the member, before anything
is written; an interrupted extraction never leaves a half-filled folder that a later run would
mistake for a good one.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..fileio import DataError

__all__ = ["MAX_RATIO", "MAX_UNZIPPED_BYTES", "safe_extract", "verify_zip"]


def verify_zip(path: str | os.PathLike, *, remove_bad: bool = True) -> Path:
    """Check that ``path`` is a readable zip whose members all pass their CRC check.

    A failed check raises :class:`DataError` naming the file. By default the bad file is
    deleted, because it is almost always a truncated or mangled download (or an HTML
    error page) and keeping it would make the next run trust it instead of fetching a
    fresh copy.
    """
    path = Path(path)
    problem: str | None = None
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        if not zipfile.is_zipfile(path):
            problem = "is not a zip archive"
        else:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                if bad is not None:
                    problem = f"is corrupt (member {bad!r} fails its CRC check)"
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        problem = f"is corrupt ({exc})"
    if problem is None:
        return path
    removed = ""
    if remove_bad:
        try:
            path.unlink()
            removed = "; removed it, rerun to download again"
        except OSError:
            pass
    raise DataError(f"{path} {problem}{removed}")


def _unsafe_reason(info: zipfile.ZipInfo, dest_root: Path) -> str | None:
    """Why extracting ``info`` under ``dest_root`` would be unsafe, or None if it is fine."""
    name = info.filename
    if not name or "\x00" in name:
        return "has an empty or NUL-containing name"
    if "\\" in name:
        return "contains a backslash (Windows path trick)"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        return "is an absolute path or has a drive letter"
    if ".." in name.split("/"):
        return "contains a '..' component"
    # Unix file type lives in the high 16 bits; archivers often store permissions only.
    ftype = stat.S_IFMT(info.external_attr >> 16)
    if ftype == stat.S_IFLNK:
        return "is a symbolic link"
    if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file or folder"
    target = (dest_root / name).resolve()
    if target != dest_root and dest_root not in target.parents:
        return "resolves outside the destination folder"
    return None


# Caps against zip bombs. MINDlarge's biggest split unpacks to a few GB of text that compresses
# about 3-10x; a bomb of zeros compresses about 1000x.
MAX_UNZIPPED_BYTES = 16 << 30
MAX_RATIO = 100
_RATIO_FLOOR = 1 << 20  # members smaller than this unpack to little whatever their ratio


def safe_extract(zip_path: str | os.PathLike, dest_dir: str | os.PathLike, *,
                 max_bytes: int = MAX_UNZIPPED_BYTES, max_ratio: float = MAX_RATIO) -> Path:
    """Extract ``zip_path`` into ``dest_dir`` without letting any member escape it.

    Every member is checked *before* anything is written: absolute names, ``..``
    components, backslashes or drive letters, symlinks, and names that resolve outside
    ``dest_dir`` are refused with a :class:`DataError` naming the member. The archive is
    unpacked into a temp folder beside ``dest_dir`` and renamed into place at the end,
    so a failure (bad member, CRC error, full disk) leaves no half-extracted folder.

    The layout is kept as is: members at the top level land directly in ``dest_dir``;
    an archive with a single top-level folder keeps that folder inside ``dest_dir``.
    ``dest_dir`` must not exist yet, or be empty. Returns ``dest_dir``.

    Zip bombs are refused: an archive that declares more than ``max_bytes`` unpacked, a member
    that unpacks more than ``max_ratio`` times its compressed size, and a member that writes more
    than it declared (the count is kept while writing, so a lying header is caught too).
    """
    zip_path = Path(zip_path)
    dest_dir = Path(dest_dir)
    if dest_dir.exists():
        if not dest_dir.is_dir() or any(dest_dir.iterdir()):
            raise DataError(
                f"cannot extract {zip_path.name}: {dest_dir} already exists and is not an "
                "empty folder; remove it and retry"
            )
    dest_root = dest_dir.resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{zip_path} is not a readable zip archive ({exc})") from exc

    with zf:
        members = zf.infolist()
        for info in members:
            reason = _unsafe_reason(info, dest_root)
            if reason is not None:
                raise DataError(
                    f"refusing to extract {zip_path.name}: member {info.filename!r} {reason}"
                )
            if info.file_size > _RATIO_FLOOR and info.file_size > max_ratio * max(1, info.compress_size):
                raise DataError(
                    f"refusing to extract {zip_path.name}: member {info.filename!r} unpacks "
                    f"{info.file_size / max(1, info.compress_size):.0f} times its compressed size (a zip "
                    f"bomb?); the cap is {max_ratio:g}", settings=("max_zip_ratio",))
        declared = sum(info.file_size for info in members)
        if declared > max_bytes:
            raise DataError(f"refusing to extract {zip_path.name}: it unpacks to {declared:,} bytes, over the "
                            f"cap of {max_bytes:,}", settings=("max_unzipped_gb",))

        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp",
                                    dir=dest_dir.parent))
        try:
            for info in members:
                target = tmp / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > info.file_size:
                            raise DataError(f"refusing to extract {zip_path.name}: member {info.filename!r} "
                                            f"unpacks to more than the {info.file_size:,} bytes it declares")
                        dst.write(chunk)
            if dest_dir.exists():
                dest_dir.rmdir()  # checked empty above; rename(2) needs it gone or empty
            os.replace(tmp, dest_dir)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DataError(f"{zip_path} is corrupt ({exc}); delete it and retry") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir
