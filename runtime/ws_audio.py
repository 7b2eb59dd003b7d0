"""``/audio``: the Hertz-dev reference server's protocol, so its clients work unchanged
(Standard-Intelligence/hertz-dev ``inference_server.py``; hertz-facts.md section 6).

Both ways: **text** messages ``data:audio/raw;base64,<base64 of little-endian int16>``, mono
16 kHz; the clients send 2000 samples (125 ms) per message. The server reads what follows the
first comma, as the reference does. Any length is accepted here and regrouped into frames (the
reference fails on a chunk that is not 2000 samples); samples scale by 1/32767 in and by 32767
out, clipped (the reference wraps out-of-range samples around).

Where this server differs on purpose, and why:
- one reply per frame of the frame clock, not per message: the model steps on the clock for
  every session together, so a caller streaming in real time gets one reply per message sent;
- no 3 s replay of the prompt before the model starts: the prompt is already in the slot
  (copied at the join), so the model answers from the first frame;
- sessions are independent (the reference shares one model state among all connections);
- no notices in the stream: its clients decode every text message as audio, so drain and
  limits are told in the close frame's reason, and errors too.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from aiohttp import WSMsgType

from voicefleet import constants
from voicefleet.runtime.framing import FrameAssembler, to_caller
from voicefleet.runtime.limits import MESSAGE_COST_SECONDS
from voicefleet.runtime.protocol import MAX_MESSAGE_BYTES
from voicefleet.runtime.services import Services
from voicefleet.runtime.session import BadInput, Connection, Session
from voicefleet.runtime.slots import FrameOutput

PROTOCOL_AUDIO = "audio"
AUDIO_PREFIX = "data:audio/raw;base64,"
AUDIO_RATE = constants.HERTZ_SAMPLE_RATE
# The reference's scale both ways (inference_server.py: / 32767.0 in, * 32767 out).
INT16_SCALE = 32767.0
BYTES_PER_SAMPLE = 2


def decode_message(text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The PCM of one client message, or BadInput saying what was wrong."""
    _, comma, payload = text.partition(",")
    if not comma:
        raise BadInput(f"send text messages of the form {AUDIO_PREFIX}<base64 of int16 PCM>")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"the audio after the comma is not base64: {exc}") from exc
    usable = len(raw) - len(raw) % BYTES_PER_SAMPLE
    return np.frombuffer(raw[:usable], dtype="<i2").astype(np.float32) / INT16_SCALE


def encode_message(pcm: np.ndarray[Any, np.dtype[np.float32]]) -> str:
    pcm16 = np.clip(pcm * INT16_SCALE, -32768, 32767).astype("<i2")
    return AUDIO_PREFIX + base64.b64encode(pcm16.tobytes()).decode("ascii")


class AudioSession(Session):
    protocol = PROTOCOL_AUDIO

    def __init__(self, services: Services, connection: Connection) -> None:
        super().__init__(services, connection)
        self._frames_in = FrameAssembler(AUDIO_RATE, services.slots.frame)
        self._to_caller = to_caller(services.slots.frame, AUDIO_RATE)

    async def on_open(self) -> None:
        """The reference accepts and waits for audio: nothing to send first."""

    def on_close(self) -> None:
        """Nothing to release: the resamplers die with the session."""

    def on_message(self, kind: WSMsgType, data: Any) -> None:
        if kind != WSMsgType.TEXT:
            raise BadInput(f"send audio as text messages: {AUDIO_PREFIX}<base64 of int16 PCM>")
        if len(data) > MAX_MESSAGE_BYTES:
            raise BadInput(f"message of {len(data)} bytes; at most {MAX_MESSAGE_BYTES}")
        pcm = decode_message(data)
        self.heard()
        if not self.admit(max(0.0, pcm.size / AUDIO_RATE - MESSAGE_COST_SECONDS)):
            return
        self.push_frames(self._frames_in.push(pcm))

    async def send_frame(self, frame: FrameOutput) -> None:
        if frame.pcm is not None:
            await self.ws.send_str(encode_message(self._to_caller.process(frame.pcm)))
            self.audio_sent()

    async def send_notice(self, payload: dict[str, Any]) -> None:
        """Its clients would decode a notice as audio: the close frame carries the news."""

    async def send_error(self, message: str) -> None:
        """Likewise: the close that follows names the reason."""
