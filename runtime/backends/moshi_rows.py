"""One batch row of moshi's streaming state: the per-slot tensors of a streaming module tree
(to export and import Mimi's state), and batch-1 views over one row of the LM transformer's
state (to replay a conversation into that row alone).

moshi keeps each module's streaming state in a dataclass per module class. Each class is
listed here with the fields that hold one row per slot and their batch dimension; an unknown
class (a later moshi) is refused rather than guessed, so a conversation is never moved with
part of its state left behind. ``offset_cpu`` counters are batch-wide and only pick weights
per step (the depformer's), and ``exec_mask`` is the engine's, so neither moves.
"""

from __future__ import annotations

from typing import Any

import torch
from moshi.modules.streaming import State
from moshi.modules.transformer import RingKVCache, _LayerState, _MHAState, _TransformerState

from voicefleet.runtime.backends.kv_fp8 import Fp8RingCache
from voicefleet.runtime.backends.slot_state import SlotStateError

# state class name -> (field, batch dimension) of its per-slot tensors
_ROW_FIELDS: dict[str, tuple[tuple[str, int], ...]] = {
    "_StreamingConv1dState": (("previous", 0), ("first", 0)),
    "_StreamingConvTr1dState": (("partial", 0),),
    "_MHAState": (("offset", 0), ("kv_cache.cache", 1), ("kv_cache.end_offset", 0)),
    "_TransformerState": (("offsets", 0),),
    "_LayerState": (),
    "_MimiState": (),
    "State": (),
}


def _field(state: Any, path: str) -> Any:
    for part in path.split("."):
        state = getattr(state, part)
    return state


def row_tensors(module: Any) -> dict[str, tuple[torch.Tensor, int]]:
    """``name -> (batch tensor, batch dim)`` for every per-slot tensor under ``module``
    (which must be streaming); ``tensor.narrow(dim, row, 1)`` is one slot's part."""
    found: dict[str, tuple[torch.Tensor, int]] = {}
    for name, state in module.get_streaming_state().items():
        kind = type(state).__name__
        if kind not in _ROW_FIELDS:
            raise SlotStateError(
                f"moshi's streaming state {kind} (at {name or 'the root'}) is unknown to "
                "voicefleet: conversations on this moshi version cannot be moved"
            )
        if kind == "_MHAState" and state.kv_cache is not None:
            _require_per_row(state.kv_cache, name)
        for path, dim in _ROW_FIELDS[kind]:
            if path.startswith("kv_cache") and state.kv_cache is None:
                continue  # cross-attention: nothing cached per slot
            found[f"{name}/{path}"] = (_field(state, path), dim)
    return found


def _require_per_row(cache: RingKVCache, name: str) -> None:
    if not cache.respect_exec_mask:
        raise SlotStateError(
            f"the KV cache at {name} keeps one position for the whole batch; a single "
            "slot's state cannot be taken out of it"
        )


def row_views(transformer: Any, row: int) -> dict[str, State]:
    """Batch-1 streaming states for ``transformer`` whose tensors are views of ``row`` of its
    live batch state: a forward pass under them writes that row's KV cache and positions in
    place, and no other row's."""
    views: dict[str, State] = {}
    for name, state in transformer.get_streaming_state().items():
        views[name] = _row_view(state, row, name)
    return views


def _row_view(state: State, row: int, name: str) -> State:
    one = slice(row, row + 1)
    device = state.device
    if isinstance(state, _MHAState):
        if state.kv_cache is None:
            raise SlotStateError(f"attention at {name} has no KV cache to rebuild")
        _require_per_row(state.kv_cache, name)
        if isinstance(state.kv_cache, Fp8RingCache):  # --kv-cache-dtype fp8
            fp8 = state.kv_cache.row(row)
            return _MHAState(1, device, fp8, offset=state.offset[one], offset_cpu=0)
        cache = RingKVCache.__new__(RingKVCache)
        cache.capacity = state.kv_cache.capacity
        cache.respect_exec_mask = True
        cache.cache = state.kv_cache.cache[:, one]
        cache.end_offset = state.kv_cache.end_offset[one]
        return _MHAState(1, device, cache, offset=state.offset[one], offset_cpu=0)
    if isinstance(state, _TransformerState):
        return _TransformerState(1, device, offsets=state.offsets[one])
    if isinstance(state, _LayerState):
        return _LayerState(1, device)
    raise SlotStateError(
        f"moshi's streaming state {type(state).__name__} (at {name or 'the root'}) is "
        "unknown to voicefleet: conversations on this moshi version cannot be moved"
    )
