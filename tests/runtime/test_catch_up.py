"""Input that arrives in a burst (a move's held audio, network jitter) must not become
lasting delay: the clock takes one frame a tick, so while more than one frame waits, quiet
frames at the head of the queue are skipped; frames with sound never are."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import numpy as np

from voicefleet import constants
from voicefleet.testing.clients import tone
from voicefleet.testing.runtime_process import RuntimeServer

RATE = constants.MOSHI_SAMPLE_RATE
FRAME = constants.MOSHI_FRAME_SAMPLES
BURST = 12  # frames sent at once, ahead of real time
AFTER = 25  # then this many in real time, while the backlog is taken down


def frames(audio: np.ndarray[Any, Any], count: int) -> list[bytes]:
    pcm16 = (audio[: count * FRAME] * 32767).astype("<i2")
    return [pcm16[i * FRAME : (i + 1) * FRAME].tobytes() for i in range(count)]


async def talk(server: RuntimeServer, sound: list[bytes]) -> int:
    """A burst, then real time; the audio frames heard back."""
    heard = 0
    url = f"{server.ws}{constants.PATH_PCM}?rate={RATE}"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:

        async def listen() -> None:
            nonlocal heard
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    heard += 1

        listener = asyncio.create_task(listen())
        for frame in sound[:BURST]:
            await ws.send_bytes(frame)
        started = time.monotonic()
        for index, frame in enumerate(sound[BURST:], start=1):
            await ws.send_bytes(frame)
            await asyncio.sleep(max(0.0, started + index * 0.08 - time.monotonic()))
        # Every frame sent has been stepped once as many came back as were sent (or fewer
        # were needed, when quiet ones were skipped): wait for the count that proves it.
        deadline = time.monotonic() + 10
        while heard < AFTER and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await ws.close()
        listener.cancel()
    return heard


async def test_a_quiet_burst_is_skipped_so_no_delay_lasts(shared_server: RuntimeServer) -> None:
    before = shared_server.metric("input_dropped_total", reason="catch_up")
    heard = await talk(shared_server, frames(np.zeros(FRAME * (BURST + AFTER)), BURST + AFTER))
    assert heard >= AFTER
    skipped = shared_server.metric("input_dropped_total", reason="catch_up") - before
    # The burst, but the frame stepped at each tick while it waited (more may go: a quiet
    # real-time frame that finds another waiting at its tick is skipped too).
    assert skipped >= BURST - 2, skipped


async def test_speech_in_a_burst_is_never_skipped(shared_server: RuntimeServer) -> None:
    before = shared_server.metric("input_dropped_total", reason="catch_up")
    heard = await talk(shared_server, frames(tone((BURST + AFTER) * 0.08, RATE), BURST + AFTER))
    assert heard >= AFTER
    assert shared_server.metric("input_dropped_total", reason="catch_up") == before
