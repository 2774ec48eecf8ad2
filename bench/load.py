"""``python -m bench.load --sessions N``: N visitors at once against a real ``streamlit run`` server.

The server runs ``app/main.py`` on 127.0.0.1 with a fresh ``NRAM_HOME`` (``--public`` sets
``NRAM_PUBLIC=1``, as the Procfile does). One visitor opens it first, before anything is
measured, so the demo corpus is generated and the caches are warm, as on a host that has served
before. Then N headless Chromium
contexts (one browser, Debian's ``/usr/bin/chromium``, driven by Playwright) each:

1. open the app and wait for the Overview to settle (its model card drawn, no script running);
2. open Recommendations, draw a random user, open Attention, back to Overview, each settled.

It prints one JSON line: per-session time to the settled first page (``first_page_p50_s``,
``first_page_p95_s``) and for the whole visit, the server's CPU-seconds and peak RSS during the
load, the RSS added per session, and the sessions that failed. Everything is bounded by
``--timeout`` (per session) and the server is always stopped.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from . import common
from .server import proc_stat, streamlit_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SETTLED = ("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
           " && !document.querySelector('[data-testid=\"stSkeleton\"]')")


class _RssWatch(threading.Thread):
    """Samples the server's RSS every 50 ms and keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, proc_stat(self.pid)[1])
            except (OSError, IndexError, ValueError):
                return
            self.stop.wait(0.05)


async def _settle(page, timeout_ms: float) -> None:
    await page.wait_for_timeout(200)
    await page.wait_for_function(SETTLED, timeout=timeout_ms)


async def _visit(browser, url: str, timeout_s: float) -> dict:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    ms = timeout_s * 1000
    start = time.perf_counter()
    record: dict = {"ok": False}
    try:
        await page.goto(url, timeout=ms)
        await page.get_by_text("Model card").first.wait_for(timeout=ms)
        await _settle(page, ms)
        record["first_page_s"] = time.perf_counter() - start
        for title, until in (("Recommendations", "true clicks at rank"), (None, None),
                             ("Attention", "Self-attention inside a title"), ("Overview", "Model card")):
            if title is None:
                await page.get_by_role("button", name="Random user").click(timeout=ms)
            else:
                await page.get_by_role("link", name=title).first.click(timeout=ms)
                await page.get_by_text(until).first.wait_for(timeout=ms)
            await _settle(page, ms)
        if await page.locator("[data-testid='stException']").count():
            raise RuntimeError("an exception is shown on the page")
        record.update(ok=True, visit_s=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - counted and reported, the load goes on
        record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        await context.close()
    return record


async def _load(url: str, sessions: int, timeout_s: float) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            return await asyncio.wait_for(asyncio.gather(*(_visit(browser, url, timeout_s)
                                                           for _ in range(sessions))), timeout_s * 2)
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=5, help="concurrent visitors")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a session may take")
    p.add_argument("--public", action="store_true", help="NRAM_PUBLIC=1, as the Procfile runs it")
    args = p.parse_args(argv)
    if not CHROMIUM.is_file():
        print(f"error: {CHROMIUM} is missing (install Debian's chromium package)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="nram-load-") as home:
        env = {**os.environ, "NRAM_HOME": home, **({"NRAM_PUBLIC": "1"} if args.public else {})}
        try:
            with streamlit_server(env, timeout=120) as (url, server):
                warm = asyncio.run(_load(url, 1, args.timeout))[0]  # the host's first visitor
                if not warm["ok"]:
                    print(f"error: the first visit failed: {warm.get('error')}", file=sys.stderr)
                    return 2
                cpu_before, rss_before = proc_stat(server.pid)
                watch = _RssWatch(server.pid)
                watch.start()
                started = time.perf_counter()
                records = asyncio.run(_load(url, args.sessions, args.timeout))
                wall = time.perf_counter() - started
                watch.stop.set()
                watch.join()
                cpu_after, rss_after = proc_stat(server.pid)
        except (RuntimeError, TimeoutError) as exc:
            print(f"error: streamlit did not start ({exc})", file=sys.stderr)
            return 2
    ok = [r for r in records if r["ok"]]
    first = [r["first_page_s"] for r in records if "first_page_s" in r]
    visits = [r["visit_s"] for r in ok]
    common.emit("load", {
        "ok": len(ok),
        "errors": [r["error"] for r in records if not r["ok"]][:5], "failed": len(records) - len(ok),
        "first_page_p50_s": round(float(np.percentile(first, 50)), 2) if first else None,
        "first_page_p95_s": round(float(np.percentile(first, 95)), 2) if first else None,
        "visit_p50_s": round(float(np.percentile(visits, 50)), 2) if visits else None,
        "visit_p95_s": round(float(np.percentile(visits, 95)), 2) if visits else None,
        "wall_s": round(wall, 1),
        "server_cpu_s": round(cpu_after - cpu_before, 1),
        "server_cpu_s_per_session": round((cpu_after - cpu_before) / max(1, args.sessions), 2),
        "server_rss_before_mb": round(rss_before, 1), "server_rss_peak_mb": round(watch.peak, 1),
        "rss_added_per_session_mb": round((watch.peak - rss_before) / max(1, args.sessions), 1),
    }, args=args)
    return 0 if len(ok) == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
