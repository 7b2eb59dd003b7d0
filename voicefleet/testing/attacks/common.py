"""What every attack shares: its outcome, the snapshots it is judged by, and a caller
that streams beside it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import sphn

from voicefleet.testing.clients import FRAME_SAMPLES, SAMPLE_RATE, tone
from voicefleet.testing.polling import poll
from voicefleet.testing.runtime_process import RuntimeServer

PCM_RATE = 24_000
PCM_FRAME_BYTES = PCM_RATE * 2 * 8 // 100  # 80 ms of 16-bit samples
MAX_MESSAGE_BYTES = 64 * 1024  # runtime/protocol.py's bound on one client message
# The longest any attack waits for the server to act before calling it not contained.
GIVE_UP_SECONDS = 30.0


@dataclass
class Outcome:
    contained: bool
    how: str
    seconds: float | None = None
    close_code: int | None = None
    # sessions_ended_total reasons that went up while the attack ran
    ended: dict[str, float] = field(default_factory=dict)


Attack = Callable[[RuntimeServer], Awaitable[Outcome]]


async def eventually(predicate: Callable[[], Any], timeout: float) -> Any:
    """``predicate()``'s first truthy result within ``timeout``; it runs off the event loop,
    so the caller's own clients keep streaming meanwhile."""
    return await asyncio.to_thread(poll, predicate, timeout, 0.1)


def active(server: RuntimeServer) -> int:
    sessions = server.status()["sessions"]
    assert isinstance(sessions, dict)
    return int(sessions["active"])


def endings(server: RuntimeServer) -> dict[str, float]:
    prefix = "voicefleet_runtime_sessions_ended_total"
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in server.metrics().items()
        if name == prefix
    }


class Watch:
    """Snapshots taken when an attack starts, to tell what it changed."""

    def __init__(self, server: RuntimeServer) -> None:
        self.server = server
        self.started = time.monotonic()
        self.active = active(server)
        self._ended = endings(server)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def ended(self) -> dict[str, float]:
        now = endings(self.server)
        return {r: v - self._ended.get(r, 0.0) for r, v in now.items() if v > self._ended.get(r, 0)}

    async def slot_freed(self, timeout: float = GIVE_UP_SECONDS) -> bool:
        """Whether the sessions the attack opened are all gone again."""
        return bool(await eventually(lambda: active(self.server) <= self.active, timeout))

    async def ended_for(self, reason: str, timeout: float = GIVE_UP_SECONDS) -> float | None:
        """Seconds from the start until a session ended for ``reason``, or None."""
        if await eventually(lambda: reason in self.ended(), timeout):
            return self.elapsed()
        return None


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[str], int | None]:
    """(0x05 errors or JSON error notices, close code) once the server has closed."""
    errors: list[str] = []
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x05":
            errors.append(message.data[1:].decode(errors="replace"))
        elif message.type == aiohttp.WSMsgType.TEXT and '"error"' in message.data:
            errors.append(message.data)
    return errors, ws.close_code


async def closed_session(
    watch: Watch, reason: str, how: str, close_code: int | None = None
) -> Outcome:
    """The common ending: the session ended for ``reason`` and its slot is free."""
    seconds = await watch.ended_for(reason)
    freed = await watch.slot_freed()
    return Outcome(
        contained=seconds is not None and freed,
        how=how if seconds is not None else f"not ended for {reason}",
        seconds=seconds,
        close_code=close_code,
        ended=watch.ended(),
    )


async def open_caller(
    client: aiohttp.ClientSession, url: str
) -> tuple[aiohttp.ClientWebSocketResponse, int]:
    """A Moshi-protocol connection past its handshake, and its session id."""
    ws = await client.ws_connect(url)
    await ws.receive()  # the handshake
    info = json.loads((await ws.receive()).data[1:])
    return ws, int(info["sessionId"])


async def stream_opus(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> None:
    """A tone as Ogg/Opus in real time, one 80 ms frame at a time. Two seconds of it are
    looped (a whole number of frames and of cycles): computing minutes of samples up front
    would stall this caller's event loop, and a stalled caller stops answering pings."""
    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    loop = tone(2.0)
    frames = len(loop) // FRAME_SAMPLES
    started = time.monotonic()
    for index in range(int(seconds * SAMPLE_RATE) // FRAME_SAMPLES):
        at = (index % frames) * FRAME_SAMPLES
        ogg = writer.append_pcm(loop[at : at + FRAME_SAMPLES])
        if ogg:
            await ws.send_bytes(b"\x01" + ogg)
        await asyncio.sleep(max(0.0, started + (index + 1) * 0.08 - time.monotonic()))


def chat(server: RuntimeServer) -> str:
    return f"{server.ws}/api/chat"
