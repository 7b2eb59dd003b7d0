"""The runtime's parts that can die (issue 10, failure 1), each killed for real: a codec worker
process by SIGKILL, as an OOM kill would; the engine thread by a fault in its step (an error,
or a step that never returns). Live sessions get an error and a close, the pod serves again
or fails its liveness probe, and nothing waits forever."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.runtime.fault_server import ENV_FAULT, FAULT_HANG, FAULT_RAISE
from tests.runtime.test_hostile import SLACK_SECONDS
from voicefleet.testing import attacks
from voicefleet.testing.attacks import eventually
from voicefleet.testing.clients import MoshiTranscript, moshi_session
from voicefleet.testing.loopback import http
from voicefleet.testing.runtime_process import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

# The bound: a pod that lost a part serves new sessions again within this.
RECOVERY_SECONDS = 10.0
# The engine's watchdog bound (ENGINE_STALL_SECONDS in runtime/supervisor.py).
ENGINE_STALL_SECONDS = 10.0
CLOSE_INTERNAL_ERROR = 1011


async def start_streaming(server: RuntimeServer) -> asyncio.Task[MoshiTranscript]:
    """A live conversation, once audio is flowing back to it."""
    live = asyncio.create_task(moshi_session(f"{server.ws}/api/chat", 60.0))
    assert await eventually(lambda: server.metric("time_to_first_audio_seconds_count") >= 1, 30)
    return live


async def test_killed_codec_worker_is_replaced(tmp_path: Path) -> None:
    drain = 5
    server = start_server(tmp_path, max_sessions=2, max_session_seconds=60, drain_seconds=drain)
    try:
        [worker] = server.codec_worker_pids()
        # SIGKILL under a live conversation: it lost its Opus state, is told so and closed
        # (1011), and a new caller is served (audio back) by a new worker within the bound.
        outcome = await attacks.codec_worker_killed(server)
        assert outcome.contained, outcome
        assert outcome.close_code == CLOSE_INTERNAL_ERROR
        assert outcome.seconds is not None
        assert outcome.seconds < RECOVERY_SECONDS
        assert outcome.ended == {"codec_failure": 1.0, "client_closed": 1.0}
        [replacement] = server.codec_worker_pids()
        assert replacement != worker
        assert http("GET", f"{server.http}/healthz")[0] == 200
        assert server.metric("codec_worker_restarts_total") == 1

        # And the pod still stops within its grace period (drain + 30 s).
        server.process.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        assert await asyncio.to_thread(server.process.wait, drain + 30) == 0
        assert time.monotonic() - terminated < drain + SLACK_SECONDS
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("fault", "within"), [(FAULT_RAISE, SLACK_SECONDS), (FAULT_HANG, ENGINE_STALL_SECONDS)]
)
async def test_failed_engine_ends_sessions_and_fails_liveness(
    tmp_path: Path, fault: str, within: float
) -> None:
    """The engine cannot be restarted in place (its GPU state is suspect), so the process
    answers /healthz with 500, tells every caller, and exits 1 for the kubelet to restart."""
    server = start_server(
        tmp_path,
        max_sessions=2,
        max_session_seconds=60,
        module="tests.runtime.fault_server",
        environment={ENV_FAULT: fault},
    )
    try:
        live = await start_streaming(server)
        server.process.send_signal(signal.SIGUSR2)
        tripped = time.monotonic()

        def unhealthy() -> bool:
            try:
                return http("GET", f"{server.http}/healthz")[0] == 500
            except OSError:
                return True  # stopped listening: the liveness probe fails just the same

        assert await eventually(unhealthy, within + SLACK_SECONDS)
        assert time.monotonic() - tripped < within + SLACK_SECONDS
        transcript = await asyncio.wait_for(live, SLACK_SECONDS)
        assert any("engine" in error for error in transcript.errors), transcript.errors
        assert transcript.close_code == CLOSE_INTERNAL_ERROR
        # It exits for the kubelet to restart it, well within the stop backstop (15 s).
        assert await asyncio.to_thread(server.process.wait, 15) == 1
    finally:
        server.stop()
