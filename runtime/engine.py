"""The batched session engine: one backend, a fixed number of slots, and a frame clock that
steps every active slot together once per frame of the backend (80 ms for Moshi, 125 ms for
Hertz-dev).

Why a dedicated thread: a step is GPU work plus a device-to-host copy that blocks until the
GPU is done. On the asyncio loop it would stall every socket for tens of milliseconds;
here the loop keeps moving bytes while the GPU computes, and hands frames over through
thread-safe deques and one ``on_frame`` callback per tick.

Joining and leaving never make another session wait: a new session's slot is reset by the
backend (only that slot's state), and the backend freezes free slots, so the batch shape
stays fixed for the life of the process (``backends/base.py`` is the contract).

A claimed slot is first stepped at the tick after its caller's first frame of audio arrived,
with that frame: never before. Stepping it from the claim on (as this engine once did) ran it
on silence while the WebSocket upgrade and the protocol's handshake were still going, and
the frames it made were dropped (no session was registered yet) or queued behind the
handshake, so the caller heard its first audio a frame late or with the handshake's delay
added for the whole call.

Moshi's first step of a conversation is silent whatever the caller says (its acoustic
codebooks lag one step, and the LM's first step reads only initial tokens): the backend says
so (``silent_first_steps``). Run with the caller's first frame, such a step costs the caller a
whole frame of waiting. So a claimed slot is *primed* as soon as the engine thread sees it,
between ticks: the backend copies into it the state of a conversation past its silent steps
(``Backend.prime``: made once at start, on silence; a few device copies, no model step), and
the slot joins without a reset at its caller's first frame, which is then stepped straight
into audio. No tick is spent and no other conversation's frame is delayed.

A conversation moved in from another pod (:meth:`BatchedEngine.import_state`) claims a slot
that is loaded and prefilled between ticks (``moves.py``), then waits like any claimed slot
for its first input frame, and joins without the reset a new conversation gets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import torch

from voicefleet.runtime.backends.base import Backend, Pcm, Sampling, StepOutput
from voicefleet.runtime.backends.slot_state import SlotState, SlotStateError
from voicefleet.runtime.frame_stats import FrameStats
from voicefleet.runtime.limits import CATCH_UP_SILENCE_RMS, IMPORT_SHARE_OF_FRAME
from voicefleet.runtime.moves import ChunkCost, ImportJob, run_imports, settle
from voicefleet.runtime.slots import FrameOutput, SlotHandle

log = logging.getLogger(__name__)


FrameCallback = Callable[[list[FrameOutput]], None]
# Priming queues device copies for the next step (Backend.prime), well under a millisecond
# of this thread: more is worth a line.
PRIME_WARN_MS = 10.0


class BatchedEngine:
    """Owns the model from :meth:`start` on; every other method is safe from any thread."""

    def __init__(
        self,
        backend: Backend,
        capacity: int,
        *,
        on_frame: FrameCallback,
        stats: FrameStats,
        queue_seconds: float = 2.0,
        on_step: Callable[[float, bool], None] | None = None,
        on_catch_up: Callable[[int], None] | None = None,
    ) -> None:
        self.backend = backend
        self.frame = backend.frame
        self.capacity = capacity
        self._on_frame = on_frame
        self._on_step = on_step
        self._on_catch_up = on_catch_up
        self.stats = stats
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._free = list(range(capacity))
        self._generation = [0] * capacity
        # Claimed, waiting for the caller's first frame (frozen until then).
        self._pending: set[int] = set()
        # Claimed, to be primed (their silent first steps copied in) before they join.
        self._priming: set[int] = set()
        # Reset and made active at the next tick.
        self._joining: set[int] = set()
        self._leaving: set[int] = set()
        # Moved in and prefilled: joins without a reset.
        self._resumed: set[int] = set()
        self._imports: dict[int, ImportJob] = {}
        self._chunk_cost = ChunkCost()
        self._exports: deque[tuple[SlotHandle, Future[SlotState]]] = deque()
        self._active = np.zeros(capacity, dtype=bool)
        self._inputs: list[deque[Pcm]] = [
            deque(maxlen=self.frame.steps(queue_seconds)) for _ in range(capacity)
        ]
        self._sampling = [Sampling()] * capacity
        self._thread: threading.Thread | None = None
        self.silent_frames = 0
        # Quiet input frames skipped to take a backlog down (limits.CATCH_UP_SILENCE_RMS).
        self.caught_up_frames = 0
        self._last_late_log = 0.0
        # time.monotonic() of the clock loop's last pass: the supervisor's heartbeat.
        self.beat = time.monotonic()

    # --- called from the event loop ------------------------------------------------------
    def acquire(self, sampling: Sampling | None = None) -> SlotHandle | None:
        """Claim the lowest free slot, or None when full. The slot is reset and first stepped
        at the tick after its first input frame (:meth:`push_input`)."""
        with self._lock:
            if not self._free or not self.ready.is_set():
                return None
            slot = min(self._free)
            self._free.remove(slot)
            self._generation[slot] += 1
            self._inputs[slot].clear()
            # A slot given back since the last tick stays in _leaving: frozen until its new
            # caller's first frame, which resets it.
            self._pending.add(slot)
            if self.backend.silent_first_steps:
                self._priming.add(slot)
            self._sampling[slot] = sampling or Sampling()
            handle = SlotHandle(slot, self._generation[slot])
        if self.backend.silent_first_steps:
            self._wake.set()  # an idle clock primes it now, not at the first frame
        return handle

    def release(self, handle: SlotHandle) -> None:
        """Give the slot back at once; the next tick freezes its state (exec mask off).

        Free at once, not after the tick, so a caller who arrives right after another hung up
        is never refused for a slot that is only waiting for the clock."""
        with self._lock:
            if self._generation[handle.slot] != handle.generation:
                return
            self._generation[handle.slot] += 1
            self._inputs[handle.slot].clear()
            self._pending.discard(handle.slot)
            self._priming.discard(handle.slot)
            self._joining.discard(handle.slot)
            self._resumed.discard(handle.slot)
            job = self._imports.pop(handle.slot, None)
            if job is not None:
                job.ready.cancel()
            if self._active[handle.slot]:
                self._leaving.add(handle.slot)
            self._free.append(handle.slot)
        self._wake.set()

    def restart(self, handle: SlotHandle) -> None:
        """Start the slot's conversation over (Moshi's control message Restart): frozen until
        the next input frame, which the reset conversation starts with, as a join does."""
        with self._lock:
            if self._generation[handle.slot] == handle.generation:
                self._inputs[handle.slot].clear()
                self._joining.discard(handle.slot)
                self._resumed.discard(handle.slot)
                self._priming.discard(handle.slot)
                self._pending.add(handle.slot)
                if self._active[handle.slot]:
                    self._leaving.add(handle.slot)
        self._wake.set()

    def push_input(self, handle: SlotHandle, frame: Pcm) -> bool:
        """Queue one frame of the backend's; False when the queue was full and the oldest
        dropped. A frame for a slot's previous occupant (a decode that finished after its
        session ended) is dropped, so a new caller's first step is its own audio."""
        slot = handle.slot
        if self._generation[slot] != handle.generation:
            return True
        queue = self._inputs[slot]
        dropped = len(queue) == queue.maxlen
        queue.append(frame)
        if slot in self._pending:
            # An idle clock sleeps until told: the first frame starts it at once.
            self._wake.set()
        return not dropped

    def import_state(
        self, state: SlotState, into: SlotHandle | None = None
    ) -> tuple[SlotHandle, Future[int]] | None:
        """Claim the lowest free slot for a conversation moved in (None when full), load
        ``state`` into it and rebuild its model state between ticks; the future resolves once
        it can step (then it joins at its first input frame, as a claimed slot does).

        ``into``: a slot an earlier state of the same conversation was imported into and
        that has not stepped yet; only what the conversation did since is replayed (the
        catch-up at the switch). A state this backend cannot continue raises
        :class:`SlotStateError` before any slot is claimed."""
        self.backend.check_import(state)
        job = ImportJob(state, catch_up=into is not None)
        with self._lock:
            if into is None:
                if not self._free or not self.ready.is_set():
                    return None
                slot = min(self._free)
                self._free.remove(slot)
                self._generation[slot] += 1
                self._inputs[slot].clear()
                handle = SlotHandle(slot, self._generation[slot])
            else:
                handle = into
                slot = handle.slot
                waiting = slot in self._imports or (
                    slot in self._resumed and slot in self._pending and not self._inputs[slot]
                )
                if self._generation[slot] != handle.generation or not waiting:
                    raise SlotStateError(
                        f"slot {slot} holds no imported conversation waiting to start: "
                        "import the state into a free slot instead"
                    )
                self._pending.discard(slot)
                self._resumed.discard(slot)
                earlier = self._imports.pop(slot, None)
                if earlier is not None:
                    earlier.ready.cancel()
            self._imports[slot] = job
        self._wake.set()
        return handle, job.ready

    def export_state(self, handle: SlotHandle) -> Future[SlotState]:
        """The conversation in ``handle``'s slot, taken between two ticks."""
        future: Future[SlotState] = Future()
        with self._lock:
            self._exports.append((handle, future))
        self._wake.set()
        return future

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return self.capacity - len(self._free)

    @property
    def free_slots(self) -> int:
        with self._lock:
            return len(self._free) if self.ready.is_set() else 0

    # --- the engine thread -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="voicefleet-engine", daemon=True)
        self._thread.start()

    def problem(self, now: float, stall_seconds: float) -> str | None:
        """Why the engine can no longer serve (failed, thread gone, wedged), or None."""
        if self.failure is not None:
            return f"failed: {self.failure!r}"
        if self._thread is not None and not self._thread.is_alive():
            return "its thread ended"
        if self.ready.is_set() and now - self.beat > stall_seconds:
            return f"no step for {now - self.beat:.0f} s"
        return None

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            # Inference only, on this thread (grad mode is per thread).
            torch.set_grad_enabled(False)
            self.backend.start(self.capacity)
            self.beat = time.monotonic()
            self.ready.set()
            self._clock()
        except BaseException as exc:  # the server reports it on /healthz and exits
            log.exception("engine failed")
            self.failure = exc
            self.ready.clear()

    def _clock(self) -> None:
        next_tick: float | None = None
        while not self._stop.is_set():
            self.beat = time.monotonic()
            self._prime_claimed()
            with self._lock:
                idle = not (
                    self._active.any() or self._joining or self._leaving or self._starting()
                )
                moving = bool(self._imports or self._exports)
            if idle and moving:
                # No conversation to keep on time: move at a frame's share per pass anyway,
                # so the loop still looks at its other work between chunks.
                self._serve_moves(time.perf_counter() + self.frame.seconds * IMPORT_SHARE_OF_FRAME)
                next_tick = None
                continue
            if idle:
                # Nobody to serve: sleep until a session arrives, then restart the clock.
                self._wake.wait(0.5)
                self._wake.clear()
                next_tick = None
                continue
            now = time.perf_counter()
            if next_tick is None:
                next_tick = now
            elif now < next_tick:
                self._stop.wait(next_tick - now)
            started = time.perf_counter()
            outputs = self._tick()
            ended = time.perf_counter()
            scheduled = next_tick
            # Late: this frame's output came after its slot (one frame) was over, so the caller
            # hears a gap.
            late = ended > next_tick + self.frame.seconds
            # Behind: restart the clock from now instead of bursting to catch up.
            next_tick = max(next_tick + self.frame.seconds, ended)
            step_ms = (ended - started) * 1000.0
            if late:
                self._log_late(step_ms, (started - scheduled) * 1000.0)
            self.stats.record(step_ms, late)
            if self._on_step is not None:
                self._on_step(step_ms / 1000.0, late)
            if outputs:
                self._on_frame(outputs)
            if moving:
                share = self.frame.seconds * IMPORT_SHARE_OF_FRAME
                self._serve_moves(min(next_tick, time.perf_counter() + share))

    def _log_late(self, step_ms: float, start_lag_ms: float) -> None:
        """One line per late frame, at most one a second: whether the step itself was slow
        (GPU, batch too large) or it started late (host busy, GIL held elsewhere)."""
        now = time.monotonic()
        if now - self._last_late_log >= 1.0:
            self._last_late_log = now
            log.warning(
                "late frame: step %.1f ms, started %.1f ms behind schedule (%d late so far)",
                step_ms,
                start_lag_ms,
                self.stats.late_frames + 1,
            )

    def _serve_moves(self, deadline: float) -> None:
        """Exports, then imports, between two ticks (engine thread)."""
        with self._lock:
            exports = list(self._exports)
            self._exports.clear()
            generations = list(self._generation)
        for handle, future in exports:
            try:
                if generations[handle.slot] != handle.generation:
                    raise SlotStateError(f"the session in slot {handle.slot} has ended")
                settle(future, self.backend.export_slot(handle.slot))
            except SlotStateError as exc:
                settle(future, error=exc)
        with self._lock:
            # A catch-up first: its caller's audio is held until it is done; a first import
            # runs while the conversation is still served by its old pod.
            jobs = sorted(self._imports.items(), key=lambda item: not item[1].catch_up)
        finished, failed = run_imports(self.backend, jobs, deadline, self._chunk_cost)
        with self._lock:
            for slot in failed:
                if self._imports.get(slot) is dict(jobs)[slot]:
                    del self._imports[slot]
                    self._generation[slot] += 1
                    self._free.append(slot)
            for slot in finished:
                job = dict(jobs)[slot]
                if self._imports.get(slot) is job:
                    del self._imports[slot]
                    self._pending.add(slot)
                    self._resumed.add(slot)
                    settle(job.ready, job.replayed)

    def _starting(self) -> list[int]:
        """Claimed slots whose first frame has arrived (under the lock)."""
        return [slot for slot in self._pending if self._inputs[slot]]

    def _tick(self) -> list[FrameOutput]:
        frames = np.zeros((self.capacity, self.frame.samples), dtype=np.float32)
        with self._lock:
            for slot in self._starting():
                self._pending.discard(slot)
                self._joining.add(slot)
                # Its first frame came before it could be primed: a plain join, with a reset.
                self._priming.discard(slot)
            # Moved-in conversations join as they are: their state was imported, not reset.
            resumed = self._joining & self._resumed
            self._resumed -= resumed
            joining = sorted(self._joining - resumed)
            changed = bool(self._joining or self._leaving)
            for slot in self._leaving:
                self._active[slot] = False
            for slot in self._joining:
                self._active[slot] = True
            self._joining.clear()
            self._leaving.clear()
            active = self._active.copy()
            generations = list(self._generation)
            sampling = [self._sampling[slot] for slot in joining]
            skipped = 0
            for slot in np.flatnonzero(active):
                queue = self._inputs[slot]
                if queue:
                    skipped += _skip_quiet_backlog(queue)
                    frames[slot] = queue.popleft()
                else:
                    # No new input this frame: the slot hears silence, as on a quiet line.
                    self.silent_frames += 1
        if skipped:
            self.caught_up_frames += skipped
            if self._on_catch_up is not None:
                self._on_catch_up(skipped)
        if joining:
            self.backend.reset(joining, sampling)
        if changed:
            self.backend.freeze(active)
        step = self._step(frames)
        return [
            FrameOutput(
                slot=int(slot),
                generation=generations[slot],
                pcm=step.pcm[slot] if step.audible[slot] else None,
                text=step.text[slot],
            )
            for slot in np.flatnonzero(active)
        ]

    def _prime_claimed(self) -> None:
        """Prime the slots claimed since the last pass (engine thread, between ticks)."""
        with self._lock:
            claimed = [
                (slot, self._generation[slot], self._sampling[slot]) for slot in self._priming
            ]
            self._priming.clear()
        if not claimed:
            return
        started = time.perf_counter()
        # One call for all: the backend resets their rows together (one pass over its state).
        primed = self.backend.prime([c[0] for c in claimed], [c[2] for c in claimed])
        took_ms = (time.perf_counter() - started) * 1000.0
        if took_ms > PRIME_WARN_MS:
            log.warning("priming %d claimed slots took %.1f ms", len(claimed), took_ms)
        with self._lock:
            for slot, generation, _sampling in claimed:
                if primed and self._generation[slot] == generation and slot in self._pending:
                    self._resumed.add(slot)  # joins as it is at its first frame

    def _step(self, frames: Pcm) -> StepOutput:
        """One batched step of the backend (a test's fault injection wraps this)."""
        return self.backend.step(frames)


def _skip_quiet_backlog(queue: deque[Pcm]) -> int:
    """Drop quiet frames from the head of a slot's input while more than one waits; how many.
    The frame that is stepped is always the oldest left, so speech keeps its order."""
    skipped = 0
    while len(queue) > 1 and _rms(queue[0]) < CATCH_UP_SILENCE_RMS:
        queue.popleft()
        skipped += 1
    return skipped


def _rms(frame: Pcm) -> float:
    return float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
