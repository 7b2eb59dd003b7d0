"""Callers of the Moshi protocol that the gateway tests steer from outside: each holds its
conversation open, streaming Ogg/Opus in real time from its handshake on, until told to hang
up, and records what it was sent (when the handshake came, how many audio messages, errors,
the close code and reason)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import sphn

from voicefleet.testing.clients import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, tone

KIND_HANDSHAKE = 0x00
KIND_AUDIO = 0x01
KIND_METADATA = 0x04
KIND_ERROR = 0x05


@dataclass
class Caller:
    url: str
    upgraded: asyncio.Event = field(default_factory=asyncio.Event)
    handshaken: asyncio.Event = field(default_factory=asyncio.Event)
    hang_up: asyncio.Event = field(default_factory=asyncio.Event)
    first_kind: int | None = None
    handshake_at: float | None = None
    audio: int = 0
    audio_at: list[float] = field(default_factory=list)
    ogg: bytearray = field(default_factory=bytearray)  # every audio message's pages, in order
    handshakes: int = 0
    notices: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    task: asyncio.Task[None] | None = None

    def start(self) -> Caller:
        self.task = asyncio.create_task(self._run())
        return self

    async def ended(self, timeout: float) -> None:
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(self.url) as ws:
            self.upgraded.set()
            streaming: asyncio.Task[None] | None = None
            try:
                while True:
                    message = await ws.receive()
                    if message.type is aiohttp.WSMsgType.CLOSE:
                        self.close_code, self.close_reason = message.data, message.extra or ""
                        break
                    if message.type is not aiohttp.WSMsgType.BINARY:
                        self.close_code = self.close_code or ws.close_code
                        break
                    self._read(message.data)
                    if streaming is None and self.handshaken.is_set():
                        streaming = asyncio.create_task(self._stream(ws))
            finally:
                if streaming is not None:
                    streaming.cancel()
                    await asyncio.gather(streaming, return_exceptions=True)

    def _read(self, data: bytes) -> None:
        kind = data[0]
        if self.first_kind is None:
            self.first_kind = kind
        if kind == KIND_HANDSHAKE:
            self.handshakes += 1
            self.handshake_at = time.monotonic()
            self.handshaken.set()
        elif kind == KIND_AUDIO:
            self.audio += 1
            self.audio_at.append(time.monotonic())
            self.ogg += data[1:]
        elif kind == KIND_METADATA:
            self.notices.append(json.loads(data[1:]))
        elif kind == KIND_ERROR:
            self.errors.append(data[1:].decode())

    async def _stream(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A looped tone, one 80 ms frame per 80 ms, until told to hang up."""
        writer = sphn.OpusStreamWriter(SAMPLE_RATE)
        loop = tone(2.0)
        frames = len(loop) // FRAME_SAMPLES
        started = time.monotonic()
        index = 0
        while not self.hang_up.is_set():
            at = (index % frames) * FRAME_SAMPLES
            ogg = writer.append_pcm(loop[at : at + FRAME_SAMPLES])
            if ogg:
                await ws.send_bytes(bytes([KIND_AUDIO]) + ogg)
            index += 1
            delay = started + index * FRAME_SECONDS - time.monotonic()
            try:
                await asyncio.wait_for(self.hang_up.wait(), max(0.0, delay))
            except TimeoutError:
                continue
        await ws.close()


async def call(url: str, timeout: float = 20.0) -> Caller:
    """A caller past its handshake."""
    caller = Caller(url).start()
    await asyncio.wait_for(caller.handshaken.wait(), timeout)
    return caller


async def audio_after(caller: Caller, count: int, timeout: float = 20.0) -> None:
    """Until ``caller`` has had ``count`` more audio messages than now."""
    target = caller.audio + count
    deadline = time.monotonic() + timeout
    while caller.audio < target:
        assert time.monotonic() < deadline, f"{caller.audio} audio messages, not {target}"
        assert caller.task is not None and not caller.task.done(), caller
        await asyncio.sleep(0.02)


async def hang_up(*callers: Caller) -> None:
    for caller in callers:
        caller.hang_up.set()
    for caller in callers:
        await caller.ended(10.0)
