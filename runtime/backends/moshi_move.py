"""Moving a Moshi conversation between slots (of this process or another pod's): what its
state holds, how it is written out, and how the receiving slot's LM is rebuilt.

The state (:func:`export_state`) is small: the 17 tokens the LM transformer was fed at every
step of the conversation (text, 8 model audio and 8 user audio codebooks, after moshi's
delays, exactly as ``LMModel.forward_text`` saw them: :class:`TokenLog` records them), the
LMGen's own row (its delay buffer and offset), the session's text temperature, and the slot's
row of every Mimi streaming tensor (conv buffers, the codec transformers' small KV caches).
The LM's KV cache is not exported: it is a function of the token history, so the receiving
slot replays the history through the LM transformer as a prefill (``moshi_replay``: at batch 1,
in chunks, on a row of its own; the depformer is not run, the replayed tokens are known).

Why batch 1 and not a chunk through the live batch: moshi's streaming attention does take
several steps at once, per row, and ``exec_mask`` keeps other rows' positions from advancing,
but every row would compute the whole chunk (B x T work for T steps of one row), and every
masked row's ring cache still gets the chunk's keys written past its end, which overwrites
live history once that row's ring has wrapped.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from voicefleet.runtime.backends.fingerprint import weights_fingerprint
from voicefleet.runtime.backends.moshi_rows import row_tensors
from voicefleet.runtime.backends.slot_state import (
    Array,
    Scalar,
    SlotState,
    SlotStateError,
    require_arrays,
    require_same_model,
)

KIND = "moshi"
HISTORY = "lm/history"
LMGEN_CACHE = "lmgen/cache"
MIMI_PREFIX = "mimi/"


class TokenLog:
    """Per slot, the tokens fed to the LM transformer at each step of its conversation."""

    def __init__(self, capacity: int, context_steps: int, streams: int, dtype: Any) -> None:
        self.tokens = np.zeros((capacity, context_steps, streams), dtype=dtype)
        self.steps = np.zeros(capacity, dtype=np.int64)

    def clear(self, slot: int) -> None:
        self.steps[slot] = 0

    def record(self, active: np.ndarray[Any, np.dtype[np.bool_]], fed: Array) -> None:
        """One step of every active slot; a conversation past the context stops being
        recorded (it cannot be moved: its oldest steps have left the model's window)."""
        slots = np.flatnonzero(active)
        steps = self.steps[slots]
        kept = steps < self.tokens.shape[1]
        self.tokens[slots[kept], steps[kept]] = fed[slots[kept]]
        self.steps[slots] = steps + 1

    def history(self, slot: int) -> Array:
        steps = int(self.steps[slot])
        if steps > self.tokens.shape[1]:
            raise SlotStateError(
                f"the conversation in slot {slot} is {steps} steps long, past the model's "
                f"context of {self.tokens.shape[1]}: it can no longer be moved"
            )
        return self.tokens[slot, :steps].copy()


def token_dtype(lm: Any) -> Any:
    """The narrowest integer that holds every token id the LM is fed (the initial tokens are
    ``card`` and ``text_card``; ``ungenerated`` is negative): int16 for Moshi."""
    largest = max(int(lm.card), int(lm.text_card))
    return np.int16 if largest < 2**15 else np.int32


def model_identity(lm: Any, mimi: Any, variant: str) -> dict[str, Scalar]:
    """What a state is valid for: the architecture, the variant and the weights themselves
    (a fingerprint of a few values of every parameter, taken once at start)."""
    architecture = {
        "streams": int(lm.num_codebooks),
        "dep_q": int(lm.dep_q),
        "card": int(lm.card),
        "text_card": int(lm.text_card),
        "dim": int(lm.dim),
        "layers": len(lm.transformer.layers),
        "delays": [int(d) for d in lm.delays],
        "mimi_frame_rate": float(mimi.frame_rate),
    }
    return {
        "architecture": json.dumps(architecture, sort_keys=True),
        "variant": variant,
        "weights": weights_fingerprint(lm, mimi),
    }


def lmgen_row(lm_gen: Any, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(delay buffer ``[streams, CT]``, offset) of one slot in LMGen's state, as views."""
    state = lm_gen._streaming_state
    return state.cache[slot], state.offsets[slot]


def export_state(
    lm_gen: Any,
    mimi: Any,
    log: TokenLog,
    slot: int,
    *,
    model: dict[str, Scalar],
    text_temperature: float | None,
) -> SlotState:
    history = log.history(slot)
    cache, offset = lmgen_row(lm_gen, slot)
    arrays: dict[str, Array] = {
        HISTORY: history,
        LMGEN_CACHE: cache.cpu().numpy().astype(history.dtype),
    }
    for name, (tensor, dim) in row_tensors(mimi).items():
        arrays[MIMI_PREFIX + name] = tensor.narrow(dim, slot, 1).cpu().numpy()
    meta: dict[str, Scalar] = {"steps": len(history), "lmgen_offset": int(offset)}
    if text_temperature is not None:
        meta["text_temperature"] = text_temperature
    return SlotState(kind=KIND, model=model, meta=meta, arrays=arrays)


def check_state(
    lm: Any, mimi: Any, state: SlotState, *, model: dict[str, Scalar], context_steps: int
) -> int:
    """Refuse a state this backend cannot continue, before anything is changed; its steps."""
    require_same_model(model, state, KIND)
    steps = state.meta.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise SlotStateError(f"slot state has no valid step count (steps={steps!r})")
    if steps > context_steps:
        raise SlotStateError(
            f"the conversation is {steps} steps long, more than this pod's context of "
            f"{context_steps} steps: move it to a pool with a longer --max-session-seconds"
        )
    if state.meta.get("lmgen_offset") != steps:
        raise SlotStateError(
            f"slot state inconsistent: LMGen offset {state.meta.get('lmgen_offset')!r} for "
            f"{steps} steps"
        )
    dtype = np.dtype(token_dtype(lm))
    cache_shape = tuple(lm_gen_cache_shape(lm))
    expected = {
        HISTORY: ((steps, int(lm.num_codebooks)), dtype),
        LMGEN_CACHE: (cache_shape, dtype),
    }
    for name, (tensor, dim) in row_tensors(mimi).items():
        row = tensor.narrow(dim, 0, 1)
        expected[MIMI_PREFIX + name] = (tuple(row.shape), np.dtype(_numpy_dtype(row)))
    require_arrays(expected, state)
    history = state.arrays[HISTORY]
    if history.size and (history.min() < 0 or history.max() > max(lm.card, lm.text_card)):
        raise SlotStateError("slot state history holds token ids outside this model's range")
    return steps


def lm_gen_cache_shape(lm: Any) -> tuple[int, int]:
    """LMGen's delay buffer per slot: every stream, max delay + 2 positions (moshi's own)."""
    return int(lm.num_codebooks), max(int(d) for d in lm.delays) + 2


def _numpy_dtype(tensor: torch.Tensor) -> Any:
    return torch.empty(0, dtype=tensor.dtype).numpy().dtype


def load_state(lm_gen: Any, mimi: Any, log: TokenLog, slot: int, state: SlotState) -> None:
    """Write a checked state into ``slot`` (already reset and frozen); the LM's KV cache
    still has to be rebuilt by a replay (``moshi_replay.Replay``)."""
    device = lm_gen.lm_model.device
    for name, (tensor, dim) in row_tensors(mimi).items():
        value = torch.from_numpy(state.arrays[MIMI_PREFIX + name].copy())
        tensor.narrow(dim, slot, 1).copy_(value.to(tensor.device))
    cache, offset = lmgen_row(lm_gen, slot)
    cache.copy_(torch.from_numpy(state.arrays[LMGEN_CACHE].astype(np.int64)).to(device))
    offset.fill_(int(state.meta["lmgen_offset"]))
    history = state.arrays[HISTORY]
    log.tokens[slot, : len(history)] = history
    log.steps[slot] = len(history)
