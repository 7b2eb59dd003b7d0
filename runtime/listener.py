"""The listening socket, with a deadline on each connection's first request (slowloris), and
quiet, counted refusals of requests that cannot be parsed.

aiohttp waits for a request line for as long as a connection stays open; its keep-alive timeout
covers only the time between requests. So every accepted connection gets a timer here, and a
middleware cancels it once a whole request line and headers have arrived (aiohttp calls the
middleware exactly then). A connection whose timer fires is closed and counted. Later requests
on a kept-alive connection are bounded by aiohttp's keep-alive timeout (``KEEPALIVE_SECONDS``).

aiohttp answers a request it cannot parse (smuggling attempts, bad headers, lines too long)
with a 400 and logs a traceback at ERROR for each: a log flood anyone can cause. Those are
counted instead (``voicefleet_runtime_bad_requests_total``; the gateway, which uses this
module too, has its own counters); other errors still log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter

from voicefleet.runtime.limits import KEEPALIVE_SECONDS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Listener:
    def __init__(self, header_timeout: float, timed_out: Counter) -> None:
        self.header_timeout = header_timeout
        self._timed_out = timed_out
        self._waiting: dict[RequestHandler, asyncio.TimerHandle] = {}
        self._server: asyncio.Server | None = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection as having sent its request."""
        timer = self._waiting.pop(request.protocol, None)
        if timer is not None:
            timer.cancel()
        return await handler(request)

    async def start(self, server: web.Server, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()

        def accept() -> RequestHandler:
            connection = server()
            self._waiting[connection] = loop.call_later(
                self.header_timeout, self._expire, connection
            )
            return connection

        self._server = await loop.create_server(accept, host, port, reuse_address=True)

    def _expire(self, connection: RequestHandler) -> None:
        if self._waiting.pop(connection, None) is None:
            return
        if connection.transport is not None:
            self._timed_out.inc()
            log.info("closing a connection with no request after %g s", self.header_timeout)
            connection.force_close()

    async def stop(self) -> None:
        """Stop accepting; what is connected is left to the runner's cleanup."""
        for timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        if self._server is not None:
            self._server.close()


class QuietBadRequests(logging.Filter):
    """Counts and drops aiohttp's records of requests it could not parse."""

    def __init__(self, bad_requests: Counter) -> None:
        super().__init__()
        self._bad_requests = bad_requests

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            self._bad_requests.inc()
            return False
        return True


def server_logger(bad_requests: Counter, name: str = "voicefleet.runtime.http") -> logging.Logger:
    """The logger aiohttp's connection handlers report to."""
    logger = logging.getLogger(name)
    logger.addFilter(QuietBadRequests(bad_requests))
    return logger


async def start_http(
    add_routes: Callable[[web.Application], None],
    *,
    host: str,
    port: int,
    header_timeout_seconds: float,
    shutdown_timeout_seconds: float,
    timed_out: Counter,
    bad_requests: Counter,
    logger_name: str,
) -> tuple[web.AppRunner, Listener]:
    """An aiohttp app with ``add_routes``' routes, listening on ``host:port`` behind a
    :class:`Listener`; aiohttp's own signal handling and access log off (the runtime and the
    gateway handle signals themselves, and a log line per request is a flood)."""
    listener = Listener(header_timeout_seconds, timed_out)
    app = web.Application(middlewares=[listener.middleware])
    add_routes(app)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=shutdown_timeout_seconds,
        keepalive_timeout=max(KEEPALIVE_SECONDS, header_timeout_seconds),
        logger=server_logger(bad_requests, logger_name),
    )
    await runner.setup()
    assert runner.server is not None
    await listener.start(runner.server, host, port)
    return runner, listener
