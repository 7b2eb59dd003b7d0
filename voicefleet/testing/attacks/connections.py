"""Slow, silent and half-open callers: connections that hold a slot without talking."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from voicefleet.testing.attacks.common import (
    GIVE_UP_SECONDS,
    PCM_FRAME_BYTES,
    PCM_RATE,
    Outcome,
    Watch,
    chat,
    closed_session,
    read_until_closed,
)
from voicefleet.testing.rawws import OP_BINARY, RawClient
from voicefleet.testing.runtime_process import RuntimeServer


# --- slow, silent and half-open callers --------------------------------------------------------
async def stream_pcm(client: RawClient, seconds: float) -> None:
    """Real-time 24 kHz PCM, 80 ms a message, until done or the server hangs up."""
    silence = bytes(PCM_FRAME_BYTES)
    started = time.monotonic()
    for index in range(int(seconds / 0.08)):
        try:
            await client.send(OP_BINARY, silence)
        except ConnectionError:
            return
        await asyncio.sleep(max(0.0, started + (index + 1) * 0.08 - time.monotonic()))


async def never_reader(server: RuntimeServer) -> tuple[RawClient, asyncio.Task[None]]:
    """A PCM caller that streams in real time and never reads a byte of the answer."""
    client = await RawClient.connect("127.0.0.1", server.port, receive_buffer=4096)
    assert await client.upgrade(f"/ws/pcm?rate={PCM_RATE}") == 101
    return client, asyncio.create_task(stream_pcm(client, 120.0))


async def never_reads(server: RuntimeServer) -> Outcome:
    """Issue 10, failure 2: streams audio, never reads the answer."""
    watch = Watch(server)
    client, sending = await never_reader(server)
    try:
        return await closed_session(watch, "too_slow", "dropped, too_slow")
    finally:
        sending.cancel()
        client.reset()


async def half_open(server: RuntimeServer) -> Outcome:
    """Upgrades, then neither reads nor sends nor closes: a phone that lost its network."""
    watch = Watch(server)
    client = await RawClient.connect("127.0.0.1", server.port, receive_buffer=4096)
    try:
        assert await client.upgrade("/api/chat") == 101
        return await closed_session(watch, "too_slow", "dropped, too_slow (no pong)")
    finally:
        client.reset()


async def silent_session(server: RuntimeServer) -> Outcome:
    """Issue 10, failure 7: answers pings, sends no audio."""
    watch = Watch(server)
    async with aiohttp.ClientSession() as client, client.ws_connect(chat(server)) as ws:
        errors, code = await read_until_closed(ws)  # reading answers the pings
    outcome = await closed_session(watch, "idle", f"0x05 + close {code}, idle", code)
    outcome.contained = outcome.contained and any("no audio" in e for e in errors)
    return outcome


async def slowloris(server: RuntimeServer, connections: int = 20) -> Outcome:
    """Issue 10, failure 7: connections that send nothing, or a request line a byte at a time."""
    before = server.metric("connections_timed_out_total")
    started = time.monotonic()
    clients = [await RawClient.connect("127.0.0.1", server.port) for _ in range(connections)]

    async def dribble(client: RawClient) -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            client.writer.write(bytes([byte]))
            await asyncio.sleep(0.3)

    dribbling = [asyncio.create_task(dribble(c)) for c in clients[::2]]
    try:
        closed = await asyncio.gather(*(c.closed_by_server(GIVE_UP_SECONDS) for c in clients))
        seconds = time.monotonic() - started
    finally:
        for task in dribbling:
            task.cancel()
        for client in clients:
            client.reset()
    counted = server.metric("connections_timed_out_total") - before
    return Outcome(
        all(closed) and counted >= connections,
        f"{sum(closed)}/{connections} closed, {counted:.0f} counted",
        seconds,
    )
