"""Real WebSocket clients for the runtime's two protocols, as a caller would write them:
aiohttp for the socket, sphn for Ogg/Opus (the same library ``moshi.client`` uses)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import sphn

SAMPLE_RATE = 24_000
FRAME_SAMPLES = 1920
FRAME_SECONDS = 0.08


def tone(seconds: float, rate: int = SAMPLE_RATE, hz: float = 220.0) -> np.ndarray[Any, Any]:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@dataclass
class MoshiTranscript:
    """What one Moshi-protocol session received."""

    first_kind: int | None = None
    handshake: bytes = b""
    audio_samples: int = 0
    texts: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    first_audio_seconds: float | None = None
    audio_messages_after: list[float] = field(default_factory=list)


async def moshi_session(
    url: str,
    seconds: float,
    *,
    extra_messages: list[bytes] | None = None,
    stop: asyncio.Event | None = None,
    frame_samples: int = FRAME_SAMPLES,
) -> MoshiTranscript:
    """Stream ``seconds`` of a tone in real time as Ogg/Opus, read everything that comes
    back, decode the audio, then close (or end early when the server closes or ``stop``)."""
    transcript = MoshiTranscript()
    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    reader = sphn.OpusStreamReader(SAMPLE_RATE)
    audio = tone(seconds)
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:

        async def send() -> None:
            for message in extra_messages or []:
                await ws.send_bytes(message)
            frame_seconds = frame_samples / SAMPLE_RATE
            for index in range(len(audio) // frame_samples):
                if ws.closed:
                    return
                if stop is not None and stop.is_set():
                    break
                frame = audio[index * frame_samples : (index + 1) * frame_samples]
                ogg = writer.append_pcm(frame)
                if ogg:
                    await ws.send_bytes(b"\x01" + ogg)
                # Real time: one frame per frame's duration, on a fixed schedule.
                await asyncio.sleep(
                    max(0.0, started + (index + 1) * frame_seconds - time.monotonic())
                )
            await asyncio.sleep(0.5)  # let the last replies arrive
            await ws.close()

        sender = asyncio.create_task(send())
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                continue
            data: bytes = message.data
            if transcript.first_kind is None:
                transcript.first_kind = data[0]
                transcript.handshake = data
            kind, payload = data[0], data[1:]
            if kind == 0x01:
                pcm = reader.append_bytes(payload)
                transcript.audio_samples += int(pcm.shape[-1])
                now = time.monotonic() - started
                if transcript.first_audio_seconds is None:
                    transcript.first_audio_seconds = now
                transcript.audio_messages_after.append(now)
            elif kind == 0x02:
                transcript.texts.append(payload.decode())
            elif kind == 0x04:
                transcript.metadata.append(json.loads(payload))
            elif kind == 0x05:
                transcript.errors.append(payload.decode())
        transcript.close_code = ws.close_code
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return transcript


@dataclass
class PcmTranscript:
    chunks: list[int] = field(default_factory=list)  # bytes per binary message
    notices: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None


async def pcm_session(
    url: str, seconds: float, rate: int, chunk_seconds: float = FRAME_SECONDS
) -> PcmTranscript:
    """Stream 16-bit PCM at ``rate`` in 80 ms chunks, in real time; collect the replies."""
    transcript = PcmTranscript()
    audio = tone(seconds, rate)
    pcm16 = (audio * 32767).astype("<i2")
    chunk = int(rate * chunk_seconds)
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}?rate={rate}") as ws:

        async def send() -> None:
            for index in range(len(pcm16) // chunk):
                await ws.send_bytes(pcm16[index * chunk : (index + 1) * chunk].tobytes())
                await asyncio.sleep(
                    max(0.0, started + (index + 1) * chunk_seconds - time.monotonic())
                )
            await asyncio.sleep(0.5)
            await ws.close()

        sender = asyncio.create_task(send())
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                transcript.chunks.append(len(message.data))
            elif message.type == aiohttp.WSMsgType.TEXT:
                transcript.notices.append(json.loads(message.data))
        transcript.close_code = ws.close_code
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return transcript


@dataclass
class AudioTranscript:
    """What a client of Hertz-dev's reference protocol (``/audio``) received."""

    samples: list[int] = field(default_factory=list)  # int16 samples per text message
    not_audio: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    first_audio_seconds: float | None = None


async def audio_session(url: str, seconds: float) -> AudioTranscript:
    """The reference client's messages: ``data:audio/raw;base64,`` + 2000 int16 samples at
    16 kHz, one every 125 ms, in real time; the replies are decoded the same way."""
    transcript = AudioTranscript()
    rate, chunk = 16_000, 2000
    pcm16 = (tone(seconds, rate) * 32767).astype("<i2")
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:

        async def send() -> None:
            for index in range(len(pcm16) // chunk):
                payload = base64.b64encode(pcm16[index * chunk : (index + 1) * chunk].tobytes())
                await ws.send_str("data:audio/raw;base64," + payload.decode())
                wake = started + (index + 1) * chunk / rate
                await asyncio.sleep(max(0.0, wake - time.monotonic()))
            await asyncio.sleep(0.5)
            await ws.close()

        sender = asyncio.create_task(send())
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            text: str = message.data
            if not text.startswith("data:audio/raw;base64,"):
                transcript.not_audio.append(text)
                continue
            transcript.samples.append(len(base64.b64decode(text.split(",")[1])) // 2)
            if transcript.first_audio_seconds is None:
                transcript.first_audio_seconds = time.monotonic() - started
        transcript.close_code = ws.close_code
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return transcript
