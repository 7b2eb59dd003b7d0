"""``/api/chat``: Moshi's WebSocket protocol, so Kyutai's web client and ``moshi.client``
work unchanged. Ogg/Opus at 24 kHz both ways, model text as 0x02, notices as 0x04 JSON,
errors as 0x05; the handshake goes first; unknown kinds are ignored.

Incoming audio is handed to the codec workers without waiting: a session has at most
``MAX_DECODE_BACKLOG_MESSAGES`` (and ``_BYTES``) decodes in flight, each charged to the input
budget before it is sent (by the audio its Ogg/Opus headers announce, ``oggopus.py``) and
after (by any audio it held beyond that). Results of one session come back in order, so its
audio stays in order. The protocol's 24 kHz is resampled to and from the backend's rate (16 kHz
for Hertz-dev, whose model text is none)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from aiohttp import WSMsgType

from voicefleet import constants
from voicefleet.api.runtime import SessionInfo
from voicefleet.runtime import protocol
from voicefleet.runtime.backends.base import Pcm, Sampling
from voicefleet.runtime.codec import CodecUnavailable
from voicefleet.runtime.endings import CLOSE_UNSUPPORTED, DROP_BACKLOG, END_ERROR
from voicefleet.runtime.framing import FrameAssembler, to_caller
from voicefleet.runtime.limits import (
    MAX_DECODE_BACKLOG_BYTES,
    MAX_DECODE_BACKLOG_MESSAGES,
    MESSAGE_COST_SECONDS,
    OPUS_MAX_BYTES_PER_SECOND,
)
from voicefleet.runtime.oggopus import ogg_opus_seconds
from voicefleet.runtime.protocol import Control, Kind
from voicefleet.runtime.server_info import server_info
from voicefleet.runtime.services import Services
from voicefleet.runtime.session import BadInput, Connection, Session
from voicefleet.runtime.slots import FrameOutput

PROTOCOL_MOSHI = "moshi"


class MoshiSession(Session):
    protocol = PROTOCOL_MOSHI
    wants_opus = True

    def __init__(self, services: Services, connection: Connection, sampling: Sampling) -> None:
        super().__init__(services, connection)
        # What the backend does with what was asked (reported in the session notice).
        self.sampling = sampling
        self._server_info = server_info(services.identity, sampling)
        frame = services.slots.frame
        self._frames_in = FrameAssembler(constants.MOSHI_SAMPLE_RATE, frame)
        self._to_opus = to_caller(frame, constants.MOSHI_SAMPLE_RATE)
        self._decoding = 0  # messages sent to the codec, not yet back
        self._heard_audio = False  # until the first audio is decoded, decodes go at once
        self._decoding_bytes = 0

    async def on_open(self) -> None:
        # Not awaited: the handshake does not wait a round trip to a busy codec worker, and
        # the first decode, sent after, finds the state in place (``CodecPool.open``).
        self.services.codec.open(self.id).add_done_callback(self._opened)
        await self.ws.send_bytes(protocol.handshake())
        info = SessionInfo(
            session_id=str(self.id),
            max_session_seconds=self.limits.max_session_seconds,
            sample_rate=constants.MOSHI_SAMPLE_RATE,
            frame_ms=self.services.slots.frame.ms,
            sampling=self.sampling.wire(),
        )
        await self.send_notice(info.wire())

    def _opened(self, opening: asyncio.Future[None]) -> None:
        if not opening.cancelled() and opening.exception() is not None:
            self.codec_failed(opening.exception())

    def on_close(self) -> None:
        release = self.services.codec.close(self.id)
        # Nobody waits for it: a worker that died took the state with it anyway.
        release.add_done_callback(lambda done: done.cancelled() or done.exception())

    def on_message(self, kind: WSMsgType, data: Any) -> None:
        if kind != WSMsgType.BINARY:
            raise BadInput("the Moshi protocol takes binary messages only")
        message: bytes = data
        if not message:
            return
        if len(message) > protocol.MAX_MESSAGE_BYTES:
            raise BadInput(f"message of {len(message)} bytes; at most {protocol.MAX_MESSAGE_BYTES}")
        if message[0] == Kind.AUDIO:
            self.heard()
            self._decode(message[1:])
        elif message[0] == Kind.CONTROL and message[1:2] == bytes([Control.RESTART]):
            self.services.slots.restart(self.handle)
        # Handshake, text, metadata, ping, other controls and unknown kinds: nothing to do.

    def _decode(self, ogg: bytes) -> None:
        if not ogg:
            return
        # Charged before any decoding: the audio its headers announce, and at least what its
        # size must hold (Opus carries at most 510 kbit/s), for a page split over messages.
        announced = ogg_opus_seconds(ogg) or 0.0
        seconds = max(announced, len(ogg) / OPUS_MAX_BYTES_PER_SECOND)
        # The receive loop has charged the message's minimum cost already.
        if not self.admit(max(0.0, seconds - MESSAGE_COST_SECONDS)):
            return
        if (
            self._decoding >= MAX_DECODE_BACKLOG_MESSAGES
            or self._decoding_bytes + len(ogg) > MAX_DECODE_BACKLOG_BYTES
        ):
            self.drop_input(DROP_BACKLOG)
            return
        self._decoding += 1
        self._decoding_bytes += len(ogg)
        decoding = self.services.codec.decode(self.id, ogg, urgent=not self._heard_audio)
        paid = max(MESSAGE_COST_SECONDS, seconds)
        decoding.add_done_callback(functools.partial(self._decoded, len(ogg), paid))

    def _decoded(self, size: int, paid: float, decoding: asyncio.Future[Pcm]) -> None:
        self._decoding -= 1
        self._decoding_bytes -= size
        error = decoding.exception()
        if self.closing_since is not None:
            return
        if isinstance(error, CodecUnavailable):
            self.codec_failed(error)
            return
        if error is not None:
            self.end(
                CLOSE_UNSUPPORTED, "bad input", END_ERROR, error=f"audio is not Ogg/Opus: {error}"
            )
            return
        pcm = decoding.result()
        if pcm.size == 0:
            return
        self._heard_audio = True
        # The rest of what the message held, now that it is known.
        if not self.admit(max(0.0, pcm.size / constants.MOSHI_SAMPLE_RATE - paid)):
            return
        self.push_frames(self._frames_in.push(pcm))

    def opus_pcm(self, pcm: Pcm) -> Pcm:
        return self._to_opus.process(pcm)

    async def send_frame(self, frame: FrameOutput) -> None:
        if frame.ogg:
            await self.ws.send_bytes(protocol.audio(frame.ogg))
            self.audio_sent()
        if frame.text:
            await self.ws.send_bytes(protocol.text(frame.text))

    async def send_notice(self, payload: dict[str, Any]) -> None:
        # Kyutai's web client accepts a 0x04 only in its server's layout (server_info.py).
        await self.ws.send_bytes(protocol.metadata({**self._server_info, **payload}))

    async def send_error(self, message: str) -> None:
        await self.ws.send_bytes(protocol.error(message))
