"""One batch row of moshi's streaming state: the per-slot tensors of a streaming module tree
(to export, import and prime a slot's state; ``moshi_replay`` copies the LM transformer's).

moshi keeps each module's streaming state in a dataclass per module class. Each class is
listed here with the fields that hold one row per slot and their batch dimension; an unknown
class (a later moshi) is refused rather than guessed, so a conversation is never moved with
part of its state left behind. ``offset_cpu`` counters are batch-wide and only pick weights
per step (the depformer's), and ``exec_mask`` is the engine's, so neither moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from moshi.modules.transformer import RingKVCache

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


@dataclass(frozen=True)
class RowField:
    """A per-slot tensor of a streaming state, looked up where it is used: moshi assigns some
    of them anew at every step (a conv's ``first``, LMGen's ``offsets``), so a tensor kept
    from an earlier step may no longer be the state's."""

    owner: Any
    attr: str
    dim: int  # the batch dimension

    def tensor(self) -> torch.Tensor:
        value: torch.Tensor = getattr(self.owner, self.attr)
        return value


def row_fields(module: Any) -> dict[str, RowField]:
    """``name -> field`` for every per-slot tensor under ``module`` (which must be
    streaming); ``field.tensor().narrow(field.dim, row, 1)`` is one slot's part."""
    found: dict[str, RowField] = {}
    for name, state in module.get_streaming_state().items():
        kind = type(state).__name__
        if kind not in _ROW_FIELDS:
            raise SlotStateError(
                f"moshi's streaming state {kind} (at {name or 'the root'}) is unknown to "
                "voicefleet: conversations on this moshi version cannot be moved"
            )
        if kind == "_MHAState" and state.kv_cache is not None:
            require_per_row(state.kv_cache, name)
        for path, dim in _ROW_FIELDS[kind]:
            if path.startswith("kv_cache") and state.kv_cache is None:
                continue  # cross-attention: nothing cached per slot
            *parents, attr = path.split(".")
            owner = state
            for parent in parents:
                owner = getattr(owner, parent)
            found[f"{name}/{path}"] = RowField(owner, attr, dim)
    return found


def row_tensors(module: Any) -> dict[str, tuple[torch.Tensor, int]]:
    """``name -> (batch tensor, batch dim)`` of :func:`row_fields`, as they are now."""
    return {name: (field.tensor(), field.dim) for name, field in row_fields(module).items()}


def require_per_row(cache: RingKVCache, name: str) -> None:
    if not cache.respect_exec_mask:
        raise SlotStateError(
            f"the KV cache at {name} keeps one position for the whole batch; a single "
            "slot's state cannot be taken out of it"
        )
