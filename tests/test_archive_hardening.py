"""Hostile archives and interrupted writes: zip bombs refused from the central directory, duplicate
and overlapping entries refused, concurrent extraction into one cache, demo-data renamed into place,
JSON nesting bounded, and fsync around the commit-point rename."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from nram_core import fileio, synth
from nram_core.data import archive
from nram_core.fileio import DataError

ROOT = Path(__file__).resolve().parents[1]
NEWS = "N1\tnews\tsports\ttitle\tabstract\turl\t[]\t[]\n"
BEHAVIORS = "1\tU1\t11/11/2019 9:00:00 AM\tN1\tN1-1\n"


def _overlapping_bomb(path: Path, *, copies: int, member_bytes: int, same_name: bool) -> Path:
    """One deflated member of ``member_bytes`` zeros, listed ``copies`` times in a hand-written
    central directory, every entry pointing at the same local header (offset 0)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("news.tsv", b"\0" * member_bytes)
    data = buf.getvalue()
    end = data.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", data, end + 12)
    entry = data[cd_offset:cd_offset + cd_size]
    assert entry[:4] == b"PK\x01\x02" and struct.unpack_from("<H", entry, 28)[0] == len("news.tsv")
    entries = [entry if same_name else entry[:46] + f"n{i:07d}".encode() + entry[46 + 8:] for i in range(copies)]
    directory = b"".join(entries)
    eocd = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, copies, copies, len(directory), cd_offset, 0)
    path.write_bytes(data[:cd_offset] + directory + eocd)
    return path


_CHECK_BOMB = """
import sys
from nram_core.data import resolve_layout
from nram_core.data.archive import verify_zip
from nram_core.fileio import DataError
for check in (lambda: verify_zip(sys.argv[1], remove_bad=False), lambda: resolve_layout(sys.argv[1])):
    try:
        check()
        print("accepted")
    except DataError as exc:
        print(exc)
"""


@pytest.mark.parametrize("same_name", [True, False], ids=["one-name", "many-names"])
def test_overlapping_entries_bomb_is_refused_fast(tmp_path, same_name):
    # 64 MiB listed 4,000 times: about 250 GiB declared in a few hundred KB.
    bomb = _overlapping_bomb(tmp_path / "bomb.zip", copies=4000, member_bytes=64 << 20, same_name=same_name)
    assert bomb.stat().st_size < 1 << 20
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHECK_BOMB, str(bomb)], cwd=ROOT, capture_output=True, text=True,
                          timeout=20, env={**os.environ, "NRAM_HOME": str(tmp_path / "home"),
                                           "PYTHONPATH": str(ROOT)})
    assert time.perf_counter() - start < 20
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert len(lines) == 2 and all("bomb.zip" in line for line in lines), lines
    expected = "member 'news.tsv' twice" if same_name else "member 'n0000001' overlapping member 'n0000000'"
    assert all(expected in line for line in lines), lines
    with pytest.raises(DataError, match=expected):
        archive.safe_extract(bomb, tmp_path / "out", max_ratio=10**9, max_bytes=1 << 62)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    assert bomb.exists()  # the user's own file is reported, never deleted


def test_duplicate_member_names_are_refused(tmp_path):
    z = tmp_path / "dup.zip"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(z, "w") as zf:
        zf.writestr("news.tsv", NEWS)
        zf.writestr("behaviors.tsv", BEHAVIORS)
        zf.writestr("news.tsv", "N9\tevil\n")
    with pytest.raises(DataError, match=r"dup\.zip.*'news\.tsv' twice"):
        archive.verify_zip(z, remove_bad=False)
    with pytest.raises(DataError, match=r"dup\.zip.*'news\.tsv' twice"):
        archive.safe_extract(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_verify_zip_checks_the_caps_before_decompressing(tmp_path):
    z = tmp_path / "zeros.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("news.tsv", b"\0" * (8 << 20))
    with pytest.raises(DataError, match="times its compressed size") as caught:
        archive.verify_zip(z, max_ratio=100)
    assert caught.value.settings == ("max_zip_ratio",)
    with pytest.raises(DataError, match="over the cap") as caught:
        archive.verify_zip(z, max_bytes=1 << 20)
    assert caught.value.settings == ("max_unzipped_gb",)
    assert z.exists()  # over a cap is not corrupt: a larger cap accepts it
    assert archive.verify_zip(z) == z


def test_concurrent_extraction_loser_reuses_the_winners_folder(tmp_path, monkeypatch):
    z = tmp_path / "MINDdemo_train.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("news.tsv", NEWS)
        zf.writestr("behaviors.tsv", BEHAVIORS)
    dest = tmp_path / "cache" / "MINDdemo_train"
    real_replace = os.replace
    raced = []

    def replace_after_a_rival(src, dst):
        # The rival extraction renames its folder into place between our extraction and our rename.
        if not raced and Path(dst) == dest:
            raced.append(True)
            monkeypatch.setattr(os, "replace", real_replace)
            archive.safe_extract(z, dest)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_after_a_rival)
    assert archive.safe_extract(z, dest) == dest
    assert raced
    assert (dest / "news.tsv").read_text() == NEWS and (dest / "behaviors.tsv").read_text() == BEHAVIORS
    assert sorted(p.name for p in dest.parent.iterdir()) == ["MINDdemo_train"]  # the loser removed its temp
    assert oct(dest.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_data_killed_midway_never_mixes_two_seeds(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    synth.generate(out, scale="demo", seed=0)
    seed0 = _files(out)
    assert sorted(seed0) == ["dev/behaviors.tsv", "dev/news.tsv", "train/behaviors.tsv", "train/news.tsv",
                             "truth.json"]

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt  # the run dies just before its last file
    monkeypatch.setattr(synth, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(out, scale="demo", seed=1)
    monkeypatch.undo()
    assert _files(out) == seed0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no temp folder left behind

    synth.generate(out, scale="demo", seed=1)  # an existing corpus is replaced whole
    fresh = synth.generate(tmp_path / "fresh", scale="demo", seed=1)
    assert _files(out) == _files(fresh) != seed0
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())

    (out / "train" / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"corpus: holds files that demo-data did not write \(train/mine\.txt\)"):
        synth.generate(out, scale="demo", seed=0)
    assert (out / "train" / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "state.json"])
def test_deeply_nested_json_is_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_text('{"words": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DataError, match=rf"{name}: JSON nested deeper than 64 levels"):
        fileio.read_json(path)
    with pytest.raises(DataError, match=rf"{name}: JSON nested deeper than 64 levels"):
        fileio.read_json_lists(path, "words", what="a vocabulary file")
    # Brackets inside strings are text, not nesting; moderate nesting is fine.
    path.write_text('{"words": ["' + "[{" * 1000 + '", "\\"]["], "deep": ' + "[" * 60 + "]" * 60 + "}")
    assert fileio.read_json_lists(path, "words", what="a vocabulary file") == (("[{" * 1000, '"]['),)
    assert fileio.json_depth(b'{"a": [[[]]]}') == 4


def test_atomic_writes_fsync_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        events.append(("fsync", info.st_ino))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "run" / "state.json"
    fileio.atomic_write_json(target, {"epoch": 1})
    file_ino, folder_ino = target.stat().st_ino, target.parent.stat().st_ino
    assert events == [("fsync", file_ino), ("replace", file_ino), ("fsync", folder_ino)]
    assert fileio.read_json(target) == {"epoch": 1}
