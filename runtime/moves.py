"""The engine thread's side of moving conversations: exports and imports asked for from the
event loop, done between two frames, each answered through a future.

An import is bounded work per frame: its prefill replays at most ``IMPORT_CHUNK_STEPS`` a
chunk, and a chunk is started only while the recent chunks' cost still fits before the frame's
share (``IMPORT_SHARE_OF_FRAME``) runs out, so the pod's other conversations keep their frame.
One chunk a pass always runs, so an import always progresses. The engine owns the slots; this
module only runs the backend's part and says which imports finished or failed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TypeVar

from voicefleet.runtime.backends.base import Backend
from voicefleet.runtime.backends.slot_state import SlotState, SlotStateError
from voicefleet.runtime.limits import CHUNK_COST_DECAY, IMPORT_CHUNK_STEPS

log = logging.getLogger(__name__)

T = TypeVar("T")


def settle(future: Future[T], result: T | None = None, error: BaseException | None = None) -> None:
    """Answer ``future`` unless its asker gave up on it (cancelled it: a timeout, a newer
    state, a release): the engine thread must never fail on that."""
    with contextlib.suppress(InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]


@dataclass
class ImportJob:
    """A state on its way into a claimed slot; ``ready`` resolves with the steps replayed
    once the slot can step, or with the :class:`SlotStateError` that refused it."""

    state: SlotState
    # The last few steps of a conversation already imported once (the switch): urgent.
    catch_up: bool = False
    ready: Future[int] = field(default_factory=Future)
    begun: bool = False
    left: int = 0
    replayed: int = 0


@dataclass
class ChunkCost:
    """What an import chunk costs on this pod: the longest recent one, decaying (a chunk's
    cost varies with its length and the device's load; guessing high only defers work)."""

    seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.seconds = max(seconds, self.seconds * CHUNK_COST_DECAY)


def run_imports(
    backend: Backend, jobs: list[tuple[int, ImportJob]], deadline: float, cost: ChunkCost
) -> tuple[list[int], list[int]]:
    """Advance ``jobs`` (slot, job) until ``deadline`` (``time.perf_counter``), at least one
    chunk in all; the slots (finished, failed). Futures are resolved by the caller."""
    finished: list[int] = []
    failed: list[int] = []
    first = True
    for slot, job in jobs:
        if job.ready.done():
            continue  # superseded by a newer state of the same conversation
        try:
            if not job.begun:
                job.left = backend.import_begin(slot, job.state)
                job.begun = True
            while job.left and (first or time.perf_counter() + cost.seconds < deadline):
                first = False
                started = time.perf_counter()
                left = backend.import_step(slot, IMPORT_CHUNK_STEPS)
                cost.add(time.perf_counter() - started)
                job.replayed += job.left - left
                job.left = left
        except SlotStateError as exc:
            log.warning("import into slot %d refused: %s", slot, exc)
            settle(job.ready, error=exc)
            failed.append(slot)
            continue
        if job.left == 0:
            finished.append(slot)
        if time.perf_counter() >= deadline:
            break
    return finished, failed
