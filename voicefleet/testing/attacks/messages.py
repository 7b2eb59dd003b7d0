"""Attacks in what a caller sends: malformed and oversized messages, bombs, floods."""

from __future__ import annotations

import asyncio
import os
import time
import zlib

import aiohttp
import numpy as np
import sphn

from voicefleet.testing.attacks.common import (
    GIVE_UP_SECONDS,
    MAX_MESSAGE_BYTES,
    PCM_RATE,
    Outcome,
    Watch,
    chat,
    closed_session,
    read_until_closed,
)
from voicefleet.testing.clients import FRAME_SAMPLES, SAMPLE_RATE, tone
from voicefleet.testing.oggpages import SilentStream
from voicefleet.testing.rawws import OP_BINARY, OP_CLOSE, RawClient, frame
from voicefleet.testing.runtime_process import RuntimeServer


# --- protocol abuse ------------------------------------------------------------------------
async def protocol_abuse(server: RuntimeServer) -> Outcome:
    """Unknown kinds, stray handshakes, errors and metadata from the client, then a text frame
    (which the Moshi protocol does not take)."""
    watch = Watch(server)
    async with aiohttp.ClientSession() as client, client.ws_connect(chat(server)) as ws:
        await ws.receive()  # the handshake
        for junk in (b"\x09junk", b"\x06", b"\x03\xff", b"\x00\x00\x00", b"\x05x", b"\x04{["):
            await ws.send_bytes(junk)
        await ws.send_str("a text frame")
        _, code = await read_until_closed(ws)
    return await closed_session(watch, "bad_input", f"0x05 + close {code}", code)


async def malformed_opus(server: RuntimeServer) -> Outcome:
    watch = Watch(server)
    async with aiohttp.ClientSession() as client, client.ws_connect(chat(server)) as ws:
        await ws.receive()
        await ws.send_bytes(b"\x01not an ogg page" + os.urandom(2000))
        _, code = await read_until_closed(ws)
    return await closed_session(watch, "bad_input", f"0x05 + close {code}", code)


async def oversized_message(server: RuntimeServer) -> Outcome:
    """A message four times the runtime's bound: aiohttp refuses it (1009) before reading it
    whole."""
    watch = Watch(server)
    async with aiohttp.ClientSession() as client, client.ws_connect(chat(server)) as ws:
        await ws.receive()
        await ws.send_bytes(b"\x01" + bytes(5 * MAX_MESSAGE_BYTES))
        _, code = await read_until_closed(ws)
    freed = await watch.slot_freed()
    return Outcome(code == 1009 and freed, f"close {code}", watch.elapsed(), code, watch.ended())


async def deflate_bomb(server: RuntimeServer) -> Outcome:
    """A frame marked per-message-deflate (RSV1) that would inflate to 10 MB; the runtime
    never agrees to compression, so it is a protocol error at the frame's header."""
    watch = Watch(server)
    client = await RawClient.connect("127.0.0.1", server.port)
    try:
        assert await client.upgrade("/api/chat") == 101
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15).compress(bytes(10_000_000))
        raw = bytearray(frame(OP_BINARY, bomb))
        raw[0] |= 0x40  # RSV1: "compressed"
        client.writer.write(bytes(raw))
        closed = await client.closed_by_server(GIVE_UP_SECONDS)
    finally:
        client.reset()
    freed = await watch.slot_freed()
    return Outcome(closed and freed, "protocol error close", watch.elapsed(), None, watch.ended())


async def opus_bomb(server: RuntimeServer) -> Outcome:
    """Ogg pages packed with Opus packets: 64 KiB announcing about 50 s of audio. The budget
    refuses it from its headers, before any codec worker decodes it, and the session with it."""
    watch = Watch(server)
    stream = SilentStream()
    bomb = stream.pages_of(packets_per_page=64, count=19, seconds_per_packet=0.04)
    async with aiohttp.ClientSession() as client, client.ws_connect(chat(server)) as ws:
        await ws.receive()
        await ws.send_bytes(b"\x01" + stream.start)  # 2 s: the whole burst allowance
        await asyncio.sleep(2.5)  # refilled: the bomb is not dropped for want of budget
        watch.started = time.monotonic()
        await ws.send_bytes(b"\x01" + bomb)
        _, code = await read_until_closed(ws)
    return await closed_session(watch, "input_rate", f"close {code}, input_rate", code)


# --- floods and bursts -----------------------------------------------------------------------
async def burst_then_close(server: RuntimeServer) -> Outcome:
    """Issue 10, failure 3: 5000 one-byte audio messages, then a close."""
    watch = Watch(server)
    client = await RawClient.connect("127.0.0.1", server.port)
    try:
        assert await client.upgrade("/api/chat") == 101
        await client.read_frame()  # the handshake
        client.writer.write(b"".join(frame(OP_BINARY, b"\x01") for _ in range(5000)))
        await client.send(OP_CLOSE, (1000).to_bytes(2, "big"))
        closed = await client.closed_by_server(GIVE_UP_SECONDS)
    finally:
        client.reset()
    freed = await watch.slot_freed()
    return Outcome(closed and freed, "slot freed", watch.elapsed(), None, watch.ended())


async def flood(server: RuntimeServer, url: str, message: bytes) -> Outcome:
    """Send ``message`` as fast as the socket takes it until the server cuts the caller off."""
    watch = Watch(server)
    async with aiohttp.ClientSession() as client, client.ws_connect(url) as ws:
        while watch.elapsed() < GIVE_UP_SECONDS and not ws.closed:
            try:
                await ws.send_bytes(message)
            except ConnectionError:
                break
            await asyncio.sleep(0)  # other clients share this event loop
        # Behind a flood the close may come as a reset; the server's count says why.
        async for _ in ws:
            pass
    return await closed_session(watch, "input_rate", "closed, input_rate")


async def pcm_flood(server: RuntimeServer) -> Outcome:
    """Issue 10, failure 4: a PCM caller sending as fast as it can."""
    noise = np.random.default_rng(1).integers(-3000, 3000, 32_000).astype("<i2").tobytes()
    return await flood(server, f"{server.ws}/ws/pcm?rate={PCM_RATE}", noise)


async def opus_flood(server: RuntimeServer) -> Outcome:
    """Real Opus audio, as fast as the socket takes it."""
    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    audio = tone(2.0)
    pages = b"".join(
        writer.append_pcm(audio[i : i + FRAME_SAMPLES])
        for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES)
    )
    return await flood(server, chat(server), b"\x01" + pages[: MAX_MESSAGE_BYTES - 1])
