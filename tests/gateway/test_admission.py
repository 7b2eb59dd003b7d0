"""Admission through a real gateway process in front of real runtime processes (the tiny
model, two slots each): where conversations go, how a full pool queues callers with their
handshake delayed, the queue's bounds, and backends that die or drain."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.callers import Caller, audio_after, call, hang_up
from tests.gateway.conftest import SLOTS, TOKEN
from tests.gateway.helpers import chat, gateway, queued, started
from voicefleet.testing.attacks import eventually
from voicefleet.testing.clients import audio_session, moshi_session, pcm_session
from voicefleet.testing.loopback import http
from voicefleet.testing.runtime_process import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

# Longer than any wait below: what happens sooner cannot have come from a status poll.
SLOW_POLL = ("--poll-seconds=30",)
CLOSE_TRY_AGAIN_LATER = 1013


async def test_conversations_spread_over_both_backends_on_every_protocol(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    """Two conversations at once go one to each backend (the most free slots first); the
    handshake comes first, audio flows, the PCM rate in the query string reaches the
    runtime, and Hertz-dev's /audio is relayed too."""
    before = [started(server) for server in backends]
    with gateway(tmp_path, backends) as process:
        transcripts = await asyncio.gather(
            moshi_session(chat(process), 2.0), moshi_session(chat(process), 2.0)
        )
        for transcript in transcripts:
            assert transcript.first_kind == 0x00
            assert not transcript.errors
            assert transcript.audio_samples >= 24_000
        assert [started(server) - b for server, b in zip(backends, before, strict=True)] == [1, 1]
        for server in backends:
            assert process.metric("conversations_relayed_total", backend=server.http) == 1

        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(chat(process), compress=15) as offered,
        ):
            assert offered.compress == 0  # permessage-deflate offered, not agreed
        pcm = await pcm_session(f"{process.ws}/ws/pcm", 1.5, 16_000)
        # 80 ms at 16 kHz, 16-bit: the rate was passed on.
        assert pcm.chunks and set(pcm.chunks) == {2560}, pcm.chunks[:5]
        assert pcm.notices[0]["sampleRate"] == 16_000
        audio = await audio_session(f"{process.ws}/audio", 1.5)
        assert audio.samples and not audio.not_audio
        assert process.metric("relay_latency_seconds_count", direction="up") > 0
        assert process.metric("relay_latency_seconds_count", direction="down") > 0


async def test_full_pool_delays_the_handshake_and_admits_in_order(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    """With every slot taken, callers are upgraded but get no handshake; each is admitted,
    first come first served, as soon as a conversation ends, far sooner than a poll."""
    with gateway(tmp_path, backends, *SLOW_POLL) as process:
        holders = [await call(chat(process)) for _ in range(2 * SLOTS)]
        first = Caller(chat(process)).start()
        await asyncio.wait_for(first.upgraded.wait(), 10)
        await queued(process, 1)
        second = Caller(chat(process)).start()
        await asyncio.wait_for(second.upgraded.wait(), 10)
        await queued(process, 2)
        # Held: the holders' audio goes on (counted), and no byte reached the queued callers.
        await audio_after(holders[0], 12)
        assert (first.first_kind, second.first_kind) == (None, None)

        await hang_up(holders[0])
        ended_at = time.monotonic()
        await asyncio.wait_for(first.handshaken.wait(), 10)
        assert first.handshake_at is not None
        assert first.handshake_at - ended_at < 2.5, "admitted by a poll, not by the end"
        assert first.first_kind == 0x00
        await queued(process, 1)
        assert not second.handshaken.is_set()
        await audio_after(first, 5)

        await hang_up(holders[1])
        await asyncio.wait_for(second.handshaken.wait(), 10)
        await audio_after(second, 5)
        assert process.metric("queue_wait_seconds_count") == 2 * SLOTS + 2
        await hang_up(*holders[2:], first, second)


async def test_queue_bound_and_wait_give_a_clear_error(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    """A caller past --queue-max, and one whose --queue-wait-seconds run out, each get a
    0x05 error saying the pool is full and a close 1013 with a reason; on /ws/pcm the error
    is the runtime's JSON notice."""
    wait = 2.0
    with gateway(tmp_path, backends, "--queue-max=1", f"--queue-wait-seconds={wait:g}") as process:
        holders = [await call(chat(process)) for _ in range(2 * SLOTS)]
        queued_at = time.monotonic()  # before it can have joined the queue
        waiting = Caller(chat(process)).start()
        await queued(process, 1)

        over = Caller(chat(process)).start()
        await over.ended(10)
        assert over.first_kind == 0x05
        assert len(over.errors) == 1 and "pool is full" in over.errors[0], over.errors
        assert "1 callers are already waiting" in over.errors[0]
        assert (over.close_code, over.close_reason) == (
            CLOSE_TRY_AGAIN_LATER,
            "pool full, queue full",
        )

        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(f"{process.ws}/ws/pcm?rate=16000") as pcm,
        ):
            notice = await pcm.receive_json(timeout=10)
            assert notice["type"] == "error" and "pool is full" in notice["message"]
            assert (await pcm.receive(timeout=10)).type is aiohttp.WSMsgType.CLOSE
            assert pcm.close_code == CLOSE_TRY_AGAIN_LATER

        await waiting.ended(wait + 10)
        assert time.monotonic() - queued_at >= wait
        assert waiting.first_kind == 0x05 and not waiting.handshaken.is_set()
        assert f"within {wait:g} s" in waiting.errors[0], waiting.errors
        assert waiting.close_code == CLOSE_TRY_AGAIN_LATER
        assert waiting.close_reason == "pool full, no slot in time"
        assert process.metric("refusals_total", reason="queue_full") == 2
        assert process.metric("refusals_total", reason="queue_timeout") == 1
        assert process.status()["queue"]["length"] == 0
        await hang_up(*holders)


async def test_killed_backend_leaves_rotation_and_new_conversations_go_elsewhere(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    """A backend SIGKILLed mid-conversation: its caller is told and closed (1011), the next
    conversation tried on it finds it gone, marks it and goes to the other at once (no poll
    in between), and it stays out of rotation."""
    other = backends[0]
    doomed = start_server(tmp_path, max_sessions=SLOTS, max_session_seconds=60)
    # One conversation straight to the other backend: the doomed one has more free slots.
    direct = await call(f"{other.ws}/api/chat")
    try:
        with gateway(tmp_path, [doomed, other], *SLOW_POLL) as process:
            victim = await call(chat(process))
            await audio_after(victim, 5)
            assert process.backend(doomed.http)["relaying"] == 1
            os.kill(doomed.process.pid, signal.SIGKILL)
            await victim.ended(10)
            assert victim.close_code == 1011
            assert victim.errors and "went away" in victim.errors[0]

            before = started(other)
            survivor = await call(chat(process))
            await audio_after(survivor, 5)
            assert started(other) == before + 1
            assert (
                process.metric("backend_refusals_total", backend=doomed.http, reason="unreachable")
                == 1
            )
            view = process.backend(doomed.http)
            assert not view["inRotation"] and view["lastError"]
            assert process.metric("conversations_ended_total", reason="backend_lost") == 1
            await hang_up(survivor)
    finally:
        await hang_up(direct)
        doomed.stop()


async def test_draining_backend_gets_no_new_conversations(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    """A backend drained by POST /v1/drain refuses the next conversation offered to it; the
    gateway takes it to the other backend at once, learns the drain from the re-poll, and
    offers the draining backend nobody after."""
    other = backends[0]
    draining = start_server(tmp_path, max_sessions=SLOTS, max_session_seconds=60, token=TOKEN)
    direct = await call(f"{other.ws}/api/chat")
    try:
        with gateway(tmp_path, [draining, other], *SLOW_POLL) as process:
            status, _, body = http(
                "POST", f"{draining.http}/v1/drain", {"deadlineSeconds": 30}, token=TOKEN
            )
            assert status == 200, body
            before = started(other)
            moved = await call(chat(process))
            assert started(other) == before + 1
            assert started(draining) == 0
            refusals = process.metric(
                "backend_refusals_total", backend=draining.http, reason="unavailable"
            )
            assert refusals == 1
            assert await eventually(lambda: process.backend(draining.http)["draining"], 5)

            # A relayed conversation ends: its slot is free in the gateway's books at once.
            await hang_up(moved)
            later = await call(chat(process))
            assert started(other) == before + 2
            assert started(draining) == 0
            assert (
                process.metric(
                    "backend_refusals_total", backend=draining.http, reason="unavailable"
                )
                == refusals
            )
            await hang_up(later)
    finally:
        await hang_up(direct)
        draining.stop()
