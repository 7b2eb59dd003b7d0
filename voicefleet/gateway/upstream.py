"""Opening a conversation's upstream socket on one backend, and what its answer means.

The upgrade asks for no per-message compression (aiohttp's client offers none unless asked;
audio does not compress), hands pings and pongs to the relay (the runtime's lag probe must
reach the caller, not stop at the gateway) and closes with the runtime's own close timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from voicefleet import constants
from voicefleet.gateway.backends import (
    REFUSED_BAD_ANSWER,
    REFUSED_UNAVAILABLE,
    REFUSED_UNREACHABLE,
    Backend,
)
from voicefleet.gateway.limits import CONNECT_TIMEOUT_SECONDS, MAX_MESSAGE_BYTES
from voicefleet.runtime.limits import CLOSE_TIMEOUT_SECONDS

HTTP_UNAVAILABLE = 503
HTTP_CLIENT_ERRORS = range(400, 500)


@dataclass(frozen=True)
class Target:
    """What the caller asked for: the runtime path and its query string, passed on as is."""

    path: str
    query: str

    def url(self, backend: Backend) -> str:
        return backend.url + self.path + (f"?{self.query}" if self.query else "")


@dataclass(frozen=True)
class Upstream:
    backend: Backend
    ws: aiohttp.ClientWebSocketResponse
    # The runtime's name for the session (its upgrade's X-Voicefleet-Session), by which the
    # gateway asks for its state when it moves the conversation.
    session_id: str | None = None


@dataclass(frozen=True)
class BackendRefused:
    """This backend did not take the conversation; another may."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Rejected:
    """The request itself is wrong (a 4xx from the runtime): no backend would take it."""

    status: int
    detail: str


async def connect(
    session: aiohttp.ClientSession, backend: Backend, target: Target
) -> Upstream | BackendRefused | Rejected:
    url = target.url(backend)
    try:
        ws = await session.ws_connect(
            url,
            autoping=False,
            autoclose=True,
            heartbeat=None,
            compress=0,
            max_msg_size=MAX_MESSAGE_BYTES,
            # No read deadline once upgraded (aiohttp then lifts the session's sock_read,
            # which bounds the upgrade's answer: see session_timeout()).
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_SECONDS),
        )
    except aiohttp.WSServerHandshakeError as exc:
        detail = f"{url} answered HTTP {exc.status} to the upgrade"
        if exc.status == HTTP_UNAVAILABLE:
            return BackendRefused(REFUSED_UNAVAILABLE, detail)
        if exc.status in HTTP_CLIENT_ERRORS:
            return Rejected(exc.status, detail)
        return BackendRefused(REFUSED_BAD_ANSWER, detail)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return BackendRefused(REFUSED_UNREACHABLE, f"{url}: {exc!r}")
    # aiohttp keeps the upgrade's answer only on the socket's private _response.
    session_id = ws._response.headers.get(constants.HEADER_SESSION)
    return Upstream(backend, ws, session_id)


def session_timeout() -> aiohttp.ClientTimeout:
    """For the session that opens upstream sockets: the connect and the upgrade's answer are
    bounded; an upgraded socket is not (a conversation lasts minutes)."""
    return aiohttp.ClientTimeout(
        total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=CONNECT_TIMEOUT_SECONDS
    )
