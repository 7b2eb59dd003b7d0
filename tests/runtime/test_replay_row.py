"""The replay row (``moshi_replay``) shared by imports into different slots, on the tiny Moshi
model, greedy: two conversations imported at once take turns on it chunk by chunk and both
continue exactly as their uninterrupted twins; an import whose slot is given to a new
conversation midway never lands on that conversation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from voicefleet.runtime.backends import get_loader
from voicefleet.runtime.backends.base import Sampling
from voicefleet.runtime.backends.moshi_step import MoshiBackend
from voicefleet.runtime.backends.slot_state import SlotState
from voicefleet.runtime.config import RuntimeConfig

pytestmark = pytest.mark.runtime

STEPS = 40  # each conversation's length when it is moved
AFTER = 20  # steps compared after the move
CHUNK = 8  # 40 steps: five chunks each, interleaved
SLOTS = 4
Frames = np.ndarray[Any, np.dtype[np.float32]]


def _backend() -> MoshiBackend:
    config = RuntimeConfig(
        backend="tiny", max_sessions=SLOTS, max_session_seconds=20, seed=7, greedy=True
    )
    backend = get_loader("tiny")(config, torch.device("cpu"))
    assert isinstance(backend, MoshiBackend)
    backend.start(SLOTS)
    return backend


def _audio(seed: int, steps: int = STEPS + AFTER) -> Frames:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((steps, 1920))).astype(np.float32)


def _run(backend: MoshiBackend, audio: dict[int, Frames], tick: int) -> np.ndarray[Any, Any]:
    frames = np.zeros((SLOTS, 1920), dtype=np.float32)
    for slot, samples in audio.items():
        frames[slot] = samples[tick]
    backend.step(frames)
    return backend.last_tokens.copy()


def _start(backend: MoshiBackend, slots: list[int]) -> None:
    backend.reset(slots, [Sampling()] * len(slots))
    active = np.zeros(SLOTS, dtype=bool)
    active[slots] = True
    backend.freeze(active)


@pytest.fixture(scope="module", autouse=True)
def _no_grad() -> Any:
    with torch.no_grad():
        yield


def test_two_imports_take_turns_on_the_row_and_both_continue_as_their_twins() -> None:
    a, b = _audio(1), _audio(2)
    source = _backend()
    _start(source, [0, 1])
    for tick in range(STEPS):
        _run(source, {0: a, 1: b}, tick)
    states = {slot: SlotState.from_bytes(source.export_slot(slot).to_bytes()) for slot in (0, 1)}

    target = _backend()
    other = _audio(3, steps=4 * STEPS)
    _start(target, [0])
    # A into slot 2, B into slot 3, one chunk each in turn, the target stepping in between:
    # the row goes back and forth between the two slots.
    left = {2: target.import_begin(2, states[0]), 3: target.import_begin(3, states[1])}
    turns = []
    tick = 0
    while any(left.values()):
        for slot in (2, 3):
            if left[slot]:
                left[slot] = target.import_step(slot, CHUNK)
                turns.append(slot)
        _run(target, {0: other}, tick)
        tick += 1
    assert turns[:4] == [2, 3, 2, 3], turns

    active = np.zeros(SLOTS, dtype=bool)
    active[[0, 2, 3]] = True
    target.freeze(active)
    twins, moved = [], []
    for step in range(STEPS, STEPS + AFTER):
        twins.append(_run(source, {0: a, 1: b}, step)[[0, 1]])
        moved.append(_run(target, {0: other, 2: a, 3: b}, step)[[2, 3]])
    twin, after = np.array(twins), np.array(moved)
    assert (twin >= 0).all(), "the twins must be past the model's delay"
    np.testing.assert_array_equal(after, twin)


def test_an_import_cut_short_never_lands_on_the_slots_next_conversation() -> None:
    a, fresh, b = _audio(1), _audio(4), _audio(5)
    source = _backend()
    _start(source, [0, 1])
    for tick in range(STEPS):
        _run(source, {0: a, 1: b}, tick)
    state_a = SlotState.from_bytes(source.export_slot(0).to_bytes())
    state_b = SlotState.from_bytes(source.export_slot(1).to_bytes())

    target, control = _backend(), _backend()
    # A's import into slot 1 stops after one chunk (its caller left): the row holds A.
    target.import_begin(1, state_a)
    target.import_step(1, CHUNK)
    # Slot 1 goes to a new conversation, then B's import into slot 2 takes the row.
    for backend in (target, control):
        _start(backend, [1])
    left = target.import_begin(2, state_b)
    while left:
        left = target.import_step(2, CHUNK)
    expected = [_run(control, {1: fresh}, tick)[1] for tick in range(AFTER)]
    seen = [_run(target, {1: fresh}, tick)[1] for tick in range(AFTER)]
    np.testing.assert_array_equal(np.array(seen), np.array(expected))
