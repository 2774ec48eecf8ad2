"""Fetch and unpack Microsoft's MIND news-recommendation dataset.

MIND ships as one zip per (size, split) on a public blob host. The large split is
over 500 MB, so downloads must survive a dropped connection: bytes go to a ``.part``
file beside the target and a later call resumes it with an HTTP ``Range`` request.
Archives come from the network, so they are verified and extracted by :mod:`.archive`
(CRC checks, no path traversal, no symlinks, no zip bombs, renamed into place at the end).
Progress leaves through the ``on_progress`` callbacks; drawing it is the caller's business.

Nothing here touches the network or the environment at import time.
"""
from __future__ import annotations

import functools
import http.client
import os
import re
import socket
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional

from ..fileio import DataError, nram_home
from .archive import MAX_RATIO, MAX_UNZIPPED_BYTES, safe_extract, verify_zip
from .layout import SIZES as MIND_SIZES, SPLIT_FILES, is_split_dir

__all__ = [
    "MIND_URL_TEMPLATE",
    "MIND_SIZES",
    "MIND_SPLITS",
    "mind_url",
    "download_file",
    "default_dest",
    "download_mind",
]

MIND_URL_TEMPLATE = "https://recodatasets.z20.web.core.windows.net/newsrec/MIND{size}_{split}.zip"
MIND_SPLITS = ("train", "dev")

ByteProgress = Callable[[int, Optional[int]], None]
SplitProgress = Callable[[str, int, Optional[int]], None]

_USER_AGENT = "nram-studio/0.1 (+https://github.com/)"
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


# --------------------------------------------------------------------------- download


def _part_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


def _network_reason(exc: BaseException) -> str:
    """Turn a urllib/socket error into a short human reason, hinting at the network.

    urllib wraps the interesting socket error in ``URLError.reason``; unwrapping it gives
    "connection refused" instead of "<urlopen error [Errno 111] ...>".
    """
    reason: object = exc
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
    if isinstance(reason, socket.gaierror):
        return f"host not found ({reason.strerror or reason}); is there a network connection?"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out; is there a network connection?"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused; is there a network connection, and is the server up?"
    if isinstance(reason, (ConnectionError, http.client.HTTPException)):
        name = type(reason).__name__
        return f"connection lost ({name}: {reason}); is the network connection stable?"
    if isinstance(reason, OSError) and reason.strerror:
        return f"{reason.strerror}; is there a network connection?"
    text = str(reason) or type(reason).__name__
    return f"{text}; is there a network connection?"


def _resume_hint(part: Path) -> str:
    try:
        size = part.stat().st_size
    except OSError:
        return ""
    return f" (kept {size} bytes in {part.name}; rerun to resume)" if size else ""


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """Return (first byte, total size) from a Content-Range header; None where unknown."""
    if not value:
        return None, None
    m = _CONTENT_RANGE.match(value.strip())
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    on_progress: ByteProgress | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 30,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download if there is one.

    Bytes are streamed into ``<dest>.part`` and only renamed to ``dest`` once the whole
    body has arrived, so ``dest`` existing means "complete". If a ``.part`` is already
    there, the request asks for the rest with ``Range: bytes=N-``:

    * 206 Partial Content: the remainder is appended;
    * 200 OK: the server ignored the range, so the part is discarded and the whole body
      written from zero;
    * 416 Range Not Satisfiable: the part already holds the whole file.

    ``on_progress(done_bytes, total_bytes_or_None)`` is called once when the response
    starts (``done`` then counts resumed bytes) and after every chunk.

    Network failures raise :class:`DataError` with one readable line; the ``.part`` is
    kept so that calling again resumes instead of starting over.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    for path in (dest, part):  # opening a FIFO there would wait forever for a writer
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise DataError(f"{path}: not a regular file (a download is one); remove it and retry")

    # At most two rounds: a second one only when a stale part must be dropped after 416.
    for _attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                _start, total = _parse_content_range(exc.headers.get("Content-Range"))
                if total is None or total == offset:
                    if on_progress is not None:
                        on_progress(offset, offset)
                    os.replace(part, dest)
                    return dest
                # Our part is longer than the remote file: it is not a prefix of it.
                part.unlink()
                continue
            raise DataError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            raise DataError(
                f"could not download {url}: {_network_reason(exc)}{_resume_hint(part)}"
            ) from exc

        with response:
            status = response.status
            length_header = response.headers.get("Content-Length")
            length = int(length_header) if length_header and length_header.isdigit() else None
            if status == 206 and offset:
                start, total = _parse_content_range(response.headers.get("Content-Range"))
                if start is not None and start != offset:
                    raise DataError(
                        f"could not download {url}: server resumed at byte {start}, "
                        f"not {offset}; delete {part} and retry"
                    )
                if total is None and length is not None:
                    total = offset + length
                mode = "ab"
            else:
                # 200 (fresh download, or a server that ignores Range): start from zero.
                offset, total, mode = 0, length, "wb"

            done = offset
            if on_progress is not None:
                on_progress(done, total)
            with open(part, mode) as fh:
                while True:
                    try:
                        chunk = response.read(chunk_size)
                    except (OSError, http.client.HTTPException) as exc:
                        fh.flush()
                        raise DataError(
                            f"could not download {url}: {_network_reason(exc)}"
                            f"{_resume_hint(part)}"
                        ) from exc
                    if not chunk:
                        break
                    fh.write(chunk)
                    done += len(chunk)
                    if on_progress is not None:
                        on_progress(done, total)
        if total is not None and done != total:
            raise DataError(
                f"could not download {url}: connection closed after {done} of {total} bytes"
                f"{_resume_hint(part)}"
            )
        os.replace(part, dest)
        return dest

    raise DataError(f"could not download {url}: server keeps refusing the byte range; retry")


# ------------------------------------------------------------------------------- MIND


def mind_url(size: str, split: str, *, base_url: str | None = None) -> str:
    """URL of one MIND zip; ``base_url`` swaps the host prefix (mirrors, local tests)."""
    if base_url:
        return f"{base_url.rstrip('/')}/MIND{size}_{split}.zip"
    return MIND_URL_TEMPLATE.format(size=size, split=split)


def _find_mind_folder(folder: Path) -> Path | None:
    """Folder under ``folder`` (itself, or one level down) holding news.tsv + behaviors.tsv."""
    if not folder.is_dir():
        return None
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
    return next((cand for cand in candidates if is_split_dir(cand)), None)


def _check_mind_layout(zip_path: Path) -> None:
    """Refuse, before extracting, a zip that is valid but does not look like a MIND split."""
    with zipfile.ZipFile(zip_path) as zf:
        names = {PurePosixPath(n) for n in zf.namelist()}
    for required in SPLIT_FILES:
        if not any(p.name == required and len(p.parts) <= 2 for p in names):
            raise DataError(
                f"{zip_path} does not look like a MIND archive: it has no {required}"
            )


def default_dest(size: str) -> Path:
    """Where a MIND download of ``size`` goes unless told otherwise: $NRAM_HOME/mind/SIZE."""
    return nram_home() / "mind" / size


def download_mind(
    size: str,
    root: str | os.PathLike,
    *,
    splits: Iterable[str] = MIND_SPLITS,
    base_url: str | None = None,
    on_progress: SplitProgress | None = None,
    max_bytes: int = MAX_UNZIPPED_BYTES,
    max_ratio: float = MAX_RATIO,
) -> dict[str, Path]:
    """Download, verify and extract MIND ``size`` (demo|small|large) under ``root``.

    For each split the zip goes to ``root/MIND{size}_{split}.zip`` and is extracted to
    ``root/MIND{size}_{split}/``. Work already done is skipped, so the call is cheap to
    repeat and safe to rerun after an interruption: an extracted folder holding
    news.tsv and behaviors.tsv is reused as is, a complete zip that verifies is not
    fetched again, and a partial download is resumed.

    ``on_progress(split, done_bytes, total_bytes_or_None)`` reports download progress.
    Returns split -> folder holding news.tsv and behaviors.tsv (the extracted folder, or
    its single top-level subfolder when the archive was packed that way).
    """
    if size not in MIND_SIZES:
        raise DataError(f"unknown MIND size {size!r}; choose one of {', '.join(MIND_SIZES)}")
    split_list = [splits] if isinstance(splits, str) else list(splits)
    if not split_list:
        raise DataError("no MIND split requested; choose from " + ", ".join(MIND_SPLITS))
    for split in split_list:
        if split not in MIND_SPLITS:
            raise DataError(
                f"unknown MIND split {split!r}; choose from {', '.join(MIND_SPLITS)}"
            )
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)

    result: dict[str, Path] = {}
    for split in dict.fromkeys(split_list):  # de-duplicate, keep order
        name = f"MIND{size}_{split}"
        folder = root / name
        found = _find_mind_folder(folder)
        if found is not None:
            result[split] = found
            continue

        zip_path = root / f"{name}.zip"
        have_zip = False
        if zip_path.exists():
            try:
                verify_zip(zip_path)  # removes it when bad, so we fall through to download
                have_zip = True
            except DataError:
                have_zip = False
        if not have_zip:
            split_cb = functools.partial(on_progress, split) if on_progress else None
            download_file(mind_url(size, split, base_url=base_url), zip_path,
                          on_progress=split_cb)
            verify_zip(zip_path, max_bytes=max_bytes, max_ratio=max_ratio)  # the caps before any CRC pass

        _check_mind_layout(zip_path)
        safe_extract(zip_path, folder, max_bytes=max_bytes, max_ratio=max_ratio)
        found = _find_mind_folder(folder)
        if found is None:  # pragma: no cover - _check_mind_layout guarantees it
            raise DataError(f"{zip_path} extracted to {folder} but holds no news.tsv")
        result[split] = found
    return result
