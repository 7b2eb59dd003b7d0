"""Moving a conversation through the engines' own paths (tiny Moshi, greedy, real frame
clocks): a live session's state is taken from the source engine between two of its ticks,
imported into a target engine while another conversation there keeps stepping, and once the
caller's audio arrives the moved conversation joins without a reset and says what the same
state says when continued by hand in a backend of its own (``test_move.py`` shows that
backend continuation equals the uninterrupted twin).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from voicefleet.runtime.backends import get_loader
from voicefleet.runtime.backends.base import Pcm
from voicefleet.runtime.backends.slot_state import SlotState, SlotStateError
from voicefleet.runtime.config import RuntimeConfig
from voicefleet.runtime.engine import BatchedEngine
from voicefleet.runtime.frame_stats import FrameStats
from voicefleet.runtime.slots import FrameOutput

pytestmark = pytest.mark.runtime

SPOKEN = 24  # frames the caller says on the source (the input queue holds 25)
AFTER = 12  # frames compared after the move
SOURCE_SLOTS, TARGET_SLOTS = 2, 3
WAIT_SECONDS = 120.0  # generous: a 2-core machine shared with other test runs
PCM_TOLERANCE = 1e-4  # batch shape may change fp32 rounding (test_move.py says why)


def _config(slots: int) -> RuntimeConfig:
    return RuntimeConfig(backend="tiny", max_sessions=slots, max_session_seconds=20, greedy=True)


class Frames:
    """What an engine's ``on_frame`` delivered, by slot, with a way to wait for more."""

    def __init__(self) -> None:
        self.by_slot: dict[int, list[FrameOutput]] = defaultdict(list)
        self._changed = threading.Condition()

    def __call__(self, outputs: list[FrameOutput]) -> None:
        with self._changed:
            for output in outputs:
                self.by_slot[output.slot].append(output)
            self._changed.notify_all()

    def wait(self, slot: int, count: int) -> list[FrameOutput]:
        with self._changed:
            done = self._changed.wait_for(
                lambda: len(self.by_slot[slot]) >= count, timeout=WAIT_SECONDS
            )
        assert done, f"slot {slot}: {len(self.by_slot[slot])} frames of {count}"
        return list(self.by_slot[slot])


def _engine(slots: int) -> tuple[BatchedEngine, Frames]:
    backend = get_loader("tiny")(_config(slots), torch.device("cpu"))
    frames = Frames()
    engine = BatchedEngine(backend, slots, on_frame=frames, stats=FrameStats())
    engine.start()
    assert engine.ready.wait(WAIT_SECONDS), engine.failure
    return engine, frames


def _audio(seed: int, steps: int) -> list[Pcm]:
    rng = np.random.default_rng(seed)
    return list((0.1 * rng.standard_normal((steps, 1920))).astype(np.float32))


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[BatchedEngine, Frames, BatchedEngine, Frames]]:
    source, source_frames = _engine(SOURCE_SLOTS)
    target, target_frames = _engine(TARGET_SLOTS)
    yield source, source_frames, target, target_frames
    source.stop()
    target.stop()


def _continue_by_hand(state: bytes, audio: list[Pcm]) -> list[tuple[str | None, Any]]:
    """The state continued in a backend of its own, shaped as the target's (so that moshi
    compiles nothing new while the engines' threads run): (text, pcm) per input frame."""
    backend = get_loader("tiny")(_config(TARGET_SLOTS), torch.device("cpu"))
    with torch.no_grad():
        backend.start(TARGET_SLOTS)
        left = backend.import_begin(0, SlotState.from_bytes(state))
        while left:
            left = backend.import_step(0, 1000)
        backend.freeze(np.eye(TARGET_SLOTS, dtype=bool)[0])
        out = []
        frames = np.zeros((TARGET_SLOTS, 1920), dtype=np.float32)
        for frame in audio:
            frames[0] = frame
            step = backend.step(frames)
            out.append((step.text[0], step.pcm[0] if step.audible[0] else None))
    return out


def test_a_live_session_moves_between_engines_and_continues_its_conversation(
    engines: tuple[BatchedEngine, Frames, BatchedEngine, Frames],
) -> None:
    source, source_frames, target, target_frames = engines
    caller = source.acquire()
    assert caller is not None
    for frame in _audio(1, SPOKEN):
        source.push_input(caller, frame)
    source_frames.wait(caller.slot, SPOKEN)
    state = source.export_state(caller).result(WAIT_SECONDS).to_bytes()
    source.release(caller)

    # Another conversation keeps the target's clock going throughout.
    other = target.acquire()
    assert other is not None
    for frame in _audio(2, 20):
        target.push_input(other, frame)
    target_frames.wait(other.slot, 1)
    claimed = target.import_state(SlotState.from_bytes(state))
    assert claimed is not None
    handle, ready = claimed
    assert handle.slot != other.slot
    assert target.free_slots == 1
    replayed = ready.result(WAIT_SECONDS)
    steps = SlotState.from_bytes(state).meta["steps"]
    assert isinstance(steps, int) and replayed == steps >= SPOKEN
    assert not target_frames.by_slot[handle.slot], "a slot being imported must not step"

    after = _audio(3, AFTER)
    for frame in after:
        target.push_input(handle, frame)
    moved = target_frames.wait(handle.slot, AFTER)[:AFTER]
    expected = _continue_by_hand(state, after)
    assert [frame.text for frame in moved] == [text for text, _ in expected]
    # Audible from the first frame: the model's start-up delay is long past (a reset would
    # have held the first frame back).
    assert all(frame.pcm is not None for frame in moved)
    for output, (_, pcm) in zip(moved, expected, strict=True):
        assert output.pcm is not None and pcm is not None
        np.testing.assert_allclose(output.pcm, pcm, atol=PCM_TOLERANCE)
    target.release(handle)
    target.release(other)


def test_a_bad_state_claims_no_slot_and_a_full_engine_takes_none(
    engines: tuple[BatchedEngine, Frames, BatchedEngine, Frames],
) -> None:
    source, _, target, _ = engines
    free = target.free_slots
    with pytest.raises(SlotStateError, match="another model"):
        target.import_state(
            SlotState(kind="moshi", model={"weights": "something else"}, meta={"steps": 1})
        )
    assert target.free_slots == free
    holders = [source.acquire() for _ in range(source.capacity)]
    assert all(holders)
    state = SlotState.from_bytes(_a_state(target))
    assert source.import_state(state) is None, "a full engine takes no import"
    for holder in holders:
        assert holder is not None
        source.release(holder)


def _a_state(engine: BatchedEngine) -> bytes:
    """A valid state of this model: a new session's, taken at once."""
    handle = engine.acquire()
    assert handle is not None
    engine.push_input(handle, _audio(4, 1)[0])
    try:
        return engine.export_state(handle).result(WAIT_SECONDS).to_bytes()
    finally:
        engine.release(handle)


def test_an_abandoned_export_or_import_leaves_the_engine_serving(
    engines: tuple[BatchedEngine, Frames, BatchedEngine, Frames],
) -> None:
    """A gateway that gives up (a timeout cancels the future it waits on) must not take the
    engine thread down when the answer comes, nor keep the slot."""
    source, _, target, _ = engines
    state = SlotState.from_bytes(_a_state(source))
    handle = source.acquire()
    assert handle is not None
    source.export_state(handle).cancel()
    claimed = target.import_state(state)
    assert claimed is not None
    claimed[1].cancel()
    target.release(claimed[0])
    # Both engines still answer, and the slot came back.
    assert isinstance(source.export_state(handle).result(WAIT_SECONDS), SlotState)
    source.release(handle)
    assert source.failure is None and target.failure is None
    assert target.free_slots == target.capacity
