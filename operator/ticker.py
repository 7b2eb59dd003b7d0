"""A periodic reconcile per pool: one asyncio task per watched pool, started when the pool is
seen, cancelled the moment it is deleted.

Why not a ``kopf.timer``: kopf guards every object with a timer by a finalizer (it must stop
the timer before the object may go), so a pool deletion waited for the operator, up to
kopf's 60 s "still exiting" re-check, and hung for good while the operator was down (a
``helm uninstall`` hazard). These tasks need no finalizer: a deleted pool is gone at once,
and its task is cancelled when the watch reports it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Tick = Callable[[str], Awaitable[None]]


class Ticker:
    """Calls ``tick(key)`` every ``interval`` seconds per started key, one call at a time."""

    def __init__(self, interval: float, tick: Tick) -> None:
        self.interval = interval
        self.tick = tick
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def keys(self) -> set[str]:
        return set(self._tasks)

    def start(self, key: str) -> None:
        """Tick ``key`` from now on (nothing changes if it already ticks)."""
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(
                self._run(key), name=f"tick {key}"
            )

    def stop(self, key: str) -> None:
        """Stop ticking ``key`` at once, cancelling a tick in progress (the reconcile is
        idempotent: an interrupted one is finished by the next reconcile, if any)."""
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, key: str) -> None:
        # The first tick comes within one interval, at a random phase: pools created or
        # resumed together do not all poll their runtimes in the same instant.
        await asyncio.sleep(self.interval * random.uniform(0.5, 1.0))
        while True:
            try:
                await self.tick(key)
            except Exception:
                # A bug, not an API error (the tick handles those): keep ticking.
                log.exception("periodic reconcile of %s failed", key)
            await asyncio.sleep(self.interval)
