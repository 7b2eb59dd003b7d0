"""The part of ``Backend.import_step`` every backend shares: find the slot's replay, run one
bounded chunk of it, and wait for the device, since the engine times the work it does
between frames."""

from __future__ import annotations

from typing import Protocol, TypeVar

import torch

from voicefleet.runtime.backends.slot_state import SlotStateError


class Replaying(Protocol):
    @property
    def left(self) -> int: ...

    def step(self, max_steps: int) -> int: ...


R = TypeVar("R", bound=Replaying)


def advance(replays: dict[int, R], slot: int, max_steps: int, device: torch.device) -> int:
    """Up to ``max_steps`` more of ``slot``'s replay; the steps left (0: done, forgotten)."""
    replay = replays.get(slot)
    if replay is None:
        raise SlotStateError(f"no import under way in slot {slot}")
    left = replay.step(max_steps)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    if left == 0:
        del replays[slot]
    return left
