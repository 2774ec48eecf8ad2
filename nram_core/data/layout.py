"""Where a corpus's splits are: a MIND root, the official folders or zips, or single split folders
(``resolve_layout`` -> ``Layout``). Zips are extracted safely, once."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..fileio import DataError, nram_home
from .archive import MAX_RATIO, MAX_UNZIPPED_BYTES, safe_extract, verify_zip

SIZES = ("demo", "small", "large")  # MIND's sizes, as in the official names MIND{size}_{split}
SPLIT_FILES = ("news.tsv", "behaviors.tsv")  # what every split folder holds; the embeddings are optional


def is_split_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in SPLIT_FILES)


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
    if path.is_dir() and is_split_dir(path):
        return path
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
    if root.is_file() or is_split_dir(root):
        return Layout(train=_as_split(root, "data"), dev=None)
    found: dict[str, Path] = {}
    for split in ("train", "dev"):
        candidates = [root / split] + [root / f"MIND{size}_{split}" for size in SIZES]
        candidates += [root / f"MIND{size}_{split}.zip" for size in SIZES]
        existing = [c for c in candidates if (c.is_dir() and is_split_dir(c)) or c.is_file()]
        if len(existing) > 1 and len({c.with_suffix("").name for c in existing}) > 1:
            names = ", ".join(c.name for c in existing)
            raise DataError(f"{root}: several {split} splits ({names}); name the train and dev split folders")
        if existing:
            found[split] = _as_split(existing[0], "data")
    if not found:
        raise DataError(f"{root}: no MIND data (expected train/ and dev/, MIND*_train/ and "
                        "MIND*_dev/, their .zip files, or news.tsv and behaviors.tsv)")
    return Layout(train=found.get("train"), dev=found.get("dev"))


