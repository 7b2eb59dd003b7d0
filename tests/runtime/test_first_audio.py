"""Time to first audio on the join path (issue 11), with the tiny Hertz-dev model (125 ms
frames, audible from its first step) behind a real server whose every WebSocket upgrade takes
more than three frames while another conversation keeps the frame clock going.

The engine once stepped a slot from the moment it was claimed (before the upgrade): during a
slow upgrade its frames went to no session and were dropped, and the caller heard audio made
from silence before it had said anything. Now a slot is first stepped with its caller's first
frame, at the next tick: the first audio comes after the first input, within one frame and
one step of it, on the raw PCM protocol and on Moshi's (Ogg/Opus in 80 ms pages, which the
runtime regroups into 125 ms frames: the first page goes to the engine at once)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import aiohttp
import numpy as np
import pytest
import sphn

from tests.runtime.fault_server import ENV_UPGRADE_DELAY
from voicefleet.testing.clients import audio_session, tone
from voicefleet.testing.runtime_process import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

FRAME_SECONDS = 0.125
# Longer than three frames plus a step: the old engine stepped the claimed slot (and dropped
# what it made) at least twice before the session was registered.
UPGRADE_DELAY_SECONDS = 0.4
# The caller listens this long before it talks (reading the handshake, a greeting's pause).
LISTEN_SECONDS = 3 * FRAME_SECONDS
TALK_FRAMES = 8
# Loopback, the codec worker's round trips and the event loop of a 2-core machine shared with
# the test's own clients: what a first audio may take beyond one frame and one step.
SLACK_SECONDS = 0.1
MOSHI_RATE = 24_000
MOSHI_PAGE_SAMPLES = 1920  # the Moshi web client's 80 ms
PCM_RATE = 16_000


@pytest.fixture(scope="module")
def slow_upgrade_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    server = start_server(
        tmp_path_factory.mktemp("slow-upgrade"),
        max_sessions=2,
        max_session_seconds=60,
        backend="hertz-tiny",
        module="tests.runtime.fault_server",
        environment={ENV_UPGRADE_DELAY: str(UPGRADE_DELAY_SECONDS)},
    )
    yield server
    server.stop()


@dataclass
class FirstAudio:
    audio_before_input: int  # audio messages that came while the caller had sent nothing
    seconds_after_input: float | None  # from the first input frame sent to the first audio


Send = Callable[[aiohttp.ClientWebSocketResponse, int], Awaitable[None]]
IsAudio = Callable[[aiohttp.WSMessage], bool]


async def _listen_then_talk(url: str, send: Send, is_audio: IsAudio) -> FirstAudio:
    """Connect, listen for LISTEN_SECONDS, then send TALK_FRAMES frames in real time; when the
    first audio arrived, counted from the first frame sent."""
    result = FirstAudio(0, None)
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        listen_until = time.monotonic() + LISTEN_SECONDS
        while (left := listen_until - time.monotonic()) > 0:
            try:
                message = await ws.receive(timeout=left)
            except TimeoutError:
                break
            result.audio_before_input += is_audio(message)
        talked = time.monotonic()

        async def talk() -> None:
            for index in range(TALK_FRAMES):
                await send(ws, index)
                await asyncio.sleep(max(0.0, talked + (index + 1) * 0.08 - time.monotonic()))

        talking = asyncio.create_task(talk())
        try:
            while result.seconds_after_input is None:
                message = await ws.receive(timeout=TALK_FRAMES * FRAME_SECONDS)
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
                if is_audio(message):
                    result.seconds_after_input = time.monotonic() - talked
        finally:
            talking.cancel()
            await asyncio.gather(talking, return_exceptions=True)
    return result


def _pcm_client(url: str) -> Awaitable[FirstAudio]:
    pcm16 = (tone(TALK_FRAMES * 0.08, PCM_RATE) * 32767).astype("<i2")
    chunk = int(PCM_RATE * 0.08)

    async def send(ws: aiohttp.ClientWebSocketResponse, index: int) -> None:
        await ws.send_bytes(pcm16[index * chunk : (index + 1) * chunk].tobytes())

    def is_audio(message: aiohttp.WSMessage) -> bool:
        return message.type == aiohttp.WSMsgType.BINARY

    return _listen_then_talk(f"{url}/ws/pcm?rate={PCM_RATE}", send, is_audio)


def _moshi_client(url: str) -> Awaitable[FirstAudio]:
    writer = sphn.OpusStreamWriter(MOSHI_RATE)
    audio = tone(TALK_FRAMES * 0.08, MOSHI_RATE)

    async def send(ws: aiohttp.ClientWebSocketResponse, index: int) -> None:
        page = audio[index * MOSHI_PAGE_SAMPLES : (index + 1) * MOSHI_PAGE_SAMPLES]
        await ws.send_bytes(b"\x01" + writer.append_pcm(np.ascontiguousarray(page)))

    def is_audio(message: aiohttp.WSMessage) -> bool:
        return message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x01"

    return _listen_then_talk(f"{url}/api/chat", send, is_audio)


@pytest.mark.parametrize("client", [_pcm_client, _moshi_client], ids=["pcm", "moshi"])
async def test_first_audio_within_a_frame_and_a_step_of_the_first_input(
    slow_upgrade_server: RuntimeServer, client: Callable[[str], Awaitable[FirstAudio]]
) -> None:
    server = slow_upgrade_server
    # Another conversation keeps the frame clock ticking, as on a busy server: a join lands
    # anywhere between two ticks.
    other = asyncio.create_task(audio_session(f"{server.ws}/audio", 4.0))
    try:
        first = await client(server.ws)
    finally:
        await other
    status = server.status()
    step_seconds = float(status["frameMs"]["p95"]) / 1000.0  # type: ignore[index]
    assert first.audio_before_input == 0, "audio made before the caller sent anything"
    assert first.seconds_after_input is not None, "no audio came back"
    assert first.seconds_after_input <= FRAME_SECONDS + step_seconds + SLACK_SECONDS, (
        f"first audio {first.seconds_after_input * 1000:.0f} ms after the first input "
        f"(one frame {FRAME_SECONDS * 1000:.0f} ms, one step p95 {step_seconds * 1000:.0f} ms)"
    )
