"""``/ws/pcm?rate=16000|24000|8000``: raw 16-bit little-endian mono PCM both ways, for
telephony-style callers. Binary messages of any size are accepted (one frame's worth is best:
80 ms for Moshi, 125 ms for Hertz-dev); the reply comes as one binary message per frame of
the backend at the caller's rate. Notices and model
text come as JSON text messages (``{"type": "drain", ...}``, ``{"type": "text", ...}``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from aiohttp import WSMsgType

from voicefleet.api.runtime import SessionInfo
from voicefleet.runtime.framing import FrameAssembler, to_caller
from voicefleet.runtime.limits import MESSAGE_COST_SECONDS
from voicefleet.runtime.protocol import MAX_MESSAGE_BYTES
from voicefleet.runtime.services import Services
from voicefleet.runtime.session import BadInput, Connection, Session
from voicefleet.runtime.slots import FrameOutput

PROTOCOL_PCM = "pcm"
INT16_SCALE = 32768.0
BYTES_PER_SAMPLE = 2


class PcmSession(Session):
    protocol = PROTOCOL_PCM

    def __init__(self, services: Services, connection: Connection, rate: int) -> None:
        super().__init__(services, connection)
        self.rate = rate
        self._frames_in = FrameAssembler(rate, services.slots.frame)
        self._to_caller = to_caller(services.slots.frame, rate)
        self._pending = b""

    async def on_open(self) -> None:
        info = SessionInfo(
            session_id=str(self.id),
            max_session_seconds=self.limits.max_session_seconds,
            sample_rate=self.rate,
            frame_ms=self.services.slots.frame.ms,
            sampling={},
        )
        await self.send_notice(info.wire())

    def on_close(self) -> None:
        """Nothing to release: the resamplers die with the session."""

    def on_message(self, kind: WSMsgType, data: Any) -> None:
        if kind != WSMsgType.BINARY:
            raise BadInput("send audio as binary messages of 16-bit little-endian PCM")
        if len(data) > MAX_MESSAGE_BYTES:
            raise BadInput(f"message of {len(data)} bytes; at most {MAX_MESSAGE_BYTES}")
        self.heard()
        # The message's whole length of audio, less the per-message cost already charged.
        seconds = len(data) / (BYTES_PER_SAMPLE * self.rate)
        if not self.admit(max(0.0, seconds - MESSAGE_COST_SECONDS)):
            return
        raw = self._pending + bytes(data)
        # An odd byte count splits a sample; keep the half for the next message.
        usable = len(raw) - len(raw) % BYTES_PER_SAMPLE
        self._pending = raw[usable:]
        samples = np.frombuffer(raw[:usable], dtype="<i2").astype(np.float32) / INT16_SCALE
        self.push_frames(self._frames_in.push(samples))

    async def send_frame(self, frame: FrameOutput) -> None:
        if frame.pcm is not None:
            pcm = self._to_caller.process(frame.pcm)
            pcm16 = np.clip(pcm * INT16_SCALE, -32768, 32767).astype("<i2")
            await self.ws.send_bytes(pcm16.tobytes())
            self.audio_sent()
        if frame.text:
            await self.ws.send_str(json.dumps({"type": "text", "text": frame.text}))

    async def send_notice(self, payload: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(payload, separators=(",", ":")))

    async def send_error(self, message: str) -> None:
        await self.send_notice({"type": "error", "message": message})
