"""What the engine hands out and back: a session's claim on a slot, and one frame of a slot's
output."""

from __future__ import annotations

from dataclasses import dataclass

from voicefleet.runtime.backends.base import Pcm


@dataclass(frozen=True)
class SlotHandle:
    """A session's claim on a slot; ``generation`` tells its frames from a later occupant's."""

    slot: int
    generation: int


@dataclass(frozen=True)
class FrameOutput:
    slot: int
    generation: int
    pcm: Pcm | None  # None during the model's initial delay
    text: str | None
    ogg: bytes = b""  # the pcm as Ogg/Opus pages, filled in for Moshi-protocol sessions
