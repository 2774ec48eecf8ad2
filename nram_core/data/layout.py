"""Where a corpus's splits are: a MIND root, the official folders or zips, or single split folders
(``resolve_layout`` -> ``Layout``). Zips are extracted safely, once."""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..fileio import DataError, nram_home
from .archive import MAX_RATIO, MAX_UNZIPPED_BYTES, safe_extract, verify_zip

SIZES = ("demo", "small", "large")  # MIND's sizes, as in the official names MIND{size}_{split}
SPLIT_FILES = ("news.tsv", "behaviors.tsv")  # what every split folder holds; the embeddings are optional


def split_problem(folder: Path) -> str | None:
    """What keeps ``folder`` from being a split folder, as one line naming the file ("ROOT/dev/news.tsv:
    not a regular file"), or None when both its files are regular files. Only ``stat`` is called:
    nothing is opened, so a FIFO never blocks."""
    missing = []
    for name in SPLIT_FILES:
        path = folder / name
        try:
            info = os.stat(path)  # follows symlinks: what would be read (a link to /dev/zero is a device)
        except (FileNotFoundError, NotADirectoryError):
            missing.append(path)
            continue
        except OSError as exc:  # a symlink loop, no permission
            return f"{path}: cannot read ({exc.strerror or exc})"
        if not stat.S_ISREG(info.st_mode):
            return f"{path}: not a regular file"
    if len(missing) == len(SPLIT_FILES):
        return f"{folder}: holds neither {' nor '.join(SPLIT_FILES)}"
    if missing:
        return f"{missing[0]}: no such file (a split folder holds {' and '.join(SPLIT_FILES)})"
    return None


def is_split_dir(path: Path) -> bool:
    return path.is_dir() and split_problem(path) is None


def _folder_problem(path: Path) -> str:
    """What is wrong with ``path``, named as a split folder (train/, MINDsmall_dev/) and not one."""
    if path.is_dir():
        return split_problem(path) or f"{path}: not a MIND split"
    return f"{path}: not a folder (a split folder holds {' and '.join(SPLIT_FILES)})"


def _holds_split_file(folder: Path) -> bool:
    """Whether anything (a file, a folder, a FIFO, a dangling link) is named like a split file in ``folder``."""
    return any(os.path.lexists(folder / name) for name in SPLIT_FILES)


@dataclass(frozen=True)
class Layout:
    """Where each split lives. ``dev`` is None when only one split folder was given."""

    train: Path | None
    dev: Path | None

    def require(self, split: str) -> Path:
        path = self.train if split == "train" else self.dev
        if path is None:
            raise DataError(f"no {split} split found: name a folder that holds {split}/, or the {split} split folder",
                            settings=("data", split))
        return path


def _extract_zip(zip_path: Path) -> Path:
    """Extract an official MIND zip once into NRAM_HOME/extracted and return the split folder."""
    # The user's own file: report, never delete. The caps are checked before anything is decompressed.
    verify_zip(zip_path, remove_bad=False, max_bytes=MAX_UNZIPPED_BYTES, max_ratio=MAX_RATIO)
    stat = zip_path.stat()
    tag = hashlib.blake2b(f"{zip_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode(), digest_size=6)
    dest = nram_home() / "extracted" / f"{zip_path.stem}-{tag.hexdigest()}"
    if not dest.exists():
        safe_extract(zip_path, dest)  # a concurrent extraction of the same zip: the loser reuses the winner's folder
    return _find_split_inside(dest, zip_path)


def _find_split_inside(folder: Path, origin: Path) -> Path:
    if is_split_dir(folder):
        return folder
    inner = [p for p in sorted(folder.iterdir()) if p.is_dir() and is_split_dir(p)]
    if len(inner) == 1:
        return inner[0]
    raise DataError(f"{origin}: holds no news.tsv and behaviors.tsv")


def _as_split(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".zip":
        return _extract_zip(path)
    if path.is_dir():
        problem = split_problem(path)
        if problem is None:
            return path
        if _holds_split_file(path):  # meant as a split folder: say which file is wrong
            raise DataError(problem)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder ({what})")
    raise DataError(f"{path}: not a MIND split (needs news.tsv and behaviors.tsv, or an official .zip)")


def resolve_layout(data: str | Path | None = None, *, train: str | Path | None = None,
                   dev: str | Path | None = None) -> Layout:
    """Accept a root with train/ and dev/, the official MIND{size}_{split} folders or zips,
    a single split folder or zip, or explicit ``train``/``dev`` folders."""
    if train is not None or dev is not None:
        return Layout(train=_as_split(Path(train), "train split") if train else None,
                      dev=_as_split(Path(dev), "dev split") if dev else None)
    if data is None:
        raise DataError("no data given: name a MIND root, or a train and a dev split folder")
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if not root.is_dir() and not root.is_file():
        raise DataError(f"{root}: not a regular file or folder")
    if root.is_file() or is_split_dir(root):
        return Layout(train=_as_split(root, "data"), dev=None)
    found: dict[str, Path] = {}
    unusable: list[str] = []
    for split in ("train", "dev"):
        folders = [root / split] + [root / f"MIND{size}_{split}" for size in SIZES]
        zips = [root / f"MIND{size}_{split}.zip" for size in SIZES]
        existing = [c for c in folders if is_split_dir(c)] + [c for c in zips if c.is_file()]
        if len(existing) > 1 and len({c.with_suffix("").name for c in existing}) > 1:
            names = ", ".join(c.name for c in existing)
            raise DataError(f"{root}: several {split} splits ({names}); name the train and dev split folders")
        if existing:
            found[split] = _as_split(existing[0], "data")
        else:
            unusable += [_folder_problem(c) for c in folders if os.path.lexists(c)]
    if unusable:
        # A train/ or dev/ that is there but unusable (news.tsv or behaviors.tsv missing, a folder, a
        # FIFO or a device; or dev/ itself a file): name what is wrong rather than report no such split.
        raise DataError(unusable[0])
    if not found:
        if _holds_split_file(root):  # news.tsv or behaviors.tsv here, but not both regular files
            raise DataError(split_problem(root) or f"{root}: not a MIND split")
        raise DataError(f"{root}: no MIND data (expected train/ and dev/, MIND*_train/ and "
                        "MIND*_dev/, their .zip files, or news.tsv and behaviors.tsv)")
    return Layout(train=found.get("train"), dev=found.get("dev"))
