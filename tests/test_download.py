"""Offline tests for nram_core.data.download against a real local HTTP server, for the archive checks
of nram_core.data.archive, and for the CLI's download bars."""
from __future__ import annotations

import http.server
import io
import random
import shutil
import socket
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from nram_core.cli.progress import TqdmProgress
from nram_core.data import archive
from nram_core.data import download as dl
from nram_core.fileio import DataError

NEWS = (
    "N1\tsports\tsoccer\tA title\tAn abstract\thttps://x/1\t[]\t[]\n"
    "N2\tnews\tworld\tAnother title\tMore text\thttps://x/2\t[]\t[]\n"
)
BEHAVIORS = (
    "1\tU1\t11/11/2019 9:05:58 AM\tN1\tN1-1 N2-0\n"
    "2\tU2\t11/12/2019 9:05:58 AM\tN2\tN2-0 N1-1\n"
)


def make_zip(members: dict[str, bytes | str], *, pad: int = 0) -> bytes:
    """Zip of ``members``; ``pad`` adds an incompressible filler so resumes span chunks."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if pad:
            zf.writestr("entity_embedding.vec", random.Random(0).randbytes(pad),
                        compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def mind_zip(pad: int = 50_000) -> bytes:
    return make_zip({"news.tsv": NEWS, "behaviors.tsv": BEHAVIORS}, pad=pad)


class Server:
    """State shared with the request handler: files to serve, and what was asked for."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.sent: list[int] = []  # body bytes written per request
        self.ignore_range = False
        self.truncate_at: int | None = None  # send only this many body bytes, then hang up
        self.base_url = ""


@pytest.fixture
def server():
    state = Server()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            rng = self.headers.get("Range")
            state.ranges.append(rng)
            data = state.files.get(self.path.lstrip("/"))
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                state.sent.append(0)
                return
            start = 0
            if rng and not state.ignore_range:
                start = int(rng.split("=", 1)[1].split("-", 1)[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    state.sent.append(0)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.truncate_at is not None:
                body = body[: state.truncate_at]
                self.close_connection = True
            state.sent.append(len(body))  # before writing: the client may finish first
            self.wfile.write(body)
            self.wfile.flush()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------------ happy path


def test_download_mind_demo_extracts_and_reports_progress(server, tmp_path):
    data = mind_zip()
    server.files["MINDdemo_train.zip"] = data
    server.files["MINDdemo_dev.zip"] = data
    calls = []

    out = dl.download_mind("demo", tmp_path, base_url=server.base_url,
                           on_progress=lambda *a: calls.append(a))

    assert out == {"train": tmp_path / "MINDdemo_train", "dev": tmp_path / "MINDdemo_dev"}
    for folder in out.values():
        assert (folder / "news.tsv").read_text() == NEWS
        assert (folder / "behaviors.tsv").read_text() == BEHAVIORS
        assert (folder / "entity_embedding.vec").is_file()
    assert (tmp_path / "MINDdemo_train.zip").read_bytes() == data
    assert not list(tmp_path.glob("*.part"))
    assert not list(tmp_path.glob(".*.tmp"))  # no leftover extraction temp folders

    for split in ("train", "dev"):
        seen = [(d, t) for s, d, t in calls if s == split]
        assert len(seen) >= 2
        done = [d for d, _ in seen]
        assert done == sorted(done) and done[0] < done[-1]
        assert done[-1] == len(data)
        assert all(t == len(data) for _, t in seen)
    assert server.ranges == [None, None]


def test_download_mind_skips_work_already_done(server, tmp_path):
    server.files["MINDdemo_train.zip"] = mind_zip()
    dl.download_mind("demo", tmp_path, splits=("train",), base_url=server.base_url)
    assert len(server.ranges) == 1

    # Extracted folder present: no request at all.
    dl.download_mind("demo", tmp_path, splits="train", base_url=server.base_url)
    assert len(server.ranges) == 1

    # Folder gone but the zip verifies: re-extract without downloading.
    shutil.rmtree(tmp_path / "MINDdemo_train")
    out = dl.download_mind("demo", tmp_path, splits=["train"], base_url=server.base_url)
    assert len(server.ranges) == 1
    assert (out["train"] / "news.tsv").read_text() == NEWS


def test_corrupt_cached_zip_is_downloaded_again(server, tmp_path):
    data = mind_zip()
    server.files["MINDdemo_dev.zip"] = data
    (tmp_path / "MINDdemo_dev.zip").write_bytes(b"garbage, not a zip")

    out = dl.download_mind("demo", tmp_path, splits=("dev",), base_url=server.base_url)

    assert (tmp_path / "MINDdemo_dev.zip").read_bytes() == data
    assert (out["dev"] / "behaviors.tsv").read_text() == BEHAVIORS
    assert server.ranges == [None]


def test_single_top_level_folder_is_kept(server, tmp_path):
    server.files["MINDsmall_train.zip"] = make_zip(
        {"MINDsmall_train/news.tsv": NEWS, "MINDsmall_train/behaviors.tsv": BEHAVIORS})
    out = dl.download_mind("small", tmp_path, splits="train", base_url=server.base_url)
    assert out["train"] == tmp_path / "MINDsmall_train" / "MINDsmall_train"
    assert (out["train"] / "news.tsv").read_text() == NEWS
    # And a second call recognises it as done.
    n = len(server.ranges)
    assert dl.download_mind("small", tmp_path, splits="train",
                            base_url=server.base_url) == out
    assert len(server.ranges) == n


# ---------------------------------------------------------------------------- resume


def test_resume_from_part_requests_only_the_rest(server, tmp_path):
    data = mind_zip()
    half = len(data) // 2
    server.files["MINDdemo_train.zip"] = data
    (tmp_path / "MINDdemo_train.zip.part").write_bytes(data[:half])
    calls = []

    out = dl.download_mind("demo", tmp_path, splits="train", base_url=server.base_url,
                           on_progress=lambda *a: calls.append(a))

    assert server.ranges == [f"bytes={half}-"]
    assert server.sent == [len(data) - half]
    assert (tmp_path / "MINDdemo_train.zip").read_bytes() == data
    assert not (tmp_path / "MINDdemo_train.zip.part").exists()
    assert (out["train"] / "news.tsv").read_text() == NEWS
    assert calls[0] == ("train", half, len(data))
    assert calls[-1] == ("train", len(data), len(data))


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = mind_zip()
    half = len(data) // 2
    server.files["f.zip"] = data
    server.ignore_range = True
    part = tmp_path / "f.zip.part"
    part.write_bytes(b"X" * half)  # wrong bytes: must be discarded, not appended to
    calls = []

    dest = dl.download_file(f"{server.base_url}/f.zip", tmp_path / "f.zip",
                            on_progress=lambda d, t: calls.append((d, t)), chunk_size=4096)

    assert server.ranges == [f"bytes={half}-"]
    assert server.sent == [len(data)]
    assert dest.read_bytes() == data
    assert calls[0] == (0, len(data)) and calls[-1] == (len(data), len(data))
    archive.verify_zip(dest)


def test_part_already_complete_gets_416_and_is_kept(server, tmp_path):
    data = mind_zip()
    server.files["f.zip"] = data
    (tmp_path / "f.zip.part").write_bytes(data)

    dest = dl.download_file(f"{server.base_url}/f.zip", tmp_path / "f.zip")

    assert server.ranges == [f"bytes={len(data)}-"]
    assert dest.read_bytes() == data
    assert not (tmp_path / "f.zip.part").exists()


def test_dropped_connection_keeps_part_and_next_call_resumes(server, tmp_path):
    data = mind_zip()
    server.files["f.zip"] = data
    server.truncate_at = 10_000
    url = f"{server.base_url}/f.zip"

    with pytest.raises(DataError, match="rerun to resume") as err:
        dl.download_file(url, tmp_path / "f.zip", chunk_size=4096, timeout=5)
    assert url in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "f.zip").exists()
    assert (tmp_path / "f.zip.part").read_bytes() == data[:10_000]

    server.truncate_at = None
    dl.download_file(url, tmp_path / "f.zip", timeout=5)
    assert server.ranges == [None, "bytes=10000-"]
    assert (tmp_path / "f.zip").read_bytes() == data


# ---------------------------------------------------------------------------- errors


def test_non_zip_download_is_rejected_and_removed(server, tmp_path):
    server.files["MINDdemo_train.zip"] = b"<html>Service unavailable</html>"
    with pytest.raises(DataError, match="MINDdemo_train.zip") as err:
        dl.download_mind("demo", tmp_path, splits="train", base_url=server.base_url)
    assert "not a zip" in str(err.value)
    assert not (tmp_path / "MINDdemo_train.zip").exists()
    assert not (tmp_path / "MINDdemo_train.zip.part").exists()
    assert not (tmp_path / "MINDdemo_train").exists()


def test_zip_without_mind_files_is_rejected(server, tmp_path):
    server.files["MINDdemo_dev.zip"] = make_zip({"readme.txt": "hi"})
    with pytest.raises(DataError, match="news.tsv"):
        dl.download_mind("demo", tmp_path, splits="dev", base_url=server.base_url)
    assert not (tmp_path / "MINDdemo_dev").exists()


def test_http_404_is_a_data_error(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        dl.download_mind("demo", tmp_path, splits="dev", base_url=server.base_url)


def test_connection_refused_is_a_clear_data_error(tmp_path):
    url = closed_port_url()
    with pytest.raises(DataError) as err:
        dl.download_mind("demo", tmp_path, splits="train", base_url=url)
    msg = str(err.value)
    assert msg.startswith(f"could not download {url}/MINDdemo_train.zip: ")
    assert "connection refused" in msg and "network" in msg
    assert "\n" not in msg
    assert not (tmp_path / "MINDdemo_train.zip").exists()


@pytest.mark.parametrize("kwargs, word", [
    ({"size": "huge"}, "size"),
    ({"size": "demo", "splits": ("test",)}, "split"),
    ({"size": "demo", "splits": ()}, "split"),
])
def test_unknown_size_or_split(tmp_path, kwargs, word):
    size = kwargs.pop("size")
    with pytest.raises(DataError, match=word):
        dl.download_mind(size, tmp_path, base_url="http://127.0.0.1:9", **kwargs)


def test_mind_url_template():
    assert dl.mind_url("large", "dev") == (
        "https://recodatasets.z20.web.core.windows.net/newsrec/MINDlarge_dev.zip")
    assert dl.mind_url("demo", "train", base_url="http://h/x/") == "http://h/x/MINDdemo_train.zip"


def test_verify_zip_rejects_truncated_zip(tmp_path):
    bad = tmp_path / "t.zip"
    bad.write_bytes(mind_zip()[:-100])
    with pytest.raises(DataError, match="t.zip"):
        archive.verify_zip(bad)
    assert not bad.exists()


def test_verify_zip_rejects_crc_error(tmp_path):
    # Flip a byte inside the stored (uncompressed) payload: structure intact, CRC wrong.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"hello world" * 10)
    data = bytearray(buf.getvalue())
    idx = data.index(b"hello world")
    data[idx] ^= 0xFF
    bad = tmp_path / "crc.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="crc.zip"):
        archive.verify_zip(bad)
    assert not bad.exists()


# ------------------------------------------------------------------------- zip slip


def _zip_with(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in members:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _assert_untouched(base: Path, dest: Path) -> None:
    assert not dest.exists()
    leftovers = sorted(p.name for p in base.iterdir())
    assert leftovers == ["evil.zip"], leftovers


@pytest.mark.parametrize("member", [
    "../evil.txt",
    "ok/../../evil.txt",
    "..\\evil.txt",
    "C:/evil.txt",
    "C:evil.txt",
])
def test_safe_extract_refuses_traversal(tmp_path, member):
    base = tmp_path / "base"
    base.mkdir()
    z = base / "evil.zip"
    # A good member first: proves nothing is written before every member was checked.
    z.write_bytes(_zip_with([("news.tsv", NEWS.encode()), (member, b"pwned")]))
    dest = base / "out"

    with pytest.raises(DataError) as err:
        archive.safe_extract(z, dest)

    assert repr(member) in str(err.value)
    _assert_untouched(base, dest)
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_refuses_absolute_member(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    target = tmp_path / "abs_evil.txt"
    member = str(target)
    assert member.startswith("/")
    z = base / "evil.zip"
    z.write_bytes(_zip_with([("news.tsv", b"x"), (member, b"pwned")]))
    dest = base / "out"

    with pytest.raises(DataError, match="absolute") as err:
        archive.safe_extract(z, dest)

    assert repr(member) in str(err.value)
    assert not target.exists()
    _assert_untouched(base, dest)


def test_safe_extract_refuses_symlink_member(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    z = base / "evil.zip"
    z.write_bytes(_zip_with([("news.tsv", b"x"), (_symlink_info("link"), b"/etc/passwd")]))
    dest = base / "out"

    with pytest.raises(DataError, match="symbolic link") as err:
        archive.safe_extract(z, dest)

    assert "'link'" in str(err.value)
    _assert_untouched(base, dest)


def test_zip_slip_via_download_mind(server, tmp_path):
    root = tmp_path / "root"
    server.files["MINDdemo_train.zip"] = _zip_with(
        [("news.tsv", NEWS.encode()), ("behaviors.tsv", BEHAVIORS.encode()),
         ("../evil.txt", b"pwned")])
    with pytest.raises(DataError, match=r"'\.\./evil\.txt'"):
        dl.download_mind("demo", root, splits="train", base_url=server.base_url)
    assert not (tmp_path / "evil.txt").exists()
    assert not (root / "MINDdemo_train").exists()
    assert sorted(p.name for p in root.iterdir()) == ["MINDdemo_train.zip"]


def test_safe_extract_refuses_non_empty_dest(tmp_path):
    z = tmp_path / "ok.zip"
    z.write_bytes(make_zip({"news.tsv": NEWS}))
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an empty folder"):
        archive.safe_extract(z, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["mine.txt"]


def test_safe_extract_into_empty_existing_dest(tmp_path):
    z = tmp_path / "ok.zip"
    z.write_bytes(make_zip({"news.tsv": NEWS, "sub/": b"", "sub/b.txt": "b"}))
    dest = tmp_path / "out"
    dest.mkdir()
    assert archive.safe_extract(z, dest) == dest
    assert (dest / "news.tsv").read_text() == NEWS
    assert (dest / "sub" / "b.txt").read_text() == "b"


# -------------------------------------------------------------------------- progress


def test_tqdm_progress_tracks_bytes():
    pytest.importorskip("tqdm")
    with TqdmProgress(file=io.StringIO()) as progress:
        progress("train", 0, 100)
        progress("train", 40, 100)
        bar = progress._bars["train"]
        assert bar.n == 40
        progress("train", 10, 100)  # body restarted from zero
        assert bar.n == 10
        progress("dev", 50, None)
        assert progress._bars["dev"].n == 50
