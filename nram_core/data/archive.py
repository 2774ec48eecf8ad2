"""Zip archives from outside: check them (``verify_zip``) and unpack them without letting a
member escape the destination or flood the disk (``safe_extract``).

A bad archive is refused with a :class:`DataError` naming the file and the member, before anything
is written; an interrupted extraction never leaves a half-filled folder that a later run would
mistake for a good one.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..fileio import DataError, temp_dir_beside

__all__ = ["MAX_RATIO", "MAX_UNZIPPED_BYTES", "safe_extract", "verify_zip"]


def verify_zip(path: str | os.PathLike, *, remove_bad: bool = True, max_bytes: int | None = None,
               max_ratio: float | None = None) -> Path:
    """Check that ``path`` is a readable zip whose members all pass their CRC check.

    The central directory is checked first, before anything is decompressed: a member name listed
    twice, or two entries whose bytes overlap (the trick of the small zip that declares terabytes),
    fail the check, and ``max_bytes`` / ``max_ratio`` (when given) are the caps of
    :func:`safe_extract`, refused with the setting to raise.

    A failed check raises :class:`DataError` naming the file. By default the bad file is
    deleted, because it is almost always a truncated or mangled download (or an HTML
    error page) and keeping it would make the next run trust it instead of fetching a
    fresh copy. A zip over a cap is kept: it may be whole, and a larger cap accepts it.
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
                problem = _layout_problem(zf)
                if problem is None:
                    _check_caps(zf.infolist(), path.name, max_bytes=max_bytes, max_ratio=max_ratio)
                    bad = zf.testzip()
                    if bad is not None:
                        problem = f"is corrupt (member {bad!r} fails its CRC check)"
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
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
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the name and extra-field lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"


def _layout_problem(zf: zipfile.ZipFile) -> str | None:
    """What is wrong with the central directory of ``zf`` (a phrase to follow the archive's name),
    or None. Read from the directory and the local headers alone, nothing decompressed: a member
    name listed twice (the last would silently win), and entries whose bytes overlap, which is how
    a zip of kilobytes declares terabytes (one compressed member listed thousands of times)."""
    seen: set[str] = set()
    for info in zf.infolist():
        if info.filename in seen:
            return f"lists member {info.filename!r} twice (a mangled archive or a zip bomb)"
        seen.add(info.filename)
    handle = zf.fp
    end_of_data = zf.start_dir
    previous: zipfile.ZipInfo | None = None
    previous_end = 0
    for info in sorted(zf.infolist(), key=lambda i: i.header_offset):
        if previous is not None and info.header_offset < previous_end:
            return (f"has member {info.filename!r} overlapping member {previous.filename!r} "
                    "(entries that share bytes: a zip bomb?)")
        handle.seek(info.header_offset)
        raw = handle.read(_LOCAL_HEADER.size)
        if len(raw) < _LOCAL_HEADER.size or raw[:4] != _LOCAL_SIGNATURE:
            return f"is corrupt (member {info.filename!r} has no local header where the directory says)"
        _, name_length, extra_length = _LOCAL_HEADER.unpack(raw)
        previous = info
        previous_end = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length + info.compress_size
        if previous_end > end_of_data:
            return f"is corrupt (member {info.filename!r} runs past the end of the data)"
    return None


def _check_caps(members: list[zipfile.ZipInfo], archive: str, *, max_bytes: int | None,
                max_ratio: float | None) -> None:
    """Refuse, from the sizes the central directory declares, a member that unpacks more than
    ``max_ratio`` times its compressed size and an archive that unpacks to more than
    ``max_bytes`` (None: no cap)."""
    if max_ratio is not None:
        for info in members:
            if info.file_size > _RATIO_FLOOR and info.file_size > max_ratio * max(1, info.compress_size):
                raise DataError(
                    f"refusing to extract {archive}: member {info.filename!r} unpacks "
                    f"{info.file_size / max(1, info.compress_size):.0f} times its compressed size (a zip "
                    f"bomb?); the cap is {max_ratio:g}", settings=("max_zip_ratio",))
    declared = sum(info.file_size for info in members)
    if max_bytes is not None and declared > max_bytes:
        raise DataError(f"refusing to extract {archive}: it unpacks to {declared:,} bytes, over the "
                        f"cap of {max_bytes:,}", settings=("max_unzipped_gb",))


def safe_extract(zip_path: str | os.PathLike, dest_dir: str | os.PathLike, *,
                 max_bytes: int = MAX_UNZIPPED_BYTES, max_ratio: float = MAX_RATIO) -> Path:
    """Extract ``zip_path`` into ``dest_dir`` without letting any member escape it.

    Every member is checked *before* anything is written: absolute names, ``..``
    components, backslashes or drive letters, symlinks, and names that resolve outside
    ``dest_dir`` are refused with a :class:`DataError` naming the member. The archive is
    unpacked into a temp folder beside ``dest_dir`` and renamed into place at the end,
    so a failure (bad member, CRC error, full disk) leaves no half-extracted folder. When another
    process extracting the same archive renames its folder into place first, this call removes its
    own temp folder and returns the winner's.

    The layout is kept as is: members at the top level land directly in ``dest_dir``;
    an archive with a single top-level folder keeps that folder inside ``dest_dir``.
    ``dest_dir`` must not exist yet, or be empty. Returns ``dest_dir``.

    Zip bombs are refused, from the central directory before anything is decompressed: an archive
    that declares more than ``max_bytes`` unpacked, a member that unpacks more than ``max_ratio``
    times its compressed size, a member name listed twice and entries whose bytes overlap. A member
    that writes more than it declared is caught while writing (a lying header).
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
        try:
            problem = _layout_problem(zf)
        except OSError as exc:
            raise DataError(f"{zip_path} is not a readable zip archive ({exc})") from exc
        if problem is not None:
            raise DataError(f"refusing to extract {zip_path.name}: it {problem}")
        _check_caps(members, zip_path.name, max_bytes=max_bytes, max_ratio=max_ratio)

        tmp = temp_dir_beside(dest_dir)
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
            if not _rename_into_place(tmp, dest_dir):
                return dest_dir  # another extraction of the same archive won the race: reuse its result
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DataError(f"{zip_path} is corrupt ({exc}); delete it and retry") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir


def _rename_into_place(tmp: Path, dest_dir: Path) -> bool:
    """Rename the filled folder ``tmp`` to ``dest_dir`` (absent or empty); False when another
    process filled ``dest_dir`` first, so two extractions of one archive into one cache never
    collide: the loser keeps the winner's folder (and its caller removes ``tmp``)."""
    try:
        if dest_dir.exists():
            dest_dir.rmdir()  # checked empty above; rename(2) needs it gone or empty
        os.replace(tmp, dest_dir)
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and dest_dir.is_dir() and any(dest_dir.iterdir()):
            return False
        raise
