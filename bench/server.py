"""A real ``streamlit run app/main.py`` on 127.0.0.1, for the load benchmark and the browser tests."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Iterator

REPO = Path(__file__).resolve().parents[1]


def proc_stat(pid: int) -> tuple[float, float]:
    """CPU-seconds (user + system) and RSS in MB of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("streamlit did not become healthy")


@contextlib.contextmanager
def streamlit_server(env: dict[str, str], log: IO | int = subprocess.DEVNULL,
                     timeout: float = 90.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the studio with ``env``, wait until it answers, yield (its URL, the process); always stop it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT if log is not subprocess.DEVNULL else log,
    )
    with serving(proc, port, timeout) as url:
        yield url, proc


@contextlib.contextmanager
def serving(proc: subprocess.Popen, port: int, timeout: float = 90.0) -> Iterator[str]:
    """Wait until the started server ``proc`` answers on ``port``, yield its URL; always stop it."""
    try:
        wait_healthy(port, proc, timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
