"""The page served at ``/`` by the runtime (and by anything else in front of a pool): try a
pool from a browser, microphone in, the agent's audio out, its text shown.

It speaks the raw PCM protocol (``/ws/pcm``) on the host it was loaded from, so the same
page works against one pod or through whatever routes to the pool. One static file, no
build step, nothing fetched from elsewhere: it must work in an air-gapped cluster.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

PAGE_FILE = "index.html"
PAGE_CONTENT_TYPE = "text/html"
# The page runs only its own inline code; its sockets go to the host it came from or the
# one a draining pod names (any host: the pool's reconnect address is the operator's choice).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
        "connect-src 'self' ws: wss:; worker-src blob:; media-src blob:"
    ),
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


@cache
def page() -> bytes:
    """The page's bytes, read once from the package."""
    return resources.files(__package__).joinpath(PAGE_FILE).read_bytes()


async def handler(_request: web.Request) -> web.Response:
    """``GET /`` on the runtime and on the gateway."""
    return web.Response(
        body=page(), content_type=PAGE_CONTENT_TYPE, charset="utf-8", headers=PAGE_HEADERS
    )
