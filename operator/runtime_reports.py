"""What each runtime pod last said of itself (``GET /v1/status``), per pool.

A poll asks every running pod of a pool at once (one timeout for all), before the pool's
pass takes its lock, so a slow pod never holds up a node reaction in the same pool. The pods
polled are those the pool's last pass saw; a new pod is polled from the next pass on. A
report is dropped with its pod, and all of a pool's with the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from voicefleet.api.runtime import RuntimeStatus
from voicefleet.operator.api_protocols import RuntimeApi
from voicefleet.operator.builders import PoolRef
from voicefleet.operator.runtime_client import RuntimeCallError
from voicefleet.operator.scaling import PodView

log = logging.getLogger(__name__)


class RuntimeReports:
    """The last report of every pod (None: it did not answer), by pool."""

    def __init__(self, runtime: RuntimeApi) -> None:
        self.runtime = runtime
        # pool key -> pod name -> report
        self._reports: dict[str, dict[str, RuntimeStatus | None]] = {}
        # pool key -> the pods its last pass saw (polled before the next one)
        self._seen: dict[str, list[PodView]] = {}

    async def poll(self, pool: PoolRef) -> None:
        """Ask every running pod the pool's last pass saw."""
        running = [v for v in self._seen.get(pool.key, []) if v.running and not v.deleting]
        reports = self._reports.setdefault(pool.key, {})

        async def one(view: PodView) -> None:
            assert view.ip is not None
            try:
                reports[view.name] = await self.runtime.status(view.ip)
            except RuntimeCallError as exc:
                log.debug("%s/%s: %s", pool.namespace, view.name, exc)
                reports[view.name] = None

        await asyncio.gather(*(one(v) for v in running))

    def seen(self, pool: PoolRef, views: Sequence[PodView]) -> list[PodView]:
        """Remember the pool's pods as its pass saw them (reports of pods no longer there
        are dropped); those pods with what their runtimes last reported."""
        self._seen[pool.key] = list(views)
        names = {v.name for v in views}
        reports = self._reports.setdefault(pool.key, {})
        for name in [n for n in reports if n not in names]:
            del reports[name]
        return [self._with_report(reports.get(v.name), v) for v in views]

    def views(self, pool: PoolRef) -> list[PodView]:
        """The runtime pods the pool's last pass saw."""
        return list(self._seen.get(pool.key, []))

    def forget(self, pool_key: str) -> None:
        self._reports.pop(pool_key, None)
        self._seen.pop(pool_key, None)

    def pools(self) -> set[str]:
        """Pools anything is kept for (for the tests' leak check)."""
        return set(self._reports) | set(self._seen)

    @staticmethod
    def _with_report(report: RuntimeStatus | None, view: PodView) -> PodView:
        if report is None or not view.running:
            return view
        return replace(
            view,
            sessions_active=report.sessions.active,
            runtime_loaded=report.model.loaded,
            runtime_draining=report.draining,
        )
