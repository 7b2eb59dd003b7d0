"""A real server with the tiny Hertz-dev model (random weights, 16 kHz, 125 ms frames) and real
WebSocket clients on each of its three protocols at once: Moshi's (Opus at 24 kHz, resampled),
raw PCM and the reference server's ``/audio``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from voicefleet.testing.clients import audio_session, moshi_session, pcm_session
from voicefleet.testing.runtime_process import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

SECONDS = 4.0
FRAME_SECONDS = 0.125


@pytest.fixture(scope="module")
def hertz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    server = start_server(
        tmp_path_factory.mktemp("hertz"),
        max_sessions=3,
        max_session_seconds=60,
        backend="hertz-tiny",
    )
    yield server
    server.stop()


async def test_three_protocols_at_once_in_real_time(hertz_server: RuntimeServer) -> None:
    query = "audio_temperature=0.6&categorical_temperature=9&text_temperature=0.5"
    moshi, pcm, audio = await asyncio.gather(
        moshi_session(f"{hertz_server.ws}/api/chat?{query}", SECONDS),
        pcm_session(f"{hertz_server.ws}/ws/pcm", SECONDS, rate=8_000, chunk_seconds=0.02),
        audio_session(f"{hertz_server.ws}/audio?token_temp=0.7", SECONDS),
    )
    # Moshi's protocol: handshake first, then the session notice with the backend's frame and
    # the sampling in force (Hertz-dev has no text temperature; 9 is clamped to 1.5).
    assert moshi.first_kind == 0x00
    info = moshi.metadata[0]
    assert info["frameMs"] == 125.0
    assert info["sampling"] == {
        "audioTemperature": 0.6,
        "categoricalTemperature": 1.5,
        "gaussianTemperature": 0.1,
    }
    assert not moshi.errors
    assert not moshi.texts, "Hertz-dev has no text stream"
    # Real time: most of what was streamed came back as audio, on every protocol.
    assert moshi.audio_samples >= 0.6 * SECONDS * 24_000, moshi
    assert pcm.notices[0]["frameMs"] == 125.0
    assert set(pcm.chunks) == {int(8_000 * FRAME_SECONDS) * 2}, "one message per 125 ms frame"
    assert len(pcm.chunks) >= 0.6 * SECONDS / FRAME_SECONDS
    assert not audio.not_audio, "the reference's clients decode every message as audio"
    assert set(audio.samples) == {2000}
    assert len(audio.samples) >= 0.6 * SECONDS / FRAME_SECONDS
    status = hertz_server.status()
    model = status["model"]
    assert isinstance(model, dict)
    assert model["backend"] == "hertz-tiny"
    assert model["frameSeconds"] == FRAME_SECONDS
    assert model["contextSteps"] == 60 * 8
    frame_ms = status["frameMs"]
    assert isinstance(frame_ms, dict)
    assert 0 < frame_ms["p95"] < 1000 * FRAME_SECONDS
    hertz_server.wait_idle()


async def test_audio_protocol_refuses_binary_in_its_close(hertz_server: RuntimeServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{hertz_server.ws}/audio") as ws:
        await ws.send_bytes(b"\x00\x01")
        messages = [message async for message in ws]
    assert ws.close_code == 1003
    assert all(m.type != aiohttp.WSMsgType.TEXT for m in messages), "no notice in the stream"
    hertz_server.wait_idle()
