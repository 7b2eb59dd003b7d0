"""The one place that watches every part of the runtime that can die or stall, and every
deadline a session must meet. A task on the event loop makes a pass every
``SUPERVISE_INTERVAL_SECONDS``; what it does:

1. The engine thread: failed, ended or without a heartbeat for ``ENGINE_STALL_SECONDS`` ->
   every caller gets an error and a close, /healthz fails, the process exits 1 (the engine's
   GPU state cannot be trusted after that, so it is not restarted in place).
2. Each codec worker: exited, or a request unanswered for ``CODEC_REPLY_TIMEOUT_SECONDS`` ->
   it is killed and replaced at once, and the sessions whose Ogg streams it held get an error
   and a close. Too many restarts in a window fail /healthz (a crash loop is the pod's
   problem, not one worker's).
3. The drain deadline (``Hub.check_drain``).
4. Each session's own deadlines (``Session.supervise``): its cap, the idle timeout, the read
   lag bound, and the close that did not go out in time (aborted).

If the event loop itself is stuck, none of this runs, but then /healthz does not answer
either, and the kubelet's liveness probe restarts the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from voicefleet.runtime.hub import Hub
from voicefleet.runtime.limits import (
    CODEC_RESTART_LIMIT,
    CODEC_RESTART_WINDOW_SECONDS,
    ENGINE_STALL_SECONDS,
    SUPERVISE_INTERVAL_SECONDS,
)

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._restarts: deque[float] = deque()
        self._poked = asyncio.Event()
        hub.codec.on_worker_exit = self._poked.set

    async def run(self) -> None:
        while True:
            self.sweep(time.monotonic())
            self._poked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), SUPERVISE_INTERVAL_SECONDS)

    def sweep(self, now: float) -> None:
        self._check_engine(now)
        self._check_codec(now)
        self.hub.check_drain(now)
        self.hub.release_unclaimed_arrivals(now)
        for session in list(self.hub.sessions.values()):
            session.supervise(now)

    def _check_engine(self, now: float) -> None:
        engine = self.hub.engine
        if engine is None:
            return  # still loading: a failed load is reported by the loader
        problem = engine.problem(now, ENGINE_STALL_SECONDS)
        if problem is not None:
            self.hub.fail(f"the engine {problem}")

    def _check_codec(self, now: float) -> None:
        codec = self.hub.codec
        for index, problem in codec.problems(now):
            log.error("codec worker %d %s: replacing it", index, problem)
            codec.restart(index)
            self.hub.metrics.codec_worker_restarts.inc()
            self._restarts.append(now)
            for session in list(self.hub.sessions.values()):
                if session.wants_opus and codec.worker_of(session.id) == index:
                    session.codec_failed(f"worker {index} {problem}")
        while self._restarts and now - self._restarts[0] > CODEC_RESTART_WINDOW_SECONDS:
            self._restarts.popleft()
        if len(self._restarts) > CODEC_RESTART_LIMIT:
            self.hub.degraded = (
                f"{len(self._restarts)} codec worker restarts in "
                f"{CODEC_RESTART_WINDOW_SECONDS:.0f} s"
            )
        else:
            self.hub.degraded = None
