"""The move drill's callers, in a process of their own (so the drill's HTTP calls and waits
never stall the loop whose arrival times are measured): Moshi-protocol callers streaming
Ogg/Opus and ``/ws/pcm`` callers streaming 16 kHz PCM, each in real time (one 80 ms frame per
80 ms on a fixed schedule), each recording when every audio message arrived, the notices
and handshakes it saw, and whether and when its socket closed.

The parent sends ``stop`` through the pipe; the callers hang up and their records go back.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import sphn

from voicefleet import constants
from voicefleet.testing.clients import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, tone

MOSHI = "moshi"
PCM = "pcm"
PCM_RATE = 16_000
KIND_HANDSHAKE = 0x00
KIND_AUDIO = 0x01
KIND_METADATA = 0x04
KIND_ERROR = 0x05
CONNECT_SPACING_SECONDS = 0.15  # one new caller at a time, as callers arrive in life
HANDSHAKE_TIMEOUT_SECONDS = 30.0
_ENDS = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
         aiohttp.WSMsgType.ERROR)  # fmt: skip


@dataclass
class Heard:
    """What one caller saw, from its own side."""

    kind: str
    port: int = 0  # the caller's local port: the gateway's move log names it
    handshakes: int = 0
    audio_at: list[float] = field(default_factory=list)  # time.monotonic() of each message
    notices: list[str] = field(default_factory=list)  # the notices' "type"
    errors: list[str] = field(default_factory=list)
    closed_at: float | None = None  # the socket closed before the caller hung up
    close_code: int | None = None
    close_reason: str = ""


class Caller:
    def __init__(self, url: str, kind: str) -> None:
        self.url = url
        self.heard = Heard(kind)
        self.started = asyncio.Event()
        self.hang_up = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        heard = self.heard
        query = f"?rate={PCM_RATE}" if heard.kind == PCM else ""
        async with aiohttp.ClientSession() as http, http.ws_connect(self.url + query) as ws:
            sockname = ws.get_extra_info("sockname")
            heard.port = int(sockname[1]) if sockname else 0
            sending: asyncio.Task[None] | None = None
            try:
                while True:
                    message = await ws.receive()
                    if message.type is aiohttp.WSMsgType.CLOSE:
                        heard.close_reason = str(message.extra or "")
                    if message.type in _ENDS:
                        break
                    self._read(message)
                    if sending is None and self.started.is_set():
                        sending = asyncio.create_task(self._send(ws))
            finally:
                if not self.hang_up.is_set():
                    heard.closed_at = time.monotonic()
                    heard.close_code = ws.close_code
                if sending is not None:
                    sending.cancel()
                    await asyncio.gather(sending, return_exceptions=True)

    def _read(self, message: aiohttp.WSMessage) -> None:
        heard = self.heard
        if message.type is aiohttp.WSMsgType.TEXT:  # /ws/pcm notices
            self._notice(message.data)
            return
        if message.type is not aiohttp.WSMsgType.BINARY:
            return
        data: bytes = message.data
        if heard.kind == PCM:
            heard.audio_at.append(time.monotonic())
            return
        kind = data[0]
        if kind == KIND_AUDIO:
            heard.audio_at.append(time.monotonic())
        elif kind == KIND_HANDSHAKE:
            heard.handshakes += 1
            self.started.set()
        elif kind == KIND_METADATA:
            self._notice(data[1:])
        elif kind == KIND_ERROR:
            heard.errors.append(data[1:].decode(errors="replace"))

    def _notice(self, text: str | bytes) -> None:
        notice = json.loads(text)
        kind = str(notice.get("type"))
        if kind == "text":
            return  # /ws/pcm's transcript, not a notice
        self.heard.notices.append(kind)
        if kind == "session":
            if self.heard.kind == PCM:
                self.heard.handshakes += 1
            self.started.set()
        elif kind == "error":
            self.heard.errors.append(str(notice))

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A looped tone, one frame per frame's duration on a fixed schedule."""
        moshi = self.heard.kind == MOSHI
        rate = SAMPLE_RATE if moshi else PCM_RATE
        chunk = FRAME_SAMPLES if moshi else int(PCM_RATE * FRAME_SECONDS)
        loop = tone(2.0, rate)
        pcm16 = (loop * 32767).astype("<i2")
        writer = sphn.OpusStreamWriter(SAMPLE_RATE) if moshi else None
        frames = len(loop) // chunk
        started = time.monotonic()
        index = 0
        while not self.hang_up.is_set() and not ws.closed:
            at = (index % frames) * chunk
            if writer is not None:
                ogg = writer.append_pcm(loop[at : at + chunk])
                message = bytes([KIND_AUDIO]) + ogg if ogg else b""
            else:
                message = pcm16[at : at + chunk].tobytes()
            try:
                if message:
                    await ws.send_bytes(message)
            except ConnectionError:
                return  # cut: the reader records the close
            index += 1
            delay = started + index * FRAME_SECONDS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def stop(self) -> Heard:
        self.hang_up.set()
        if not self.task.done():
            await asyncio.sleep(0)  # the sender sees hang_up first
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return self.heard


async def _callers(base: str, kinds: list[str], conn: Connection) -> list[dict[str, Any]]:
    callers = []
    for kind in kinds:
        path = constants.PATH_MOSHI_CHAT if kind == MOSHI else constants.PATH_PCM
        caller = Caller(base + path, kind)
        callers.append(caller)
        await asyncio.wait_for(caller.started.wait(), HANDSHAKE_TIMEOUT_SECONDS)
        await asyncio.sleep(CONNECT_SPACING_SECONDS)
    conn.send(len(callers))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # the parent's stop
    return [asdict(await caller.stop()) for caller in callers]


def run_callers(base: str, kinds: list[str], conn: Connection) -> None:
    """The child process: start every caller in turn, report how many started, hold the
    conversations until told to stop, and send back what each one saw."""
    conn.send(asyncio.run(_callers(base, kinds, conn)))
    conn.close()
