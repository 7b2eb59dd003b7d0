"""Work the operator starts without waiting for it: tasks it must stop at exit, and
Events, which are best effort (a failed one is logged, never fails a reconcile), must not
delay drains and replacements, and are aggregated (``events.py``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from voicefleet.operator.api_protocols import KubeApi
from voicefleet.operator.events import EventRecorder
from voicefleet.operator.kube import KubeError

log = logging.getLogger(__name__)


class Background:
    """The operator's background tasks, and its Event recorder."""

    def __init__(self, kube: KubeApi) -> None:
        self.recorder = EventRecorder(kube)
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # The coroutine is the task's own, not awaited inside a wrapper: a task cancelled
        # before it ran then closes it, where a wrapper left it "never awaited" (a
        # RuntimeWarning in the log each time a NotReady recheck was rescheduled).
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def event(
        self, involved: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Post an Event about ``involved`` in the background."""

        async def post() -> None:
            try:
                await self.recorder.record(involved, reason, message, warning=warning)
            except KubeError as exc:
                log.warning("event %s not recorded: %s", reason, exc)

        self.spawn(post())

    async def wait_idle(self) -> None:
        """Until every task started so far (and any they start) has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
