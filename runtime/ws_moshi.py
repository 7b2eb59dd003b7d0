"""``/api/chat``: Moshi's WebSocket protocol, so Kyutai's web client and ``moshi.client``
work unchanged. Ogg/Opus at 24 kHz both ways, model text as 0x02, notices as 0x04 JSON,
errors as 0x05; the handshake goes first; unknown kinds are ignored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import WSMsgType, web

from voicefleet import constants
from voicefleet.api.runtime import SessionInfo
from voicefleet.runtime import protocol
from voicefleet.runtime.codec import CodecError
from voicefleet.runtime.engine import FRAME_SAMPLES, FrameOutput, SlotHandle
from voicefleet.runtime.protocol import Control, Kind, Sampling
from voicefleet.runtime.session import BadInput, Session

if TYPE_CHECKING:
    from voicefleet.runtime.hub import Hub

PROTOCOL_MOSHI = "moshi"


class MoshiSession(Session):
    protocol = PROTOCOL_MOSHI
    wants_opus = True

    def __init__(
        self,
        hub: Hub,
        ws: web.WebSocketResponse,
        handle: SlotHandle,
        session_id: int,
        sampling: Sampling,
    ) -> None:
        super().__init__(hub, ws, handle, session_id)
        self.sampling = sampling
        self._pcm: np.ndarray[Any, np.dtype[np.float32]] = np.zeros(0, dtype=np.float32)

    async def on_open(self) -> None:
        await self.hub.codec.open(self.id)
        await self.ws.send_bytes(protocol.handshake())
        info = SessionInfo(
            session_id=str(self.id),
            max_session_seconds=self.hub.config.max_session_seconds,
            sample_rate=constants.MOSHI_SAMPLE_RATE,
            frame_ms=80.0,
            sampling=self.sampling.wire(),
        )
        await self.send_notice(info.wire())

    async def on_close(self) -> None:
        await self.hub.codec.close(self.id)

    async def on_message(self, kind: WSMsgType, data: Any) -> None:
        if kind != WSMsgType.BINARY:
            raise BadInput("the Moshi protocol takes binary messages only")
        message: bytes = data
        if not message:
            return
        if len(message) > protocol.MAX_MESSAGE_BYTES:
            raise BadInput(f"message of {len(message)} bytes; at most {protocol.MAX_MESSAGE_BYTES}")
        if message[0] == Kind.AUDIO:
            await self._audio(message[1:])
        elif message[0] == Kind.CONTROL and message[1:2] == bytes([Control.RESTART]):
            assert self.hub.engine is not None
            self.hub.engine.restart(self.handle)
        # Handshake, text, metadata, ping, other controls and unknown kinds: nothing to do.

    async def _audio(self, ogg: bytes) -> None:
        try:
            pcm = await self.hub.codec.decode(self.id, ogg)
        except CodecError as exc:
            raise BadInput(f"audio is not Ogg/Opus: {exc}") from exc
        if pcm.size == 0:
            return
        self._pcm = np.concatenate((self._pcm, pcm.reshape(-1).astype(np.float32, copy=False)))
        engine = self.hub.engine
        assert engine is not None
        while self._pcm.size >= FRAME_SAMPLES:
            frame, self._pcm = self._pcm[:FRAME_SAMPLES], self._pcm[FRAME_SAMPLES:]
            if not engine.push_input(self.handle, frame):
                self.hub.metrics.queue_drops.labels("input").inc()

    async def send_frame(self, frame: FrameOutput) -> None:
        if frame.ogg:
            await self.ws.send_bytes(protocol.audio(frame.ogg))
            self.audio_sent()
        if frame.text:
            await self.ws.send_bytes(protocol.text(frame.text))

    async def send_notice(self, payload: dict[str, Any]) -> None:
        await self.ws.send_bytes(protocol.metadata(payload))

    async def send_error(self, message: str) -> None:
        await self.ws.send_bytes(protocol.error(message))
