"""What a session may use of the server: its limits, the metrics, the engine's slot input and
the Opus codec, each through a narrow interface. Sessions never see the hub (which owns them),
so the two do not import each other and a protocol cannot reach into the engine's internals.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from voicefleet.runtime.backends.base import FrameFormat, Pcm
from voicefleet.runtime.metrics import RuntimeMetrics
from voicefleet.runtime.server_info import ServerIdentity
from voicefleet.runtime.slots import SlotHandle

if TYPE_CHECKING:
    from voicefleet.runtime.config import RuntimeConfig


class SlotInput(Protocol):
    """The engine as a session sees it: where its caller's audio goes, frame by frame."""

    @property
    def frame(self) -> FrameFormat:
        """The backend's frame: every pushed frame has its rate and length."""

    def push_input(self, handle: SlotHandle, frame: Pcm) -> bool:
        """Queue one frame; False when the queue was full and the oldest was dropped."""

    def restart(self, handle: SlotHandle) -> None:
        """Start the slot's conversation over."""


class OpusCodec(Protocol):
    """Per-session Ogg/Opus state (``codec.CodecPool``): decoding fails with
    ``CodecError`` (not Ogg/Opus) or ``CodecUnavailable`` (the worker is gone)."""

    def open(self, sid: int) -> asyncio.Future[None]: ...

    def close(self, sid: int) -> asyncio.Future[None]: ...

    def decode(self, sid: int, ogg: bytes, *, urgent: bool = False) -> asyncio.Future[Pcm]: ...


@dataclass(frozen=True)
class SessionLimits:
    """The bounds of one session, from the command line (``limits.py`` says why)."""

    max_session_seconds: int
    idle_seconds: float
    max_client_lag_seconds: float
    input_burst_seconds: float
    queue_seconds: float

    @classmethod
    def of(cls, config: RuntimeConfig) -> SessionLimits:
        return cls(
            max_session_seconds=config.max_session_seconds,
            idle_seconds=config.idle_seconds,
            max_client_lag_seconds=config.max_client_lag_seconds,
            input_burst_seconds=config.input_burst_seconds,
            queue_seconds=config.queue_seconds,
        )


@dataclass(frozen=True)
class Services:
    limits: SessionLimits
    metrics: RuntimeMetrics
    slots: SlotInput
    codec: OpusCodec
    identity: ServerIdentity
