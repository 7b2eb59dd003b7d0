"""A new Moshi conversation's silent first steps, done once and copied into each new slot.

Moshi's first step of a conversation reads only initial tokens (every stream is inside its
delay), and its audio output is "ungenerated" (the acoustic codebooks lag one step): it is the
same step for every conversation, and run with the caller's first frame it costs the caller a
whole frame of waiting. So the backend runs it once at start, on silence, in slot 0, and keeps
that slot's rows (:class:`Primer`): the LM's KV cache positions written, its offsets, LMGen's
token cache row, Mimi's streaming rows and the token history. Priming claimed slots copies
them into their rows on the GPU: no model step, and no moshi reset (a reset walks every
streaming module from Python, 7-10 ms at full size, and resetting then copying slot by slot
took 16-28 ms a pass, which made ticks late while many callers joined). The copies are one per
state tensor for all the slots of a pass, queued by the backend's next step while the device
runs it; a slot then joins at its caller's first frame, which is stepped straight into audio.

Every conversation starts from the same sampled step-0 tokens (text padding and one semantic
audio token, heard as the first 80 ms): with greedy decoding they were the same anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from moshi.modules.transformer import _MHAState, _TransformerState

from voicefleet.runtime.backends import moshi_move
from voicefleet.runtime.backends.kv_fp8 import FP8, Fp8RingCache
from voicefleet.runtime.backends.moshi_rows import RowField, row_fields

# (a per-slot field of the live batch, its positions dim or None)
_Part = tuple[RowField, int | None]


@dataclass
class Primer:
    steps: int
    history: np.ndarray[Any, Any]
    # Per per-slot field: its positions dim (KV caches: only the positions written are
    # kept) and slot 0's row of it.
    rows: list[tuple[RowField, int | None, torch.Tensor]]
    device: torch.device


def _parts(lm_gen: Any, mimi: Any) -> list[_Part]:
    """Every per-slot field a conversation's first steps write."""
    parts: list[_Part] = [(field, None) for field in row_fields(mimi).values()]
    state = lm_gen._streaming_state  # what moshi_move.lmgen_row exports of it
    parts.append((RowField(state, "cache", 0), None))
    parts.append((RowField(state, "offsets", 0), None))
    for module_state in lm_gen.lm_model.transformer.get_streaming_state().values():
        if isinstance(module_state, _MHAState) and module_state.kv_cache is not None:
            kv = module_state.kv_cache
            parts.append((RowField(kv, "cache", 1), 3))
            if isinstance(kv, Fp8RingCache):
                parts.append((RowField(kv, "scales", 1), 3))
            parts.append((RowField(kv, "end_offset", 0), None))
            parts.append((RowField(module_state, "offset", 0), None))
        elif isinstance(module_state, _TransformerState):
            parts.append((RowField(module_state, "offsets", 0), None))
    return parts


def _written(field: RowField, positions: int | None, steps: int) -> torch.Tensor:
    """The part of ``field`` (every slot) a conversation's first ``steps`` steps write; fp8
    caches as their bytes (index_copy_ has no fp8 kernel)."""
    tensor = field.tensor()
    if positions is not None:
        tensor = tensor.narrow(positions, 0, steps)
    return tensor.view(torch.uint8) if tensor.dtype == FP8 else tensor


def take(lm_gen: Any, mimi: Any, log: moshi_move.TokenLog, slot: int) -> Primer:
    """``slot``'s rows after its first steps (it must have run them alone since its reset)."""
    steps = int(log.steps[slot])
    rows = [
        (field, positions, _written(field, positions, steps).narrow(field.dim, slot, 1).clone())
        for field, positions in _parts(lm_gen, mimi)
    ]
    device = rows[0][2].device
    if any(row.device != device for _field, _positions, row in rows):
        raise ValueError("a conversation's state spans several devices: priming needs one")
    return Primer(steps=steps, history=log.tokens[slot, :steps].copy(), rows=rows, device=device)


def put_history(primer: Primer, log: moshi_move.TokenLog, slots: Sequence[int]) -> None:
    """The primed steps' tokens as ``slots``' history (host only)."""
    for slot in slots:
        log.tokens[slot, : primer.steps] = primer.history
        log.steps[slot] = primer.steps


def put_rows(primer: Primer, slots: Sequence[int]) -> None:
    """Copy ``primer`` into ``slots`` (frozen by the caller): one device copy per state
    tensor for all of them, queued without waiting for the device. Every per-slot tensor the
    first steps write is overwritten, so no reset is needed first; KV positions past the
    primed steps are masked by the cache's end offset, as after a reset."""
    index = torch.tensor(list(slots), dtype=torch.long)
    if primer.device.type == "cuda":
        # Page-locked, so the copy is queued and the host goes on (from pageable memory it
        # would wait for the step the device is running).
        index = index.pin_memory()
    index = index.to(primer.device, non_blocking=True)
    for field, positions, row in primer.rows:
        written = _written(field, positions, primer.steps)
        shape = list(row.shape)
        shape[field.dim] = len(slots)
        written.index_copy_(field.dim, index, row.expand(shape))
