"""The studio's web server: Streamlit's own (``st.App``), with one change, made by the ASGI
middleware ``DeepLinkRedirect``.

Streamlit answers any unknown path with its page shell, index.html, whose script and style links are
relative. At a path one folder deep (``/views/train.py``, ``/a/b``) the browser then asks for
``/views/static/...``, gets the shell again instead of the scripts, and stays blank forever. A page
of the studio is one segment deep (``/train``), so a deeper request for a page is a wrong address:
it is sent to the root, which opens the Overview. Streamlit's own deep paths (``STREAMLIT_PREFIXES``:
``/_stcore/...``, ``/static/...``, ``/media/...``, ...) pass untouched, whatever they answer: a
downloaded HTML export is served from ``/media/`` as text/html too.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

# The first path segment of the files and endpoints Streamlit serves itself (the page shell never).
STREAMLIT_PREFIXES = frozenset({"_stcore", "static", "media", "component", "app", "~"})

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def is_deep(path: str, base: str = "") -> bool:
    """Whether ``path`` (below the server's base path ``base``) is a page address more than one segment
    deep; Streamlit's own paths (``STREAMLIT_PREFIXES``) are not page addresses.

    >>> [is_deep(p) for p in ("/", "/train", "/train/", "/views/train.py", "/a/b/c", "/media/f00d.html")]
    [False, False, False, True, True, False]
    >>> is_deep("/nram/train", base="/nram")
    False
    """
    if base and path.startswith(base.rstrip("/") + "/"):
        path = path[len(base.rstrip("/")):]
    parts = [part for part in path.split("/") if part]
    return len(parts) > 1 and parts[0] not in STREAMLIT_PREFIXES


class DeepLinkRedirect:
    """Turns Streamlit's page shell at a deep path into a redirect to the root (status 302)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], base: str = "") -> None:
        self.app = app
        self.base = base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") not in ("GET", "HEAD") \
                or not is_deep(scope.get("path", "/"), self.base):
            await self.app(scope, receive, send)
            return
        redirected = False

        async def guarded(message: Message) -> None:
            nonlocal redirected
            if message["type"] == "http.response.start":
                headers = dict((k.lower(), v) for k, v in message.get("headers", []))
                if message.get("status") == 200 and headers.get(b"content-type", b"").startswith(b"text/html"):
                    redirected = True
                    root = (self.base.rstrip("/") + "/").encode()
                    await send({"type": "http.response.start", "status": 302,
                                "headers": [(b"location", root), (b"content-length", b"0")]})
                    return
            elif message["type"] == "http.response.body" and redirected:
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        await self.app(scope, receive, guarded)
