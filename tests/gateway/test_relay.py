"""Relaying through a real gateway process: SIGTERM keeps live conversations and refuses new
ones, the drain deadline closes what is left, and hostile callers are contained as the
runtime contains them without disturbing a conversation beside them."""

from __future__ import annotations

import asyncio
import itertools
import json
import zlib
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.callers import audio_after, call, hang_up
from tests.gateway.helpers import chat, gateway
from voicefleet.testing.attacks import eventually
from voicefleet.testing.attacks.common import MAX_MESSAGE_BYTES, PCM_RATE, read_until_closed
from voicefleet.testing.attacks.connections import stream_pcm
from voicefleet.testing.gateway_process import GatewayProcess, start_gateway
from voicefleet.testing.loopback import http
from voicefleet.testing.rawws import OP_BINARY, OP_CLOSE, RawClient, frame
from voicefleet.testing.runtime_process import RuntimeServer

pytestmark = pytest.mark.runtime

EXIT_OK = 0
HEADER_TIMEOUT_SECONDS = 2
# 12.5 audio messages a second: this many is two seconds of a conversation.
TWO_SECONDS = 25


def active(server: RuntimeServer) -> int:
    sessions = server.status()["sessions"]
    assert isinstance(sessions, dict)
    return int(sessions["active"])


async def never_reader_of(port: int) -> tuple[RawClient, asyncio.Task[None]]:
    """A PCM caller through the gateway that streams in real time and never reads a byte."""
    client = await RawClient.connect("127.0.0.1", port, receive_buffer=4096)
    assert await client.upgrade(f"/ws/pcm?rate={PCM_RATE}") == 101
    return client, asyncio.create_task(stream_pcm(client, 120.0))


async def exit_code(process: GatewayProcess, timeout: float) -> int:
    return await asyncio.to_thread(process.process.wait, timeout)


async def test_sigterm_keeps_the_live_conversation_and_refuses_new_ones(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    process = start_gateway(tmp_path, [server.http for server in backends])
    try:
        live = await call(chat(process))
        await audio_after(live, 5)
        process.terminate()
        assert await eventually(lambda: not process.ready(), 10)
        status, _, body = http("GET", f"{process.http}/api/chat")
        assert status == 503
        answer = json.loads(body)
        assert answer["reason"] == "draining" and "shutting down" in answer["error"]
        async with aiohttp.ClientSession() as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(chat(process))
        assert refused.value.status == 503

        # The conversation goes on, and the process with it, until the caller hangs up.
        await audio_after(live, TWO_SECONDS)
        assert process.process.poll() is None
        await hang_up(live)
        assert await exit_code(process, 10) == EXIT_OK
        assert not live.errors
    finally:
        process.stop()


async def test_drain_deadline_closes_what_is_left_and_exits(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    process = start_gateway(tmp_path, [server.http for server in backends], ("--drain-seconds=2",))
    try:
        live = await call(chat(process))
        await audio_after(live, 5)
        process.terminate()
        await live.ended(10)
        assert live.errors and "shutting down" in live.errors[0], live.errors
        assert (live.close_code, live.close_reason) == (1001, "gateway shutdown")
        assert await exit_code(process, 10) == EXIT_OK
        for server in backends:
            await asyncio.to_thread(server.wait_idle)
    finally:
        process.stop()


async def _protocol_abuse(url: str) -> tuple[list[str], int | None]:
    """Unknown kinds, stray handshakes, then a text frame the Moshi protocol does not take."""
    async with aiohttp.ClientSession() as client, client.ws_connect(url) as ws:
        await ws.receive()  # the handshake
        for junk in (b"\x09junk", b"\x06", b"\x03\xff", b"\x00\x00\x00", b"\x05x", b"\x04{["):
            await ws.send_bytes(junk)
        await ws.send_str("a text frame")
        return await read_until_closed(ws)


async def _message_of(url: str, size: int) -> tuple[list[str], int | None]:
    async with aiohttp.ClientSession() as client, client.ws_connect(url) as ws:
        await ws.receive()
        await ws.send_bytes(b"\x01" + bytes(size))
        return await read_until_closed(ws)


async def _raw(port: int, payload: bytes) -> bool:
    """Frames written by hand after the upgrade; whether the gateway then hangs up."""
    client = await RawClient.connect("127.0.0.1", port)
    try:
        assert await client.upgrade("/api/chat") == 101
        client.writer.write(payload)
        return await client.closed_by_server(30)
    finally:
        client.reset()


async def test_hostile_callers_are_contained_and_others_keep_their_audio(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    """Through the gateway: protocol abuse and a message over the runtime's bound get the
    runtime's own 0x05 and close 1003; a message over aiohttp's bound is refused by the
    gateway with 1009 before it is read whole; a compressed frame (never negotiated) and a
    burst of 5000 messages are cut off, and a connection that sends no request is closed after
    --header-timeout-seconds. A conversation beside them keeps its audio."""
    with gateway(
        tmp_path, backends, f"--header-timeout-seconds={HEADER_TIMEOUT_SECONDS}"
    ) as process:
        observer = await call(chat(process))
        await audio_after(observer, 5)
        during = len(observer.audio_at)
        silent = await RawClient.connect("127.0.0.1", process.port)

        errors, code = await _protocol_abuse(chat(process))
        assert code == 1003 and errors, (errors, code)
        errors, code = await _message_of(chat(process), MAX_MESSAGE_BYTES + 1000)
        assert code == 1003 and "at most" in errors[0], (errors, code)
        _, code = await _message_of(chat(process), 5 * MAX_MESSAGE_BYTES)
        assert code == 1009
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15).compress(bytes(10_000_000))
        compressed = bytearray(frame(OP_BINARY, bomb))
        compressed[0] |= 0x40  # RSV1: "compressed", which neither side agreed to
        assert await _raw(process.port, bytes(compressed))
        burst = b"".join(frame(OP_BINARY, b"\x01") for _ in range(5000))
        assert await _raw(process.port, burst + frame(OP_CLOSE, (1000).to_bytes(2, "big")))

        # A connection that never sends its request is closed and counted (slowloris).
        assert await silent.closed_by_server(HEADER_TIMEOUT_SECONDS + 10)
        silent.reset()
        assert process.metric("connections_timed_out_total") == 1
        # Every attacker's session is gone from the backends; the observer's stays.
        assert await eventually(lambda: sum(active(s) for s in backends) == 1, 20)
        assert await eventually(lambda: process.status()["active"] == 1, 10)
        await audio_after(observer, TWO_SECONDS)
        assert not observer.errors
        beats = observer.audio_at[during:]
        longest = max(b - a for a, b in itertools.pairwise(beats))
        # A tick is 80 ms; a shared 2-core machine may hold one back a few hundred ms more.
        assert longest < 1.0, longest
        await hang_up(observer)


async def test_caller_that_never_reads_is_dropped_through_the_gateway(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    """A PCM caller that streams but never reads: the runtime's lag probe, relayed as pings,
    sees it (too_slow) as it would directly, and the gateway lets go of both sockets, so the
    slot frees and the gateway holds nothing."""
    with gateway(tmp_path, backends) as process:
        before = sum(
            server.metric("sessions_ended_total", reason="too_slow") for server in backends
        )
        client, sending = await never_reader_of(process.port)
        try:
            assert await eventually(lambda: process.status()["active"] == 1, 10)
            assert await eventually(
                lambda: (
                    sum(
                        server.metric("sessions_ended_total", reason="too_slow")
                        for server in backends
                    )
                    > before
                ),
                30,
            )
            assert await eventually(lambda: process.status()["active"] == 0, 30)
            assert await eventually(lambda: sum(active(s) for s in backends) == 0, 10)
        finally:
            sending.cancel()
            client.reset()
