"""Control endpoints, metrics, the session time limit and both ways of draining, each
against its own server process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import sphn
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime import kyutai_schema
from tests.runtime.conftest import TOKEN
from voicefleet.api.runtime import RuntimeStatus
from voicefleet.testing.attacks import active, eventually
from voicefleet.testing.clients import moshi_session, tone
from voicefleet.testing.loopback import free_port, http
from voicefleet.testing.runtime_process import RuntimeServer, start_server

pytestmark = pytest.mark.runtime


async def test_status_and_metrics(shared_server: RuntimeServer) -> None:
    await moshi_session(f"{shared_server.ws}/api/chat", 2.0)
    shared_server.wait_idle()
    code, _, body = http("GET", f"{shared_server.http}/v1/status")
    assert code == 200
    status = RuntimeStatus.model_validate_json(body)
    assert status.sessions.capacity == 3
    assert status.model.backend == "tiny"
    assert status.model.context_steps == 750  # 60 s at 12.5 frames per second
    assert status.frame_ms.p50 > 0
    assert status.gpu.available is False

    code, headers, body = http("GET", f"{shared_server.http}/metrics")
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    prefix = "voicefleet_runtime_"
    for name in (
        "sessions_active",
        "sessions_capacity",
        "sessions_started",
        "sessions_ended",
        "frame_step_seconds",
        "late_frames",
        "time_to_first_audio_seconds",
        "queue_drops",
        "model_load_seconds",
    ):
        assert prefix + name in families, name
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples[(prefix + "sessions_capacity", ())] == 3
    assert samples[(prefix + "sessions_started_total", (("protocol", "moshi"),))] >= 1
    assert samples[(prefix + "frame_step_seconds_count", ())] > 0
    assert samples[(prefix + "time_to_first_audio_seconds_count", ())] >= 1
    # No GPU here: the GPU gauges are absent rather than zero.
    assert prefix + "gpu_memory_used_bytes" not in families


async def test_session_limit_sends_notice_then_closes(tmp_path: Path) -> None:
    server = start_server(tmp_path, max_sessions=1, max_session_seconds=2)
    try:
        transcript = await moshi_session(f"{server.ws}/api/chat", 6.0)
        (notice,) = [m for m in transcript.metadata if m["type"] == "session_limit"]
        assert notice["maxSessionSeconds"] == 2
        assert kyutai_schema.problems(notice) == []
        assert transcript.close_code == 1000
        # Without a pool token the drain endpoint refuses: only SIGTERM drains.
        code, _, _ = http("POST", f"{server.http}/v1/drain", {"deadlineSeconds": 5}, TOKEN)
        assert code == 403
    finally:
        server.stop()


async def test_drain_endpoint(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        max_sessions=2,
        max_session_seconds=60,
        token=TOKEN,
        reconnect_url="wss://voice.example/api/chat",
    )
    try:
        live = asyncio.create_task(moshi_session(f"{server.ws}/api/chat", 20.0))
        assert await eventually(lambda: active(server) == 1, 60), "the session never started"
        body = {"deadlineSeconds": 2, "reason": "spot interruption"}
        assert http("POST", f"{server.http}/v1/drain", body, "wrong")[0] == 401
        assert http("POST", f"{server.http}/v1/drain", body)[0] == 401
        assert http("GET", f"{server.http}/readyz")[0] == 200
        code, _, answer = http("POST", f"{server.http}/v1/drain", body, TOKEN)
        assert code == 200
        assert json.loads(answer)["draining"] is True
        assert http("GET", f"{server.http}/readyz")[0] == 503
        # New callers are refused while draining.
        code, _, _ = http("GET", f"{server.http}/api/chat")
        assert code == 503
        transcript = await asyncio.wait_for(live, 15)
        drains = [m for m in transcript.metadata if m["type"] == "drain"]
        assert drains and drains[0]["reconnect"] == "wss://voice.example/api/chat"
        assert kyutai_schema.problems(drains[0]) == []  # Kyutai's web client takes it too
        assert 0 <= drains[0]["deadlineSeconds"] <= 2
        assert transcript.close_code == 1001  # closed at the deadline, 18 s early
        # Drained by the endpoint: the process stays up and unready until terminated (asked
        # once the server has counted the slot free: the drain is over by then).
        assert await eventually(lambda: active(server) == 0, 30)
        assert server.process.poll() is None
        status = server.status()
        assert status["draining"] is True
        assert status["sessions"] == {"active": 0, "capacity": 2}
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(20) == 0
    finally:
        server.stop()


async def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    server = start_server(tmp_path, max_sessions=2, max_session_seconds=60, drain_seconds=30)
    try:
        stop = asyncio.Event()
        live = asyncio.create_task(moshi_session(f"{server.ws}/api/chat", 20.0, stop=stop))
        assert await eventually(lambda: active(server) == 1, 60), "the session never started"
        server.process.send_signal(signal.SIGTERM)
        # Once the server shows it took the signal (unready), the live session holds it up.
        assert await eventually(lambda: http("GET", f"{server.http}/readyz")[0] == 503, 30)
        assert server.process.poll() is None, "a live session holds the process up"
        stop.set()  # the caller hangs up, as told
        transcript = await asyncio.wait_for(live, 15)
        assert any(m["type"] == "drain" for m in transcript.metadata)
        assert await asyncio.to_thread(server.process.wait, 20) == 0
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--backend=moshi", "--weights=/nonexistent/moshi"], "no such directory"),
        (["--backend=moshi", "--weights=/"], "model.safetensors is missing"),
        (["--backend=hertz-dev", "--weights=/nonexistent/hertz"], "no such directory"),
        (["--backend=hertz-dev", "--max-session-seconds=300"], "lower --max-session-seconds"),
    ],
)
def test_load_errors_fail_at_start_and_say_what_to_change(
    arguments: list[str], expected: str
) -> None:
    command = [
        sys.executable,
        "-m",
        "voicefleet",
        "runtime",
        "serve",
        "--host=127.0.0.1",
        f"--port={free_port()}",
        "--device=cpu",
        "--codec-workers=0",
        *arguments,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr


async def test_bursty_input_is_dropped_and_counted(shared_server: RuntimeServer) -> None:
    """A caller that sends seconds of audio at once keeps what fits its input budget (2 s
    ahead of real time) and loses the rest, counted; a caller streaming in real time beside
    it is unaffected."""
    url = f"{shared_server.ws}/api/chat"
    dropped_before = shared_server.metric("input_dropped_total", reason="rate")
    steady = asyncio.create_task(moshi_session(url, 3.0))
    writer = sphn.OpusStreamWriter(24_000)
    burst = tone(8.0)
    async with aiohttp.ClientSession() as client, client.ws_connect(url) as ws:
        for index in range(len(burst) // 1920):
            ogg = writer.append_pcm(burst[index * 1920 : (index + 1) * 1920])
            if ogg:
                await ws.send_bytes(b"\x01" + ogg)
        # Once the server has counted the burst's drops, the session is still open: a burst,
        # not a flood.
        assert await eventually(
            lambda: shared_server.metric("input_dropped_total", reason="rate") > dropped_before,
            30,
        )
        assert not ws.closed
    healthy = await steady
    assert healthy.audio_samples >= 24_000
    assert not healthy.errors
    # 8 s arrived at once against a 2 s budget: most of 6 s of messages were dropped.
    dropped = shared_server.metric("input_dropped_total", reason="rate") - dropped_before
    assert dropped >= 20, dropped
    shared_server.wait_idle()
