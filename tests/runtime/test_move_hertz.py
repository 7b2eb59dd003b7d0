"""Moving a Hertz-dev conversation (tiny model, CPU): its latent history replayed into another
backend's slot continues the conversation as its uninterrupted twin does.

Hertz-dev samples (tokens by Gumbel-max, latents from a Gaussian mixture); the comparison
draws the same random numbers on both sides by seeding before each step, with the twin and
the moved conversation in the same slot index of backends of the same capacity (each draw's
shape is the batch's). The target's other slots hold other conversations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from voicefleet.runtime.backends import get_loader
from voicefleet.runtime.backends.base import Sampling
from voicefleet.runtime.backends.hertz.backend import HertzBackend
from voicefleet.runtime.backends.slot_state import SlotState, SlotStateError
from voicefleet.runtime.config import RuntimeConfig

pytestmark = pytest.mark.runtime

SLOTS, SLOT = 3, 1
BEFORE, AFTER = 20, 12
CHUNK = 8
SEED = 9
# The replayed caches come from a 8-frame attention instead of 1-frame ones: fp32 rounding
# (~1e-6) only, which the sampled latents carry on but do not grow much in 12 frames.
TOLERANCE = 1e-3


def _backend() -> HertzBackend:
    config = RuntimeConfig(backend="hertz-tiny", max_sessions=SLOTS, max_session_seconds=10)
    backend = get_loader("hertz-tiny")(config, torch.device("cpu"))
    assert isinstance(backend, HertzBackend)
    with torch.no_grad():
        backend.start(SLOTS)
    return backend


def _audio(seed: int, steps: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((steps, SLOTS, 2000))).astype(np.float32)


def _step(backend: HertzBackend, frames: np.ndarray[Any, Any], seed: int) -> Any:
    torch.manual_seed(seed)
    with torch.no_grad():
        return backend.step(frames).pcm[SLOT].copy()


def test_a_moved_hertz_conversation_continues_as_its_twin() -> None:
    source, target = _backend(), _backend()
    mine, others = _audio(1, BEFORE + AFTER), _audio(2, BEFORE + AFTER)
    everyone = np.ones(SLOTS, dtype=bool)
    source.reset(list(range(SLOTS)), [Sampling()] * SLOTS)
    source.freeze(everyone)
    for step in range(BEFORE):
        _step(source, mine[step], SEED + step)
    state = SlotState.from_bytes(source.export_slot(SLOT).to_bytes())
    assert state.meta["steps"] == BEFORE

    busy = everyone.copy()
    busy[SLOT] = False
    target.reset([0, 2], [Sampling()] * 2)
    target.freeze(busy)
    with pytest.raises(SlotStateError, match="inconsistent"):
        target.import_begin(
            SLOT, SlotState(state.kind, state.model, {**state.meta, "position": 1}, state.arrays)
        )
    left = target.import_begin(SLOT, state)
    while left:
        left = target.import_step(SLOT, CHUNK)
        _step(target, others[0], 0)  # the other slots go on between chunks
    assert source.slots is not None and target.slots is not None
    for mine_kv, theirs_kv in zip(source.slots.backbone, target.slots.backbone, strict=True):
        end = int(source.slots.position[SLOT])
        gap = (mine_kv.k[SLOT, :, :end] - theirs_kv.k[SLOT, :, :end]).abs().max().item()
        assert gap <= TOLERANCE

    target.freeze(everyone)
    twin, moved = [], []
    for step in range(BEFORE, BEFORE + AFTER):
        frames = others[step].copy()
        frames[SLOT] = mine[step][SLOT]
        twin.append(_step(source, mine[step], SEED + step))
        moved.append(_step(target, frames, SEED + step))
    assert source.prompt is not None
    first = source.prompt.frames - 1 + BEFORE  # the row of the first frame after the move
    tokens = [
        backend.slots.fed_tokens[SLOT, first : first + AFTER].tolist()
        for backend in (source, target)
        if backend.slots is not None
    ]
    assert tokens[0] == tokens[1], "the next tokens"
    gap = float(np.abs(np.array(twin) - np.array(moved)).max())
    print(f"hertz: next {AFTER} frames' audio, max |diff| {gap:.3g}")
    assert gap <= TOLERANCE
