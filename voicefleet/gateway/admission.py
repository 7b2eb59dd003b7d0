"""Admission: which backend takes a new conversation, and the bounded FIFO queue of callers
waiting while the whole pool is full.

A new caller tries the backends at once, best first (``BackendPool.candidates``), unless
callers are already waiting: then it queues behind them, so nobody is overtaken. A backend
that refuses is marked (``BackendPool.refused``) and the next one is tried at once.

One dispatcher serves the queue in order. It wakes whenever a slot may have freed (a relayed
conversation ended, a poll or re-poll found room, a caller joined the queue), offers the head
caller to the backends, and hands it the upstream socket. When every backend refuses, the
head stays at the head and the dispatcher sleeps until the next such event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from voicefleet.gateway.backends import Backend, BackendPool
from voicefleet.gateway.metrics import GatewayMetrics
from voicefleet.gateway.upstream import BackendRefused, Rejected, Target, Upstream

Connect = Callable[[Backend, Target], Awaitable[Upstream | BackendRefused | Rejected]]


@dataclass
class Waiter:
    target: Target
    since: float
    granted: asyncio.Future[Upstream | Rejected] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class QueueFull(Exception):
    """The queue is at its bound."""


class Admission:
    def __init__(
        self,
        pool: BackendPool,
        connect: Connect,
        metrics: GatewayMetrics,
        *,
        queue_max: int,
        queue_wait_seconds: float,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.queue_max = queue_max
        self.queue_wait_seconds = queue_wait_seconds
        self._connect = connect
        self._queue: deque[Waiter] = deque()
        self._wake = asyncio.Event()
        pool.on_slot = self._wake.set

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def admit_now(self, target: Target) -> Upstream | Rejected | None:
        """A backend's socket for a new caller, a request no backend would take, or None:
        wait in the queue (the pool is full, or others are waiting already)."""
        if self._queue:
            return None
        outcome = await self._offer(target)
        if isinstance(outcome, Upstream):
            self.metrics.queue_wait.observe(0.0)
        return outcome

    def enqueue(self, target: Target) -> Waiter:
        if len(self._queue) >= self.queue_max:
            raise QueueFull
        waiter = Waiter(target, time.monotonic())
        self._queue.append(waiter)
        self.metrics.queue_length.set(len(self._queue))
        self._wake.set()
        return waiter

    async def wait(self, waiter: Waiter) -> Upstream | Rejected:
        """The waiter's socket once a slot is found; TimeoutError after the wait's bound.
        Cancelling it (the caller hung up) takes it out of the queue."""
        try:
            return await asyncio.wait_for(waiter.granted, self.queue_wait_seconds)
        finally:
            self._leave(waiter)

    def _leave(self, waiter: Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(waiter)
        self.metrics.queue_length.set(len(self._queue))

    async def _offer(self, target: Target) -> Upstream | Rejected | None:
        """Try the backends best first; None when every one refused."""
        for backend in self.pool.candidates():
            # Counted as taken before the upgrade, so callers arriving meanwhile are offered
            # to the next backend instead of all to this one.
            backend.active += 1
            try:
                outcome = await self._connect(backend, target)
            finally:
                backend.active -= 1
            if isinstance(outcome, BackendRefused):
                self.pool.refused(backend, outcome.reason, outcome.detail)
                continue
            if isinstance(outcome, Upstream):
                self.pool.admitted(backend)
            return outcome
        return None

    async def run(self) -> None:
        """The dispatcher: serves the queue in order for as long as the gateway runs."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self.pool.candidates():
                waiter = self._queue[0]
                outcome = await self._offer(waiter.target)
                if outcome is None:
                    break  # every backend refused: wait for the next freed slot
                if waiter.granted.done():
                    # It gave up (timed out, hung up) while the upgrade was under way.
                    if isinstance(outcome, Upstream):
                        await _hand_back(outcome, self.pool)
                    continue
                self._leave(waiter)
                self.metrics.queue_wait.observe(time.monotonic() - waiter.since)
                waiter.granted.set_result(outcome)


async def _hand_back(upstream: Upstream, pool: BackendPool) -> None:
    """Close a socket nobody will use; its slot goes back to the pool."""
    await upstream.ws.close()
    pool.released(upstream.backend)
