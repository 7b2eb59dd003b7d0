"""The server's shared state: the engine, the codec pool, live sessions by slot, admission,
drain and health. Everything here runs on the event loop, except :meth:`Hub.on_frame`, which
the engine thread calls once per tick and which hops onto the loop at once. What watches it
all is ``supervisor.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import math
import time
from dataclasses import dataclass

from voicefleet.api.runtime import (
    DrainNotice,
    FrameMs,
    GpuInfo,
    ModelInfo,
    RuntimeStatus,
    SessionCounts,
)
from voicefleet.runtime.arrivals import Arrivals
from voicefleet.runtime.backends import frame_of
from voicefleet.runtime.backends.base import Backend, Sampling
from voicefleet.runtime.budget import TokenBucket
from voicefleet.runtime.codec import CodecPool, CodecUnavailable
from voicefleet.runtime.config import RuntimeConfig
from voicefleet.runtime.drain import DrainState
from voicefleet.runtime.endings import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    DROP_CATCH_UP,
    END_DRAIN,
    END_ENGINE,
    END_SHUTDOWN,
)
from voicefleet.runtime.engine import BatchedEngine
from voicefleet.runtime.frame_stats import FrameStats
from voicefleet.runtime.gpu import Gpu
from voicefleet.runtime.limits import (
    CLOSE_TIMEOUT_SECONDS,
    SESSION_START_BURST,
    SESSION_STARTS_PER_SECOND,
)
from voicefleet.runtime.metrics import RuntimeMetrics
from voicefleet.runtime.server_info import ServerIdentity
from voicefleet.runtime.services import Services, SessionLimits
from voicefleet.runtime.session import Session
from voicefleet.runtime.slots import FrameOutput, SlotHandle

log = logging.getLogger(__name__)

REFUSED_FULL = "full"
REFUSED_DRAINING = "draining"
REFUSED_LOADING = "loading"
REFUSED_FAILED = "failed"
REFUSED_BUSY = "busy"
REFUSED_NO_ARRIVAL = "unknown_ticket"
# Seconds a refused caller is asked to wait: a slot frees up as soon as any call ends, and a
# load balancer should try another pod right away anyway.
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str
    status: int = 503


class Hub:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.gpu = Gpu()
        self.metrics = RuntimeMetrics(self.gpu.read)
        self.metrics.sessions_capacity.set(config.max_sessions)
        self.stats = FrameStats()
        self.codec = CodecPool(config.codec_workers)
        self.drain = DrainState()
        self.identity = ServerIdentity.of(config)
        self.engine: BatchedEngine | None = None
        self.backend: Backend | None = None
        self.load_seconds: float | None = None
        self.load_error: str | None = None
        # Set when a part that cannot be replaced failed: /healthz fails and the process exits.
        self.failure: str | None = None
        # Set while a replaceable part keeps failing (a codec crash loop): /healthz fails so
        # the kubelet replaces the pod, which serves on meanwhile.
        self.degraded: str | None = None
        self.sessions: dict[int, Session] = {}  # by slot
        self.arrivals = Arrivals()
        self._starts = TokenBucket(
            max(SESSION_START_BURST, config.max_sessions), SESSION_STARTS_PER_SECOND, 0.0
        )
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopped = asyncio.Event()

    # --- start-up ---------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.codec.start(loop)

    def engine_loaded(self, engine: BatchedEngine, seconds: float) -> None:
        self.backend = engine.backend
        self.engine = engine
        self.load_seconds = seconds
        self.metrics.model_load_seconds.set(seconds)

    def on_frame(self, outputs: list[FrameOutput]) -> None:
        """Engine thread: hand one tick's frames to the loop in one hop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._dispatch, outputs)

    def on_step(self, seconds: float, late: bool) -> None:
        """Engine thread: prometheus_client's metrics are thread-safe."""
        self.metrics.record_step(seconds, late)

    def on_catch_up(self, frames: int) -> None:
        """Engine thread: quiet input frames skipped to take backlogs down."""
        self.metrics.input_dropped.labels(DROP_CATCH_UP).inc(frames)

    def _dispatch(self, outputs: list[FrameOutput]) -> None:
        to_encode: dict[int, list[tuple[Session, FrameOutput]]] = {}
        for output in outputs:
            session = self.sessions.get(output.slot)
            # A frame for a slot's previous occupant is dropped silently.
            if session is None or session.handle.generation != output.generation:
                continue
            if session.wants_opus:
                worker = self.codec.worker_of(session.id)
                to_encode.setdefault(worker, []).append((session, output))
            else:
                session.push_frame(output)
        for worker, items in to_encode.items():
            batch = [
                (session.id, None if output.pcm is None else session.opus_pcm(output.pcm))
                for session, output in items
            ]
            encoding = self.codec.encode_batch(worker, batch)
            # Replies of one worker come back in the order asked, so each session's frames
            # stay in order.
            encoding.add_done_callback(functools.partial(self._encoded, items))

    def _encoded(
        self, items: list[tuple[Session, FrameOutput]], encoding: asyncio.Future[list[bytes]]
    ) -> None:
        if encoding.cancelled():
            return
        error = encoding.exception()
        if isinstance(error, CodecUnavailable):
            return  # the supervisor replaces the worker and ends its sessions
        if error is not None:
            log.error("Opus encoding failed for %d sessions: %s", len(items), error)
            return
        for (session, output), ogg in zip(items, encoding.result(), strict=True):
            session.push_frame(dataclasses.replace(output, ogg=ogg))

    # --- admission ---------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.engine is not None and self.engine.ready.is_set()

    def ready(self) -> bool:
        return (
            self.failure is None
            and self.loaded
            and not self.drain.draining
            and self.engine is not None
            and self.engine.free_slots > 0
        )

    def claim(self, sampling: Sampling | None) -> SlotHandle | Refusal:
        """A slot for a new caller, or why not (answered before the WebSocket upgrade)."""
        if self.failure is not None:
            refusal = Refusal(REFUSED_FAILED, "this server has failed; connect to another")
        elif self.drain.draining:
            refusal = Refusal(REFUSED_DRAINING, "this server is draining; connect to another")
        elif self.engine is None or not self.loaded:
            refusal = Refusal(REFUSED_LOADING, "the model is still loading")
        elif self.engine.free_slots == 0:
            refusal = Refusal(REFUSED_FULL, "no free session slot on this server")
        elif not self._starts.take(1.0, time.monotonic()):
            refusal = Refusal(REFUSED_BUSY, "too many new sessions at once; retry in a second")
        else:
            handle = self.engine.acquire(sampling)
            if handle is not None:
                return handle
            refusal = Refusal(REFUSED_FULL, "no free session slot on this server")
        self.metrics.sessions_refused.labels(refusal.reason).inc()
        return refusal

    def claim_arrival(self, ticket: str) -> tuple[SlotHandle, int] | Refusal:
        """The slot a moved-in conversation waits in, and its length in steps, for the socket
        that resumes it."""
        arrival = self.arrivals.take(ticket)
        if arrival is not None:
            return arrival.handle, arrival.steps
        refusal = Refusal(
            REFUSED_NO_ARRIVAL,
            "no imported conversation waits under this ticket (never imported, already "
            "resumed, or not resumed in time): import its state again",
            status=404,
        )
        self.metrics.sessions_refused.labels(refusal.reason).inc()
        return refusal

    def release_unclaimed_arrivals(self, now: float) -> None:
        for handle in self.arrivals.expired(now):
            log.warning("imported conversation in slot %d was never resumed", handle.slot)
            self.unclaim(handle)

    def unclaim(self, handle: SlotHandle) -> None:
        if self.engine is not None:
            self.engine.release(handle)

    def next_session_id(self) -> int:
        return next(self._ids)

    def services(self) -> Services:
        """What sessions may use of this server (only once the engine is loaded)."""
        assert self.engine is not None
        return Services(
            limits=SessionLimits.of(self.config),
            metrics=self.metrics,
            slots=self.engine,
            codec=self.codec,
            identity=self.identity,
        )

    def join(self, session: Session) -> None:
        self.sessions[session.handle.slot] = session
        self.metrics.sessions_started.labels(session.protocol).inc()
        self.metrics.sessions_active.set(len(self.sessions))
        if self.drain.draining:
            session.notify(self._drain_notice())

    def leave(self, session: Session) -> None:
        if self.sessions.get(session.handle.slot) is session:
            del self.sessions[session.handle.slot]
        self.unclaim(session.handle)
        self.metrics.sessions_ended.labels(session.end_reason or "unknown").inc()
        self.metrics.sessions_active.set(len(self.sessions))

    def end_all(self, code: int, reason: str, end_reason: str, error: str | None = None) -> None:
        for session in list(self.sessions.values()):
            session.end(code, reason, end_reason, error)

    # --- health -------------------------------------------------------------------------------
    def health(self) -> str | None:
        """Why /healthz fails, or None while the process can serve."""
        return self.load_error or self.failure or self.degraded

    def fail(self, why: str) -> None:
        """A part that cannot be replaced failed: tell every caller, then stop (exit 1)."""
        if self.failure is not None:
            return
        self.failure = why
        log.error("%s; ending %d sessions and exiting", why, len(self.sessions))
        self.end_all(
            CLOSE_INTERNAL_ERROR,
            "server failure",
            END_ENGINE,
            error=f"the model engine failed ({why}); please reconnect",
        )
        self.stopped.set()

    # --- drain --------------------------------------------------------------------------------
    def _drain_notice(self) -> dict[str, object]:
        return DrainNotice(
            deadline_seconds=math.ceil(self.drain.remaining()),
            reconnect=self.config.reconnect_url,
            reason=self.drain.reason,
        ).wire()

    def start_drain(self, deadline_seconds: float, reason: str, source: str) -> None:
        changed = self.drain.start(deadline_seconds, reason, source)
        self.metrics.draining.set(1)
        if changed:
            log.info(
                "draining (%s): %d sessions, deadline in %.0f s",
                reason or source,
                len(self.sessions),
                self.drain.remaining(),
            )
            notice = self._drain_notice()
            for session in list(self.sessions.values()):
                session.notify(notice)

    def check_drain(self, now: float) -> None:
        """Close what is left at the deadline; after SIGTERM, stop once nobody is left, or
        once every close had its time to go out (the supervisor aborts those that could not)."""
        if not self.drain.draining:
            return
        if self.drain.exit_when_empty and not self.sessions:
            self.stopped.set()
            return
        if self.drain.remaining() > 0:
            return
        self.end_all(CLOSE_GOING_AWAY, "drain", END_DRAIN)
        if self.drain.exit_when_empty and now > self.drain.deadline + 2 * CLOSE_TIMEOUT_SECONDS:
            self.stopped.set()

    def shutdown_sessions(self) -> None:
        self.end_all(CLOSE_GOING_AWAY, "shutdown", END_SHUTDOWN)

    async def sessions_gone(self, timeout: float) -> bool:
        """Wait until every session has left, at most ``timeout``; whether they all did."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return not self.sessions

    # --- status ---------------------------------------------------------------------------------
    def status(self) -> RuntimeStatus:
        p50, p95 = self.stats.percentiles()
        memory = self.gpu.read()
        gpu = (
            GpuInfo(available=False)
            if memory is None
            else GpuInfo(
                available=True,
                name=memory.name,
                memory_used_bytes=memory.used,
                memory_total_bytes=memory.total,
            )
        )
        backend = self.backend
        frame = backend.frame if backend else frame_of(self.config.backend)
        return RuntimeStatus(
            sessions=SessionCounts(active=len(self.sessions), capacity=self.config.max_sessions),
            draining=self.drain.draining,
            ready=self.ready(),
            frame_ms=FrameMs(p50=round(p50, 2), p95=round(p95, 2)),
            late_frames=self.stats.late_frames,
            model=ModelInfo(
                backend=self.config.backend,
                name=backend.name if backend else (self.config.weights or ""),
                variant=backend.variant if backend else self.config.variant,
                kv_cache_dtype=self.config.kv_cache_dtype,
                context_steps=backend.context_steps
                if backend
                else frame.context_steps(self.config.max_session_seconds),
                frame_seconds=frame.seconds,
                max_session_seconds=self.config.max_session_seconds,
                device=str(backend.device) if backend else self.config.device,
                loaded=self.loaded,
                load_seconds=self.load_seconds,
            ),
            gpu=gpu,
            drain_deadline_seconds=round(self.drain.remaining(), 1)
            if self.drain.draining
            else None,
        )
