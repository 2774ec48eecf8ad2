"""A deep link (``/views/train.py``) is sent to the root instead of a blank page (``studio.server``)."""
from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request

import pytest

from bench.server import streamlit_server
from studio.server import DeepLinkRedirect


def _serve(path: str, content_type: bytes, method: str = "GET") -> list[dict]:
    """What the middleware sends for an app that answers ``path`` with ``content_type``."""

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": b"<html>shell</html>", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    asyncio.run(DeepLinkRedirect(inner)({"type": "http", "method": method, "path": path}, receive, send))
    return sent


def test_the_page_shell_at_a_deep_path_becomes_a_redirect_to_the_root():
    start, *body = _serve("/views/train.py", b"text/html; charset=utf-8")
    assert start["status"] == 302 and dict(start["headers"])[b"location"] == b"/"
    assert b"".join(m.get("body", b"") for m in body) == b""  # the shell never reaches the browser
    assert body[-1].get("more_body", False) is False


@pytest.mark.parametrize("path, content_type", [("/train", b"text/html"), ("/", b"text/html"),
                                                ("/static/js/index.js", b"application/javascript"),
                                                ("/_stcore/health", b"text/plain"),
                                                ("/media/5e1f.html", b"text/html")])  # a downloaded export
def test_pages_and_streamlits_own_files_pass_untouched(path, content_type):
    start, *body = _serve(path, content_type)
    assert start["status"] == 200 and b"".join(m.get("body", b"") for m in body) == b"<html>shell</html>"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.slow
def test_the_real_server_redirects_a_deep_link_and_serves_the_pages():
    opener = urllib.request.build_opener(_NoRedirect)
    with streamlit_server(dict(os.environ)) as (url, _proc):
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(f"{url}/views/train.py", timeout=10)
        assert redirect.value.code == 302 and redirect.value.headers["Location"] == "/"
        with opener.open(f"{url}/train", timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
