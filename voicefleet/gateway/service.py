"""The gateway's shared state: its backends, admission and queue, live relays, metrics and
drain, and the one conversation handler every relayed path shares."""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import aiohttp
from aiohttp import web

from voicefleet.api.gateway import BackendView, GatewayStatus, QueueView
from voicefleet.gateway.admission import Admission, QueueFull
from voicefleet.gateway.backends import Backend, BackendPool
from voicefleet.gateway.config import GatewayConfig
from voicefleet.gateway.cuts import cut_reason
from voicefleet.gateway.discovery import BackendSource
from voicefleet.gateway.limits import MAX_MESSAGE_BYTES, SWEEP_SECONDS
from voicefleet.gateway.metrics import GatewayMetrics
from voicefleet.gateway.mover import MoveFailed, Mover
from voicefleet.gateway.relay import Relay
from voicefleet.gateway.upstream import (
    BackendRefused,
    Rejected,
    Target,
    Upstream,
    connect,
    session_timeout,
)
from voicefleet.gateway.wire import CLOSE_TRY_AGAIN_LATER, Notice
from voicefleet.runtime.endings import CLOSE_GOING_AWAY, CLOSE_POLICY
from voicefleet.runtime.sockets import bound_buffers, caller_websocket

log = logging.getLogger(__name__)

# Why a caller got no conversation (the label of refusals_total).
REFUSED_QUEUE_FULL = "queue_full"
REFUSED_QUEUE_TIMEOUT = "queue_timeout"
REFUSED_DRAINING = "draining"
REFUSED_REJECTED = "rejected"  # the runtime refused the request itself (4xx)


class Gateway:
    def __init__(self, config: GatewayConfig, source: BackendSource) -> None:
        self.config = config
        self.source = source
        self.metrics = GatewayMetrics()
        self.pool = BackendPool(self.metrics, config.poll_seconds)
        self._session: aiohttp.ClientSession | None = None
        self.admission = Admission(
            self.pool,
            self._connect,
            self.metrics,
            queue_max=config.queue_max,
            queue_wait_seconds=config.queue_wait_seconds,
        )
        self.relays: set[Relay] = set()
        self.mover: Mover | None = None
        self._moves: dict[Relay, asyncio.Task[None]] = {}
        self._targets: dict[Relay, Target] = {}
        self.waiting: set[Relay] = set()
        self.cuts: collections.Counter[str] = collections.Counter()
        self.draining = False
        self.drain_deadline = 0.0
        self.emptied = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._telling: set[asyncio.Task[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        # No limit on connections: each conversation holds one upstream socket for minutes
        # (aiohttp's default pool of 100 would make the 101st wait).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=session_timeout()
        )
        self.pool.start(self._session)
        if self.config.token is not None:
            self.mover = Mover(self._session, self.pool, self.metrics, self.config.token)
        self._tasks = [
            asyncio.create_task(self.source.watch(self.pool.publish), name="discovery"),
            asyncio.create_task(self.admission.run(), name="dispatcher"),
            asyncio.create_task(self._sweep(), name="sweeper"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pool.stop()
        if self._session is not None:
            await self._session.close()

    def ready(self) -> bool:
        return not self.draining and self.pool.any_in_rotation()

    def start_drain(self, seconds: float) -> None:
        """SIGTERM: no new conversations; live ones go on until they end or ``seconds``."""
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + seconds
        self.metrics.draining.set(1)
        log.info("draining: %d live conversations, deadline in %.0f s", len(self.relays), seconds)
        notice = Notice(
            CLOSE_GOING_AWAY,
            "gateway draining",
            "this gateway is shutting down before a slot freed up; please reconnect",
        )
        for relay in list(self.waiting):
            telling = asyncio.create_task(relay.refuse(notice))
            self._telling.add(telling)
            telling.add_done_callback(self._telling.discard)
        self._check_empty()

    async def shut_live(self) -> None:
        """The drain deadline passed: close what is still relayed."""
        await asyncio.gather(*(relay.shut() for relay in list(self.relays)))

    def _check_empty(self) -> None:
        if self.draining and not self.relays and not self.waiting:
            self.emptied.set()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            for relay in list(self.relays):
                if relay.stalled(now):
                    log.info("a relayed conversation stalled (one side stopped reading): aborted")
                elif relay.upstream is not None and relay.upstream.backend.draining:
                    # A path without drain notices (/audio), or a notice not seen: the poll.
                    self._start_move(relay)

    async def _connect(
        self, backend: Backend, target: Target
    ) -> Upstream | BackendRefused | Rejected:
        assert self._session is not None
        return await connect(self._session, backend, target)

    # --- one conversation -----------------------------------------------------------------------
    async def converse(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            self.metrics.refusals.labels(REFUSED_DRAINING).inc()
            return _unavailable(
                "this gateway is shutting down; connect again (the pool's other gateways "
                "take new conversations)",
                REFUSED_DRAINING,
            )
        target = Target(request.path, request.query_string)
        outcome = await self.admission.admit_now(target)
        if isinstance(outcome, Rejected):
            return self._rejected(outcome)
        client = caller_websocket(MAX_MESSAGE_BYTES)
        try:
            await client.prepare(request)
        except ConnectionError:
            if outcome is not None:
                await self._hand_back(outcome)
            return web.Response(status=400, text="the connection closed during the upgrade")
        transport = request.transport
        if transport is None or transport.is_closing():
            if outcome is not None:
                await self._hand_back(outcome)
            return client
        bound_buffers(transport)
        relay = Relay(client, transport, target.path, self.metrics)
        if outcome is None:
            # The whole pool is full: the caller's socket is open, its handshake waits.
            outcome = await self._queue(relay, target)
            if outcome is None:
                return client
        if isinstance(outcome, Rejected):
            await relay.refuse(Notice(CLOSE_POLICY, "rejected by the server", outcome.detail))
            return client
        await self._relay(relay, outcome, target)
        return client

    async def _queue(self, relay: Relay, target: Target) -> Upstream | Rejected | None:
        """Hold the caller until a slot frees; None when it got none (and was told why)."""
        try:
            waiter = self.admission.enqueue(target)
        except QueueFull:
            self.metrics.refusals.labels(REFUSED_QUEUE_FULL).inc()
            await relay.refuse(
                _pool_full(
                    "queue full",
                    f"every conversation slot is taken and {self.admission.queue_max} "
                    "callers are already waiting",
                )
            )
            return None
        self.waiting.add(relay)
        waiting = asyncio.ensure_future(self.admission.wait(waiter))
        try:
            if not await relay.until_caller_leaves(waiting):
                return None
            return waiting.result()
        except TimeoutError:
            self.metrics.refusals.labels(REFUSED_QUEUE_TIMEOUT).inc()
            await relay.refuse(
                _pool_full(
                    "no slot in time",
                    "no conversation slot freed up within "
                    f"{self.admission.queue_wait_seconds:g} s of waiting",
                )
            )
            return None
        finally:
            self.waiting.discard(relay)
            self._check_empty()

    async def _relay(self, relay: Relay, upstream: Upstream, target: Target) -> None:
        self.relays.add(relay)
        self._targets[relay] = target
        relay.on_drain = self._start_move
        try:
            ended = await relay.run(upstream)
            cut = cut_reason(ended, relay.backend_close)
            if cut is not None:
                self.metrics.cut.labels(cut).inc()
                self.cuts[cut] += 1
        finally:
            self.relays.discard(relay)
            self._targets.pop(relay, None)
            move = self._moves.pop(relay, None)
            if move is not None:
                move.cancel()
            # The pod that holds the conversation at its end (another one after a move).
            self.pool.released(relay.upstream.backend if relay.upstream else upstream.backend)
            self._check_empty()

    # --- moving conversations off draining pods ---------------------------------------------------
    def _start_move(self, relay: Relay) -> bool:
        """Move ``relay``'s conversation (once per pod it is on); True when the gateway
        takes care of its pod's drain, so its caller need not hear of it."""
        if self.mover is None:
            return False
        running = self._moves.get(relay)
        if running is not None:
            return True
        if relay.upstream is None or relay.upstream.backend.url in relay.tried_moving_from:
            return False
        relay.tried_moving_from.add(relay.upstream.backend.url)
        self._moves[relay] = asyncio.create_task(self._move(relay), name="move")
        return True

    async def _move(self, relay: Relay) -> None:
        assert self.mover is not None
        try:
            await self.mover.move(relay, self._targets[relay])
        except MoveFailed as exc:
            self.metrics.move_failures.labels(exc.reason).inc()
            log.warning("a conversation could not be moved (%s): %s", exc.reason, exc)
            await relay.pass_drain_notice()
        finally:
            self._moves.pop(relay, None)

    async def _hand_back(self, outcome: Upstream | Rejected) -> None:
        if isinstance(outcome, Upstream):
            await outcome.ws.close()
            self.pool.released(outcome.backend)

    def _rejected(self, rejected: Rejected) -> web.Response:
        self.metrics.refusals.labels(REFUSED_REJECTED).inc()
        return web.json_response(
            {
                "error": f"{rejected.detail}: check the path and query string "
                "(e.g. /ws/pcm?rate=8000|16000|24000)",
                "reason": REFUSED_REJECTED,
            },
            status=rejected.status,
        )

    # --- status ----------------------------------------------------------------------------------
    def status(self) -> GatewayStatus:
        return GatewayStatus(
            ready=self.ready(),
            draining=self.draining,
            drain_deadline_seconds=round(max(0.0, self.drain_deadline - time.monotonic()), 1)
            if self.draining
            else None,
            active=len(self.relays),
            queue=QueueView(
                length=self.admission.queued,
                max=self.config.queue_max,
                wait_seconds=self.config.queue_wait_seconds,
            ),
            backends=[
                BackendView(
                    url=b.url,
                    in_rotation=b.in_rotation,
                    draining=b.draining,
                    active=b.active,
                    capacity=b.capacity,
                    relaying=b.relaying,
                    last_error=b.last_error,
                )
                for b in sorted(self.pool.backends.values(), key=lambda b: b.url)
            ],
            moved=self.mover.moved if self.mover is not None else 0,
            cut=dict(self.cuts),
        )


def _unavailable(message: str, reason: str) -> web.Response:
    return web.json_response(
        {"error": message, "reason": reason}, status=503, headers={"Retry-After": "1"}
    )


def _pool_full(short: str, what: str) -> Notice:
    return Notice(
        CLOSE_TRY_AGAIN_LATER, f"pool full, {short}", f"the pool is full: {what}; try again later"
    )
