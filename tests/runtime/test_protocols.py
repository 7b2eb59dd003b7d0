"""The Moshi protocol and the PCM protocol through real WebSocket clients, several sessions
at once, against a real server process with the tiny backend."""

from __future__ import annotations

import asyncio
import struct

import aiohttp
import pytest

from tests.runtime import kyutai_schema
from voicefleet.testing import polling
from voicefleet.testing.clients import FRAME_SECONDS, moshi_session, pcm_session
from voicefleet.testing.runtime_process import RuntimeServer

pytestmark = pytest.mark.runtime

SECONDS = 3.0


async def test_concurrent_moshi_sessions_exchange_opus(shared_server: RuntimeServer) -> None:
    url = f"{shared_server.ws}/api/chat?text_temperature=0.5&audio_topk=99999"
    transcripts = await asyncio.gather(*(moshi_session(url, SECONDS) for _ in range(3)))
    for transcript in transcripts:
        # The handshake comes first: kind 0x00, protocol version 0, model version.
        assert transcript.first_kind == 0x00
        assert struct.unpack("<II", transcript.handshake[1:9]) == (0, 0)
        info = transcript.metadata[0]
        assert info["type"] == "session"
        assert info["sampling"] == {"textTemperature": 0.5, "audioTopk": 2048.0}
        # In the layout Kyutai's web client accepts, with the settings in force.
        assert kyutai_schema.problems(info) == []
        assert info["text_temperature"] == 0.5 and info["audio_topk"] == 2048
        # Audio came back as Ogg/Opus that decodes: at least a second of the 3 s sent, even
        # when other work slows this machine down.
        assert transcript.audio_samples >= 24_000, transcript
        assert transcript.texts, "the tiny model's text pieces arrive as 0x02"
        assert not transcript.errors
    shared_server.wait_idle()


async def test_web_client_pattern_of_20ms_opus_frames(shared_server: RuntimeServer) -> None:
    """Kyutai's web client records 20 ms Opus frames; the server regroups them into 80 ms."""
    transcript = await moshi_session(f"{shared_server.ws}/api/chat", SECONDS, frame_samples=480)
    assert transcript.first_kind == 0x00
    assert transcript.audio_samples >= 24_000
    assert not transcript.errors
    shared_server.wait_idle()


async def test_pcm_session_at_16khz(shared_server: RuntimeServer) -> None:
    transcript = await pcm_session(f"{shared_server.ws}/ws/pcm", SECONDS, rate=16_000)
    assert transcript.notices[0]["type"] == "session"
    assert transcript.notices[0]["sampleRate"] == 16_000
    # One binary message per 80 ms frame, 16-bit samples at the caller's rate.
    frame_bytes = int(16_000 * FRAME_SECONDS) * 2
    assert transcript.chunks, "no audio came back"
    assert set(transcript.chunks) == {frame_bytes}
    assert len(transcript.chunks) >= 12  # a second of audio at least
    shared_server.wait_idle()


async def test_pcm_rejects_unknown_rate(shared_server: RuntimeServer) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{shared_server.ws}/ws/pcm?rate=44100")
    assert refused.value.status == 400


async def test_full_server_refuses_before_upgrade(shared_server: RuntimeServer) -> None:
    stop = asyncio.Event()
    url = f"{shared_server.ws}/api/chat"
    holders = [asyncio.create_task(moshi_session(url, 30, stop=stop)) for _ in range(3)]
    try:
        await polling.until(
            lambda: shared_server.status()["sessions"] == {"active": 3, "capacity": 3}, 30, 0.1
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{shared_server.http}/readyz") as ready:
                assert ready.status == 503
                assert (await ready.json())["reason"] == "full"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url)
        assert refused.value.status == 503
        assert refused.value.headers is not None
        assert refused.value.headers["Retry-After"] == "1"
    finally:
        stop.set()
        await asyncio.gather(*holders)
    shared_server.wait_idle()


async def test_bad_input_ends_only_that_session(shared_server: RuntimeServer) -> None:
    url = f"{shared_server.ws}/api/chat"
    good = asyncio.create_task(moshi_session(url, SECONDS))
    # The good session counted active first, so the bad one runs beside it.
    await polling.until(
        lambda: shared_server.status()["sessions"] == {"active": 1, "capacity": 3}, 30, 0.05
    )
    # Unknown kinds (0x09) and a ping (0x06) are ignored; then audio that is not Ogg/Opus
    # gets this session an error and a close.
    bad = await moshi_session(
        url, SECONDS, extra_messages=[b"\x09hello", b"\x06", b"\x01not an ogg page at all"]
    )
    assert bad.errors and "Ogg" in bad.errors[0]
    assert bad.close_code == 1003
    healthy = await good
    assert not healthy.errors
    assert healthy.audio_samples >= 24_000
    # The good session kept receiving audio after the bad one was closed.
    assert healthy.audio_messages_after[-1] > 2.0
    shared_server.wait_idle()


async def test_oversized_and_text_messages_are_errors(shared_server: RuntimeServer) -> None:
    url = f"{shared_server.ws}/api/chat"
    big = await moshi_session(url, 1.0, extra_messages=[b"\x01" + bytes(200_000)])
    assert big.close_code is not None
    assert big.close_code != 1000
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str("hello")
        kinds = [
            message.data[0] async for message in ws if message.type == aiohttp.WSMsgType.BINARY
        ]
    assert kinds[-1] == 0x05
    shared_server.wait_idle()
