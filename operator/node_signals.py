"""Node events in, reactions out: which pools must react at once to a node going away.

``nodes.NodeWatch`` judges the signals (pure); this part feeds it the node events, asks it
again when a NotReady grace period ends (no event comes then), keeps the gauges and the log
lines of mass outages, and for every node with a new signal has the pools with pods there
reconciled at once (no runtime poll first: the drain calls and replacements must go out
within a second). Which pools have pods on a node comes from kopf's index of pool pods by
node, so the reaction makes no API call before the pools' own passes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from voicefleet.operator import metrics
from voicefleet.operator.background import Background
from voicefleet.operator.interruption import Signal, SignalConfig
from voicefleet.operator.nodes import MassNotReady, NodeWatch

log = logging.getLogger(__name__)

# node -> the (namespace, pool) of each pool pod on it
PodsByNode = Mapping[str, Collection[tuple[str, str]]]
ReconcilePool = Callable[[str, str], Awaitable[object]]


class NodeSignals:
    """The node view and the reaction to it."""

    def __init__(
        self,
        config: SignalConfig,
        background: Background,
        pods_by_node: PodsByNode,
        reconcile_pool: ReconcilePool,
    ) -> None:
        self.config = config
        self.watch = NodeWatch(config)
        self.background = background
        self.pods_by_node = pods_by_node
        self.reconcile_pool = reconcile_pool
        self.closed = False
        self._recheck: asyncio.Task[None] | None = None

    def seed(self, bodies: list[dict[str, Any]]) -> None:
        """Every node at once, before any event is acted on (``NodeWatch.seed``)."""
        self.watch.seed(bodies, time.time())
        self._mass_changed(None)
        self._schedule_recheck()

    async def seen(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A Node changed: if it newly shows a signal (or is gone), react at once."""
        if self.closed:
            return
        started = time.monotonic()
        was = self.watch.mass
        new = self.watch.seen(event_type, body, time.time())
        self._mass_changed(was)
        self._schedule_recheck()
        await self._react(new, started)

    def close(self) -> None:
        self.closed = True
        if self._recheck is not None:
            self._recheck.cancel()

    async def _react(self, new: Mapping[str, list[Signal]], started: float) -> None:
        if not new:
            return
        for signals in new.values():
            for signal in signals:
                metrics.INTERRUPTIONS.labels(signal.kind).inc()
        pools = sorted({pool for node in new for pool in self.pods_by_node.get(node, ())})
        if not pools:
            return
        why = "; ".join(
            f"{node}: {', '.join(s.describe() for s in signals)}"
            for node, signals in sorted(new.items())
        )
        log.info("%s; reacting in %d pool(s)", why, len(pools))
        results = await asyncio.gather(
            *(self.reconcile_pool(ns, pool) for ns, pool in pools), return_exceptions=True
        )
        for (ns, pool), result in zip(pools, results, strict=True):
            if isinstance(result, BaseException):
                log.error("reacting to %s in %s/%s failed: %r", why, ns, pool, result)
        metrics.INTERRUPTION_SECONDS.observe(time.monotonic() - started)

    def _mass_changed(self, was: MassNotReady | None) -> None:
        metrics.NODES_NOT_READY.set(len(self.watch.not_ready_nodes()))
        now = self.watch.mass
        metrics.MASS_NOT_READY.set(1 if now is not None else 0)
        if bool(now) == bool(was):
            return
        if now is not None:
            log.warning("%s", now.describe(self.config.mass_not_ready_fraction))
        else:
            log.info("fewer nodes are NotReady now: NotReady nodes are judged one by one again")

    def _schedule_recheck(self) -> None:
        """Judge the nodes again when the next NotReady grace period ends; one pending
        check at a time."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        at = self.watch.next_check(time.time())
        if at is None or self.closed:
            return

        async def run() -> None:
            await asyncio.sleep(max(0.0, at - time.time()))
            self._recheck = None
            started = time.monotonic()
            was = self.watch.mass
            new = self.watch.recheck(time.time())
            self._mass_changed(was)
            self._schedule_recheck()
            await self._react(new, started)

        self._recheck = self.background.spawn(run())
