"""Moving a live conversation to another slot of another backend instance (another pod), on
the tiny Moshi model, greedy (argmax) so the same input always gives the same conversation.

Conversation A runs ``FIRST`` steps in slot 1 of a 3-slot source, beside two others. Its
state is exported, sent through bytes, and imported into slot 2 of a 4-slot target whose
other slots are busy with other conversations; the import's prefill runs in chunks between
the target's steps. The source serves A on to ``BEFORE`` steps, and A's newer state is
imported into the same slot, which replays only the steps in between (the catch-up at the
switch). Then the source (A's uninterrupted twin) and the target get A's same next
``AFTER`` frames. A control target runs the same other conversations with no import, so
any change the import makes to them shows. Refused states are tried on the target first,
while its other slots step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from voicefleet.runtime.backends import get_loader
from voicefleet.runtime.backends.base import Sampling
from voicefleet.runtime.backends.moshi_move import HISTORY, model_identity
from voicefleet.runtime.backends.moshi_step import MoshiBackend
from voicefleet.runtime.backends.slot_state import SlotState, SlotStateError
from voicefleet.runtime.config import RuntimeConfig

pytestmark = pytest.mark.runtime

FIRST = 40  # steps A runs before its first export
BEFORE = 60  # steps A runs before the switch
AFTER = 50  # steps compared after it
CHUNK = 16  # replayed steps per chunk: 40 steps take 3 chunks, the catch-up of 20 two
SOURCE_SLOTS, SOURCE_SLOT = 3, 1
TARGET_SLOTS, TARGET_SLOT = 4, 2
# Text logits of the twin and the moved conversation may differ by floating-point rounding
# only: the moved slot's KV cache was computed by a batch-1, 16-step forward instead of
# 3-row, 1-step ones, and fp32 matrix products may sum in another order for another shape
# (about 1e-7 relative per operation; the tiny logits are of order 1 after 2 layers). A
# thousand times that is still far below what a lost context costs (checked below).
LOGIT_TOLERANCE = 1e-4
TEXT_TEMPERATURE = 0.5


def _backend(slots: int, seed: int = 42_424_242) -> MoshiBackend:
    config = RuntimeConfig(
        backend="tiny", max_sessions=slots, max_session_seconds=20, seed=seed, greedy=True
    )
    backend = get_loader("tiny")(config, torch.device("cpu"))
    assert isinstance(backend, MoshiBackend)
    with torch.no_grad():
        backend.start(slots)
    return backend


def _audio(seed: int, steps: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((steps, 1920))).astype(np.float32)


def _record_text_logits(backend: MoshiBackend) -> list[Tensor]:
    """Every step's text logits (batch rows), as LMGen samples them."""
    seen: list[Tensor] = []
    scale = backend._lm_gen.on_text_logits_hook

    def hook(logits: Tensor) -> None:
        scale(logits)
        seen.append(logits[:, 0, 0].float().clone())

    backend._lm_gen.on_text_logits_hook = hook
    return seen


def _everything(backend: MoshiBackend) -> list[Tensor]:
    """Copies of every tensor of every streaming state the backend holds (all rows)."""
    modules = [*backend.mimi.modules(), *backend._lm_gen.modules()]
    found: list[Tensor] = []
    for module in modules:
        _collect(getattr(module, "_streaming_state", None), found, 0)
    return found


def _collect(value: Any, found: list[Tensor], depth: int) -> None:
    if isinstance(value, Tensor):
        found.append(value.clone())
    elif depth < 4 and dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            _collect(getattr(value, item.name), found, depth + 1)
    elif depth < 4 and hasattr(value, "cache") and hasattr(value, "end_offset"):
        _collect(value.cache, found, depth + 1)
        _collect(value.end_offset, found, depth + 1)


def _kv_rows(backend: MoshiBackend, slot: int, steps: int) -> list[Tensor]:
    """The LM transformer's keys and values of ``slot``, positions ``0..steps-1``."""
    return [
        layer.self_attn._streaming_state.kv_cache.cache[:, slot, :, :steps].clone()
        for layer in backend.lm.transformer.layers
    ]


def _refusals(target: MoshiBackend, good: bytes) -> dict[str, str]:
    """Bad states offered to the target's slot: the error each gives."""
    state = SlotState.from_bytes(good)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x40
    other_weights = get_loader("tiny")(
        RuntimeConfig(backend="tiny", seed=7, max_session_seconds=20), torch.device("cpu")
    )
    assert isinstance(other_weights, MoshiBackend)
    tampered = {
        "corrupt": bytes(flipped),
        "truncated": good[: len(good) - 100],
        "other weights": dataclasses.replace(
            state, model=model_identity(other_weights.lm, other_weights.mimi, "fp32")
        ).to_bytes(),
        "other shape": dataclasses.replace(
            state, arrays={**state.arrays, HISTORY: state.arrays[HISTORY][:, :16]}
        ).to_bytes(),
        "too long": dataclasses.replace(
            state, meta={**state.meta, "steps": 10_000, "lmgen_offset": 10_000}
        ).to_bytes(),
        "inconsistent": dataclasses.replace(
            state, meta={**state.meta, "lmgen_offset": FIRST + 1}
        ).to_bytes(),
    }
    errors: dict[str, str] = {}
    for name, data in tampered.items():
        before = _everything(target)
        with pytest.raises(SlotStateError) as caught:
            target.import_begin(TARGET_SLOT, SlotState.from_bytes(data))
        after = _everything(target)
        assert len(before) == len(after)
        for index, (old, new) in enumerate(zip(before, after, strict=True)):
            assert torch.equal(old, new), f"refused state {name!r} changed state {index}"
        errors[name] = str(caught.value)
    return errors


@dataclass
class Moved:
    twin_tokens: list[np.ndarray[Any, Any]] = field(default_factory=list)
    moved_tokens: list[np.ndarray[Any, Any]] = field(default_factory=list)
    twin_logits: list[Tensor] = field(default_factory=list)
    moved_logits: list[Tensor] = field(default_factory=list)
    fresh_logits: list[Tensor] = field(default_factory=list)
    source_kv: list[Tensor] = field(default_factory=list)
    target_kv: list[Tensor] = field(default_factory=list)
    state_bytes: int = 0
    chunks: int = 0
    caught_up: int = 0
    target_outputs: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = field(
        default_factory=list
    )
    control_outputs: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = field(
        default_factory=list
    )
    refusals: dict[str, str] = field(default_factory=dict)


def _step(backend: MoshiBackend, frames: np.ndarray[Any, Any]) -> tuple[Any, Any]:
    out = backend.step(frames)
    return backend.last_tokens.copy(), out.pcm.copy()


def _fresh_conversation(backend: MoshiBackend, audio: np.ndarray[Any, Any]) -> list[Tensor]:
    """A new conversation in the target slot given A's next input: what forgetting A's
    context looks like (its text logits)."""
    backend.reset([TARGET_SLOT], [Sampling(text_temperature=TEXT_TEMPERATURE)])
    backend.freeze(np.ones(TARGET_SLOTS, dtype=bool))
    logits = _record_text_logits(backend)
    for step in range(AFTER):
        frames = np.zeros((TARGET_SLOTS, 1920), dtype=np.float32)
        frames[TARGET_SLOT] = audio[step]
        backend.step(frames)
    return logits


@pytest.fixture(scope="module")
def moved() -> Moved:
    torch.set_grad_enabled(False)
    result = Moved()
    source, target, control = _backend(SOURCE_SLOTS), _backend(TARGET_SLOTS), _backend(TARGET_SLOTS)
    conversation = _audio(1, BEFORE + AFTER)
    others = {slot: _audio(100 + slot, BEFORE + AFTER) for slot in range(TARGET_SLOTS)}

    # The source: A in slot 1 beside two other conversations.
    source.reset(list(range(SOURCE_SLOTS)), [Sampling(text_temperature=TEXT_TEMPERATURE)] * 3)
    source.freeze(np.ones(SOURCE_SLOTS, dtype=bool))
    frames = np.stack([others[0][:BEFORE], conversation[:BEFORE], others[2][:BEFORE]], axis=1)
    for tick in range(FIRST):
        source.step(frames[tick])
    first = source.export_slot(SOURCE_SLOT).to_bytes()

    # The target and its control: three other conversations, the target slot free.
    busy = np.array([slot != TARGET_SLOT for slot in range(TARGET_SLOTS)])
    for backend in (target, control):
        backend.reset([int(s) for s in np.flatnonzero(busy)], [Sampling()] * 3)
        backend.freeze(busy)
    ticks = iter(range(BEFORE + AFTER))

    def other_frames() -> np.ndarray[Any, Any]:
        tick = next(ticks)
        frames = np.zeros((TARGET_SLOTS, 1920), dtype=np.float32)
        for slot in np.flatnonzero(busy):
            frames[slot] = others[int(slot)][tick]
        return frames

    def both() -> None:
        frames = other_frames()
        result.target_outputs.append(_step(target, frames))
        result.control_outputs.append(_step(control, frames))

    def replay(state: bytes) -> int:
        """Import ``state`` into the target slot in chunks, the target stepping between."""
        left = steps = target.import_begin(TARGET_SLOT, SlotState.from_bytes(state))
        while left:
            left = target.import_step(TARGET_SLOT, CHUNK)
            result.chunks += 1
            both()
        return steps

    both()
    result.refusals = _refusals(target, first)
    both()
    replay(first)
    # The old pod serves on; at the switch only what A did since is replayed.
    for tick in range(FIRST, BEFORE):
        source.step(frames[tick])
    latest = source.export_slot(SOURCE_SLOT).to_bytes()
    result.state_bytes = len(latest)
    result.source_kv = _kv_rows(source, SOURCE_SLOT, BEFORE)
    result.caught_up = replay(latest)
    result.target_kv = _kv_rows(target, TARGET_SLOT, BEFORE)

    # The switch: the same next input to the twin and the moved conversation.
    target.freeze(np.ones(TARGET_SLOTS, dtype=bool))
    result.twin_logits = _record_text_logits(source)
    result.moved_logits = _record_text_logits(target)
    for step in range(AFTER):
        frames = np.stack(
            [others[0][BEFORE + step], conversation[BEFORE + step], others[2][BEFORE + step]]
        )
        result.twin_tokens.append(_step(source, frames)[0][SOURCE_SLOT])
        target_frames = other_frames()
        target_frames[TARGET_SLOT] = conversation[BEFORE + step]
        result.moved_tokens.append(_step(target, target_frames)[0][TARGET_SLOT])

    result.fresh_logits = _fresh_conversation(control, conversation[BEFORE:])
    return result


def test_a_moved_conversation_continues_exactly_as_its_uninterrupted_twin(moved: Moved) -> None:
    twin = np.array(moved.twin_tokens)
    after_move = np.array(moved.moved_tokens)
    assert (twin >= 0).all(), "the twin must be past the model's delay"
    np.testing.assert_array_equal(after_move[:, 0], twin[:, 0], err_msg="next 50 text tokens")
    np.testing.assert_array_equal(after_move[:, 1:], twin[:, 1:], err_msg="next 50 audio frames")
    twin_logits = torch.stack([rows[SOURCE_SLOT] for rows in moved.twin_logits])
    moved_logits = torch.stack([rows[TARGET_SLOT] for rows in moved.moved_logits])
    fresh_logits = torch.stack([rows[TARGET_SLOT] for rows in moved.fresh_logits])
    gap = (moved_logits - twin_logits).abs().max().item()
    forgotten = (fresh_logits - twin_logits).abs().max().item()
    print(f"text logits: moved vs twin max |diff| {gap:.3g}; fresh vs twin {forgotten:.3g}")
    assert gap <= LOGIT_TOLERANCE
    # The comparison can fail: without the 60 steps of context the logits are far apart.
    assert forgotten > 100 * LOGIT_TOLERANCE


def test_the_prefill_rebuilds_the_slots_kv_cache(moved: Moved) -> None:
    for layer, (source, target) in enumerate(zip(moved.source_kv, moved.target_kv, strict=True)):
        assert source.abs().max() > 0, f"layer {layer}: the source cache holds nothing"
        gap = (source - target).abs().max().item()
        assert gap <= LOGIT_TOLERANCE, f"layer {layer}: keys/values differ by {gap}"


def test_the_import_runs_in_chunks_and_the_switch_replays_only_the_rest(moved: Moved) -> None:
    assert moved.caught_up == BEFORE - FIRST
    assert moved.chunks == -(-FIRST // CHUNK) + -(-(BEFORE - FIRST) // CHUNK)
    others = [slot for slot in range(TARGET_SLOTS) if slot != TARGET_SLOT]
    # Every target step from before the refused imports to the end of the prefill.
    steps = 2 + moved.chunks
    assert len(moved.target_outputs) == len(moved.control_outputs) == steps
    for tick, ((tokens, pcm), (want_tokens, want_pcm)) in enumerate(
        zip(moved.target_outputs, moved.control_outputs, strict=True)
    ):
        np.testing.assert_array_equal(tokens[others], want_tokens[others], err_msg=f"tick {tick}")
        np.testing.assert_array_equal(pcm[others], want_pcm[others], err_msg=f"tick {tick}")


def test_a_bad_state_is_refused_with_its_reason_and_changes_nothing(moved: Moved) -> None:
    reasons = {
        "corrupt": "does not match its digest",
        "truncated": "does not match its digest",
        "other weights": "made by another model (weights",
        "other shape": f"lm/history is int16[{FIRST}, 16], this model needs int16[{FIRST}, 17]",
        "too long": "more than this pod's context of 250 steps",
        "inconsistent": f"LMGen offset {FIRST + 1} for {FIRST} steps",
    }
    for name, reason in reasons.items():
        assert reason in moved.refusals[name], (name, moved.refusals[name])


def test_the_state_is_small(moved: Moved) -> None:
    print(f"state after {BEFORE} steps: {moved.state_bytes} bytes")
    # 60 steps x 17 int16 tokens is 2 KiB; the rest is the tiny Mimi's rows (57 KiB).
    assert moved.state_bytes < 80_000
