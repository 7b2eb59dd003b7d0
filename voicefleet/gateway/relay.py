"""One relayed conversation: the caller's socket and the backend's, every message passed on
unchanged both ways (binary, text, pings and pongs, so the runtime's lag probe measures the
caller itself), and the close of either side passed on to the other with its code and reason.

The caller's side is read from the moment it is upgraded, before any backend is found: while
the caller waits in the queue, what it sends is dropped (no conversation exists to hear it:
Kyutai's clients send nothing before the handshake anyway), its pings are answered, and its
hang-up is seen at once.

Each message's time inside the gateway (from the read returning to the write returning) goes
into ``relay_latency_seconds``. A write that has not returned for ``RELAY_STALL_SECONDS``
means that side stopped reading: the sweeper aborts the conversation (``stalled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from voicefleet.gateway.limits import MAX_HELD_MESSAGES, RELAY_STALL_SECONDS
from voicefleet.gateway.metrics import DOWN, UP, GatewayMetrics
from voicefleet.gateway.streams import streams_for
from voicefleet.gateway.upstream import Upstream
from voicefleet.gateway.wire import MAX_CLOSE_REASON_BYTES, Notice, sendable, tell
from voicefleet.runtime.endings import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY,
)
from voicefleet.runtime.limits import CLOSE_TIMEOUT_SECONDS

# Who ended a relayed conversation (the label of conversations_ended_total).
ENDED_BY_CALLER = "caller"
ENDED_BY_BACKEND = "backend"
ENDED_BACKEND_LOST = "backend_lost"
ENDED_STALLED = "stalled"
ENDED_SHUTDOWN = "gateway_shutdown"

BACKEND_LOST = Notice(
    CLOSE_INTERNAL_ERROR,
    "backend lost",
    "the server holding this conversation went away; please reconnect",
)
STALLED = Notice(CLOSE_POLICY, "too slow", "this caller stopped reading; closing")
SHUTDOWN = Notice(
    CLOSE_GOING_AWAY,
    "gateway shutdown",
    "this gateway is shutting down and its drain deadline passed; please reconnect",
)

Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
_RELAYED = (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG)
_CONTENT = (WSMsgType.BINARY, WSMsgType.TEXT)


@dataclass(frozen=True)
class Ended:
    """Why one direction stopped: the message that ended it (a close, or the socket gone)."""

    side: str  # UP: the caller's socket ended; DOWN: the backend's
    kind: WSMsgType
    code: int | None
    reason: str


async def _forward(sink: Socket, kind: WSMsgType, data: Any) -> None:
    if kind is WSMsgType.BINARY:
        await sink.send_bytes(data)
    elif kind is WSMsgType.TEXT:
        await sink.send_str(data)
    elif kind is WSMsgType.PING:
        await sink.ping(data)
    else:
        await sink.pong(data)


class Relay:
    def __init__(
        self,
        client: web.WebSocketResponse,
        transport: asyncio.Transport,
        path: str,
        metrics: GatewayMetrics,
    ) -> None:
        self.client = client
        self.transport = transport
        self.path = path
        self.metrics = metrics
        self.upstream: Upstream | None = None
        self.streams = streams_for(path)
        # Called with this relay when its pod says it drains; True: the notice is the
        # gateway's to act on (it moves the conversation), and the caller does not see it.
        self.on_drain: Callable[[Relay], bool] = lambda _relay: False
        # The pod's drain notice, kept to pass on should the move fail.
        self.drain_notice: tuple[WSMsgType, Any] | None = None
        # time.monotonic() at which a write began that has not returned yet, by direction.
        self._writing: dict[str, float] = {}
        self._stalled = asyncio.Event()
        self._shut = False
        # While a move switches pods, the caller's messages wait here (None: not switching).
        self._held: list[tuple[WSMsgType, Any]] | None = None
        self._switched = asyncio.Event()
        self._from_backend: asyncio.Task[Ended] | None = None
        # Whose messages the caller hears: the old pod's, through a move, until the new pod
        # has something to say (make before break: no silence while the new one starts).
        self._heard: Upstream | None = None
        self.cut_over = asyncio.Event()
        # The old pod's direction after a switch, relaying until the cut-over.
        self._retiring: asyncio.Task[Ended] | None = None
        self.moving = False
        # Pods this conversation was moved off, or tried to be: each is tried once.
        self.tried_moving_from: set[str] = set()
        # The pod's close code and reason, when the pod ended the conversation.
        self.backend_close: tuple[int | None, str] | None = None
        self._from_client = asyncio.create_task(self._pump_up(), name="relay-up")

    # --- before a backend is found ---------------------------------------------------------
    async def until_caller_leaves(self, waiting: asyncio.Future[Any]) -> bool:
        """Wait for ``waiting``; False (and ``waiting`` cancelled) if the caller hangs up
        first."""
        await asyncio.wait({waiting, self._from_client}, return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            return True
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await waiting
        return False

    async def refuse(self, notice: Notice) -> None:
        """Tell a caller that gets no conversation why, and close."""
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(tell(self.client, self.path, notice), CLOSE_TIMEOUT_SECONDS)
        await self._settle(self._from_client)

    # --- relaying ------------------------------------------------------------------------------
    async def run(self, upstream: Upstream) -> str:
        """Relay until either side ends; then close the other. Returns who ended it."""
        self.upstream = upstream
        self._heard = upstream
        self._from_backend = asyncio.create_task(self._pump_down(upstream), name="relay-down")
        stalled = asyncio.create_task(self._stalled.wait())
        done = await self._until_the_end(stalled)
        stalled.cancel()
        upstream = self.upstream
        from_backend = self._from_backend
        if self._stalled.is_set():
            ended = ENDED_STALLED
            self.metrics.relay_stalls.inc()
            self._from_client.cancel()
            from_backend.cancel()
            await self._abort(upstream)
        else:
            first = self._from_client if self._from_client in done else from_backend
            try:
                # A side that stopped reading cannot take even a close: bounded.
                ended = await asyncio.wait_for(
                    self._close_other(upstream, first.result()), CLOSE_TIMEOUT_SECONDS
                )
            except TimeoutError:
                ended = ENDED_STALLED
                await self._abort(upstream)
        await self._settle(self._from_client)
        await self._settle(from_backend)
        await self.retire()
        if self._shut:
            ended = ENDED_SHUTDOWN  # the gateway closed the caller: not the caller's doing
        self.metrics.ended.labels(ended).inc()
        return ended

    async def _until_the_end(self, stalled: asyncio.Task[Any]) -> set[asyncio.Task[Any]]:
        """Wait for either side to end (or a stall), across moves: a move starts a new
        backend direction, and the old pod closing during a move ends nothing."""
        while True:
            assert self._from_backend is not None
            switched = asyncio.create_task(self._switched.wait())
            done, _ = await asyncio.wait(
                {self._from_client, self._from_backend, stalled, switched},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not ({self._from_client, stalled} & done) and self.moving:
                # The old pod closed mid-move: the move's outcome decides.
                done, _ = await asyncio.wait(
                    {self._from_client, switched}, return_when=asyncio.FIRST_COMPLETED
                )
            switched.cancel()
            if {self._from_client, stalled} & done or not self._switched.is_set():
                return done
            self._switched.clear()

    # --- moving to another pod -------------------------------------------------------------
    def hold(self) -> None:
        """Keep the caller's messages here until :meth:`switch` or :meth:`release`."""
        self._held = []

    async def release(self) -> None:
        """The move failed: what was held goes to the pod that still has the conversation."""
        await self._flush(self.upstream)

    async def switch(self, new: Upstream) -> Upstream:
        """Go on with ``new`` (a session that continues this conversation on another pod):
        the caller's held messages go there first, then all it sends. The caller still hears
        the old pod until the new one's first word or audio (:attr:`cut_over`); the old
        pod's messages are dropped from then on. Returns the old upstream, for the caller to
        close once cut over."""
        old = self.upstream
        assert old is not None
        self.upstream = new
        self.cut_over.clear()
        self.streams.begin_switch()
        await self._flush(new)
        self._retiring = self._from_backend
        self._from_backend = asyncio.create_task(self._pump_down(new), name="relay-down")
        self._switched.set()
        return old

    def force_cut_over(self) -> None:
        """The new pod said nothing in time: the caller hears only it from now on."""
        if not self.cut_over.is_set() and self.upstream is not None:
            self._cut_over(self.upstream)

    def _cut_over(self, upstream: Upstream) -> None:
        self._heard = upstream
        self.streams.cut_over()
        self.cut_over.set()

    async def retire(self) -> None:
        """Let the old pod's direction end after its socket was closed."""
        retiring, self._retiring = self._retiring, None
        if retiring is not None:
            await asyncio.wait({retiring}, timeout=CLOSE_TIMEOUT_SECONDS)
            retiring.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await retiring

    async def pass_drain_notice(self) -> None:
        """The move failed: the caller gets its pod's drain notice after all."""
        if self.drain_notice is not None:
            kind, data = self.drain_notice
            with contextlib.suppress(ConnectionError):
                await _forward(self.client, kind, data)

    async def _flush(self, upstream: Upstream | None) -> None:
        """Send what was held, in order; what the caller sends meanwhile is held behind it
        (a message sent straight on during a send of the flush would overtake the rest)."""
        held = self._held or []
        while held and upstream is not None:
            kind, data = held.pop(0)
            with contextlib.suppress(ConnectionError):
                await _forward(upstream.ws, kind, self.streams.up(kind, data))
        self._held = None

    async def shut(self) -> None:
        """The gateway's drain deadline passed: tell the caller, close both sides."""
        self._shut = True
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(tell(self.client, self.path, SHUTDOWN), CLOSE_TIMEOUT_SECONDS)

    def stalled(self, now: float) -> bool:
        """Whether a write has just been found stuck for too long; the relay is then
        aborted."""
        if self._stalled.is_set():
            return False
        if any(now - since > RELAY_STALL_SECONDS for since in self._writing.values()):
            self._stalled.set()
            return True
        return False

    async def _close_other(self, upstream: Upstream, ending: Ended) -> str:
        """Pass one side's end on to the other; who ended the conversation."""
        if ending.side == UP:
            # A caller's close code goes on as sent; a caller that vanished is "going away".
            closed = ending.kind is WSMsgType.CLOSE
            code = sendable(ending.code, CLOSE_GOING_AWAY) if closed else CLOSE_GOING_AWAY
            with contextlib.suppress(ConnectionError):
                await upstream.ws.close(code=code, message=_reason(ending.reason))
            return ENDED_BY_CALLER
        with contextlib.suppress(ConnectionError):
            if ending.kind is WSMsgType.CLOSE:
                self.backend_close = (ending.code, ending.reason)
                code = sendable(ending.code, CLOSE_NORMAL)
                await self.client.close(code=code, message=_reason(ending.reason))
                return ENDED_BY_BACKEND
            await tell(self.client, self.path, BACKEND_LOST)
        return ENDED_BACKEND_LOST

    async def _settle(self, task: asyncio.Task[Ended]) -> None:
        """Let a direction end by itself after its socket closed; cancel it if it hangs."""
        await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_SECONDS)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task
        if not self.client.closed:
            self._abort_client()

    async def _abort(self, upstream: Upstream) -> None:
        """Drop the caller's connection now; the backend's gets a close, and is dropped too
        if that cannot go out in time (aiohttp releases the connection either way)."""
        self._abort_client()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(
                upstream.ws.close(code=CLOSE_GOING_AWAY, message=_reason(STALLED.reason)),
                CLOSE_TIMEOUT_SECONDS,
            )

    def _abort_client(self) -> None:
        self.transport.abort()

    # --- the two directions ------------------------------------------------------------------
    def _to_backend(self, kind: WSMsgType, data: Any) -> tuple[Socket | None, Any]:
        if self._held is not None and kind in (WSMsgType.BINARY, WSMsgType.TEXT):
            if len(self._held) < MAX_HELD_MESSAGES:
                self._held.append((kind, data))
            return None, None
        if self.upstream is None:
            return None, data
        return self.upstream.ws, self.streams.up(kind, data)

    async def _pump_up(self) -> Ended:
        """Caller -> backend. Before a backend is found, messages are dropped and pings are
        answered here; while a move switches pods, messages are held."""
        return await self._pump(self.client, self._to_backend, UP, DOWN)

    async def _pump_down(self, upstream: Upstream) -> Ended:
        """Backend -> caller, for as long as ``upstream`` holds the conversation."""

        def to_caller(kind: WSMsgType, data: Any) -> tuple[Socket | None, Any]:
            current = self.upstream is upstream
            if current and self._heard is not upstream:
                # A new pod, not heard yet: its greeting is hidden; its first word or audio
                # is the cut-over.
                if self.streams.greeting(kind, data) or kind not in _CONTENT:
                    return None, None
                self._cut_over(upstream)
            elif self._heard is not upstream:
                return None, None  # moved on: what the old pod still says is dropped
            if self.streams.drain_notice(kind, data):
                if not current:
                    return None, None  # the old pod, while the new one starts
                self.drain_notice = (kind, data)
                if self.on_drain(self):
                    return None, None
            return self.client, self.streams.down(kind, data)

        return await self._pump(upstream.ws, to_caller, DOWN, UP)

    async def _pump(
        self,
        source: Socket,
        route: Callable[[WSMsgType, Any], tuple[Socket | None, Any]],
        side: str,
        other: str,
    ) -> Ended:
        """Pass ``source``'s messages on until it ends (an Ended of ``side``) or the sink
        does (of ``other``); ``route`` says where a message goes, and as what."""
        observe = self.metrics.relay_latency.labels(side).observe
        writing = self._writing
        while True:
            message = await source.receive()
            kind = message.type
            if kind not in _RELAYED:
                return _ended(side, message)
            started = time.perf_counter()
            sink, data = route(kind, message.data)
            if sink is None:
                if kind is WSMsgType.PING and data is not None:
                    await source.pong(message.data)
                continue
            writing[side] = time.monotonic()
            try:
                await _forward(sink, kind, data)
            except ConnectionError:
                return Ended(other, WSMsgType.CLOSED, None, "")
            del writing[side]
            observe(time.perf_counter() - started)


def _reason(text: str) -> bytes:
    return text.encode()[:MAX_CLOSE_REASON_BYTES]


def _ended(side: str, message: aiohttp.WSMessage) -> Ended:
    if message.type is WSMsgType.CLOSE:
        return Ended(side, WSMsgType.CLOSE, message.data, message.extra or "")
    return Ended(side, message.type, None, "")
