"""A new Moshi conversation's silent first steps, done once and copied into each new slot.

Moshi's first step of a conversation reads only initial tokens (every stream is inside its
delay), and its audio output is "ungenerated" (the acoustic codebooks lag one step): it is the
same step for every conversation, and run with the caller's first frame it costs the caller a
whole frame of waiting. So the backend runs it once at start, on silence, in slot 0, and keeps
that slot's rows (:class:`Primer`): the LM's KV cache positions written, its offsets, LMGen's
token cache row, Mimi's streaming rows and the token history. Priming a claimed slot copies
them into its rows on the GPU (no model step; well under a millisecond), and the slot then
joins without a reset at its caller's first frame, which is stepped straight into audio.

Every conversation starts from the same sampled step-0 tokens (text padding and one semantic
audio token, heard as the first 80 ms): with greedy decoding they were the same anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from moshi.modules.transformer import _MHAState, _TransformerState

from voicefleet.runtime.backends import moshi_move
from voicefleet.runtime.backends.kv_fp8 import Fp8RingCache
from voicefleet.runtime.backends.moshi_rows import row_tensors

# (tensor of the live batch, batch dim, positions dim or None) -> what to copy into a row
_Part = tuple[torch.Tensor, int, int | None]


@dataclass
class Primer:
    steps: int
    history: np.ndarray[Any, Any]
    # Per live tensor path: its batch dim, its positions dim (KV caches: only the written
    # positions are kept), and slot 0's row of it.
    rows: dict[str, tuple[int, int | None, torch.Tensor]]


def _parts(lm_gen: Any, mimi: Any) -> dict[str, _Part]:
    """Every per-slot tensor a conversation's first steps write, by a stable path."""
    parts: dict[str, _Part] = {
        f"mimi/{name}": (tensor, dim, None) for name, (tensor, dim) in row_tensors(mimi).items()
    }
    state = lm_gen._streaming_state  # what moshi_move.lmgen_row exports of it
    parts["lmgen/cache"] = (state.cache, 0, None)
    parts["lmgen/offsets"] = (state.offsets, 0, None)
    for name, module_state in lm_gen.lm_model.transformer.get_streaming_state().items():
        if isinstance(module_state, _MHAState) and module_state.kv_cache is not None:
            kv = module_state.kv_cache
            parts[f"lm/{name}/cache"] = (kv.cache, 1, 3)
            if isinstance(kv, Fp8RingCache):
                parts[f"lm/{name}/scales"] = (kv.scales, 1, 3)
            parts[f"lm/{name}/end_offset"] = (kv.end_offset, 0, None)
            parts[f"lm/{name}/offset"] = (module_state.offset, 0, None)
        elif isinstance(module_state, _TransformerState):
            parts[f"lm/{name}/offsets"] = (module_state.offsets, 0, None)
    return parts


def take(lm_gen: Any, mimi: Any, log: moshi_move.TokenLog, slot: int) -> Primer:
    """``slot``'s rows after its first steps (it must have run them alone since its reset)."""
    steps = int(log.steps[slot])
    rows = {}
    for path, (tensor, dim, positions) in _parts(lm_gen, mimi).items():
        row = tensor.narrow(dim, slot, 1)
        if positions is not None:
            row = row.narrow(positions, 0, steps)
        rows[path] = (dim, positions, row.clone())
    return Primer(steps=steps, history=log.tokens[slot, :steps].copy(), rows=rows)


def put(primer: Primer, lm_gen: Any, mimi: Any, log: moshi_move.TokenLog, slot: int) -> None:
    """Copy ``primer`` into ``slot`` (reset and frozen by the caller): device copies only."""
    for path, (tensor, dim, _positions) in _parts(lm_gen, mimi).items():
        _, positions, row = primer.rows[path]
        target = tensor.narrow(dim, slot, 1)
        if positions is not None:
            target = target.narrow(positions, 0, primer.steps)
        target.copy_(row)
    log.tokens[slot, : primer.steps] = primer.history
    log.steps[slot] = primer.steps
