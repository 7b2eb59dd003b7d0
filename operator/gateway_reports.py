"""The pool's gateway replicas: each poll tells them the pool's runtime pods, and what they
answer (their status: conversations moved and cut) is kept for the pool's status.

Like the runtime polls, one push to every running replica the pool's last pass saw, all at
once with one timeout, before the pass takes the pool's lock. A replica that does not take
it keeps its last set (and its live conversations); the next poll tries again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence

from voicefleet.api.gateway import GatewayStatus
from voicefleet.api.status import GatewayPoolStatus
from voicefleet.operator.api_protocols import GatewayApi
from voicefleet.operator.builders import PoolRef, pool_token
from voicefleet.operator.gateway_client import GatewayCallError
from voicefleet.operator.pod_calls import base_url
from voicefleet.operator.scaling import PodView

log = logging.getLogger(__name__)


def backend_urls(runtime_pods: Sequence[PodView], port: int) -> list[str]:
    """Every runtime pod with an address, draining or being deleted too: a gateway keeps
    polling a pod its conversations are still on, and moves them when it drains."""
    return sorted(base_url(p.ip, port) for p in runtime_pods if p.ip)


class GatewayReports:
    def __init__(self, client: GatewayApi, key: bytes) -> None:
        self.client = client
        self.key = key
        # pool key -> the gateway pods its last pass saw
        self._seen: dict[str, list[PodView]] = {}
        # pool key -> pod name -> its answer to the last push (None: it did not take it)
        self._reports: dict[str, dict[str, GatewayStatus | None]] = {}

    async def push(self, pool: PoolRef, backends: Sequence[str]) -> None:
        running = [v for v in self._seen.get(pool.key, []) if v.running and not v.deleting]
        if not running:
            return
        token = pool_token(self.key, pool)
        reports = self._reports.setdefault(pool.key, {})

        async def one(view: PodView) -> None:
            assert view.ip is not None
            try:
                reports[view.name] = await self.client.push(view.ip, token, backends)
            except GatewayCallError as exc:
                log.debug("%s/%s: %s", pool.namespace, view.name, exc)
                reports[view.name] = None

        await asyncio.gather(*(one(v) for v in running))

    def seen(self, pool: PoolRef, views: Sequence[PodView]) -> None:
        self._seen[pool.key] = list(views)
        names = {v.name for v in views}
        reports = self._reports.setdefault(pool.key, {})
        for name in [n for n in reports if n not in names]:
            del reports[name]

    def summary(self, pool: PoolRef) -> GatewayPoolStatus:
        views = [v for v in self._seen.get(pool.key, []) if not v.deleting]
        answers = [r for r in self._reports.get(pool.key, {}).values() if r is not None]
        cut: collections.Counter[str] = collections.Counter()
        for answer in answers:
            cut.update(answer.cut)
        return GatewayPoolStatus(
            replicas=len(views),
            ready_replicas=sum(1 for v in views if v.ready and v.running),
            moved=sum(a.moved for a in answers),
            cut=dict(sorted(cut.items())),
        )

    def forget(self, pool_key: str) -> None:
        self._seen.pop(pool_key, None)
        self._reports.pop(pool_key, None)

    def pools(self) -> set[str]:
        return set(self._seen) | set(self._reports)
