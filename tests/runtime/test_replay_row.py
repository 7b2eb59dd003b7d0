"""The replay row (``moshi_replay``) shared by imports into different slots, on the tiny Moshi
model, greedy: two conversations imported at once take turns on it chunk by chunk and both
continue exactly as their uninterrupted twins; an import whose slot is given to a new
conversation midway never lands on that conversation.

Where CUDA is present (the GPU machine: ``pytest --noconftest`` this file there) the same tests
run the row's CUDA graphs, and one more checks that a graph writes the bytes the eager replay
writes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from voicefleet.runtime.backends import get_loader
from voicefleet.runtime.backends.base import Sampling
from voicefleet.runtime.backends.moshi_replay import ReplayRow
from voicefleet.runtime.backends.moshi_rows import row_tensors
from voicefleet.runtime.backends.moshi_step import MoshiBackend
from voicefleet.runtime.backends.slot_state import SlotState
from voicefleet.runtime.config import RuntimeConfig
from voicefleet.runtime.limits import IMPORT_CHUNK_STEPS

pytestmark = pytest.mark.runtime

STEPS = 40  # each conversation's length when it is moved
AFTER = 20  # steps compared after the move
CHUNK = 8  # 40 steps: five chunks each, interleaved
SLOTS = 4
Frames = np.ndarray[Any, np.dtype[np.float32]]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _backend(device: str = "cpu") -> MoshiBackend:
    config = RuntimeConfig(
        backend="tiny", max_sessions=SLOTS, max_session_seconds=20, seed=7, greedy=True
    )
    backend = get_loader("tiny")(config, torch.device(device))
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


@pytest.mark.parametrize("device", DEVICES)
def test_two_imports_take_turns_on_the_row_and_both_continue_as_their_twins(device: str) -> None:
    a, b = _audio(1), _audio(2)
    source = _backend(device)
    _start(source, [0, 1])
    for tick in range(STEPS):
        _run(source, {0: a, 1: b}, tick)
    states = {slot: SlotState.from_bytes(source.export_slot(slot).to_bytes()) for slot in (0, 1)}

    target = _backend(device)
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


@pytest.mark.parametrize("device", DEVICES)
def test_an_import_cut_short_never_lands_on_the_slots_next_conversation(device: str) -> None:
    a, fresh, b = _audio(1), _audio(4), _audio(5)
    source = _backend(device)
    _start(source, [0, 1])
    for tick in range(STEPS):
        _run(source, {0: a, 1: b}, tick)
    state_a = SlotState.from_bytes(source.export_slot(0).to_bytes())
    state_b = SlotState.from_bytes(source.export_slot(1).to_bytes())

    target, control = _backend(device), _backend(device)
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_graph_replay_writes_what_the_eager_replay_writes() -> None:
    """The same history replayed through the captured graphs and eagerly, with the same chunk
    lengths, gives the same keys, values and positions bit for bit: the graphs read and
    write the row's live tensors, not copies taken at capture."""
    source = _backend("cuda")
    _start(source, [0])
    audio = _audio(6)
    for tick in range(STEPS):
        _run(source, {0: audio}, tick)
    state = SlotState.from_bytes(source.export_slot(0).to_bytes())

    rows = []
    for graphs in (True, False):
        target = _backend("cuda")
        assert target._replay_row is not None and target._replay_row.chunks
        if not graphs:
            target._replay_row = ReplayRow(
                target.lm, target._forward_text, max_chunk=IMPORT_CHUNK_STEPS, graphs=False
            )
        left = target.import_begin(1, state)
        while left:
            # 40 steps as 32 + 8: the eager row takes the graphs' lengths.
            left = target.import_step(1, min(left, 32) if left >= 32 else 8)
        rows.append(
            [
                tensor.narrow(dim, 1, 1).clone()
                for tensor, dim in row_tensors(target.lm.transformer).values()
            ]
        )
    for index, (graphed, eager) in enumerate(zip(*rows, strict=True)):
        assert torch.equal(graphed, eager), f"state tensor {index} differs"
