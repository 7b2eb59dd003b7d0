"""Hostile callers against a real runtime process (issue 10's failures 2-7): callers that never
read, flood, burst and leave, hang up mid-upgrade, never finish a request, or stay silent; and
tokens that are not ASCII. The attacks are tests/runtime/attacks.py's, the same the full table
of bench/hostile_clients.py runs; each waits for something it can count (a metric, a close, an
exit), never for a bare sleep to pass."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicefleet.runtime.limits import CLOSE_TIMEOUT_SECONDS
from voicefleet.testing import attacks
from voicefleet.testing.attacks import active, eventually
from voicefleet.testing.clients import moshi_session
from voicefleet.testing.runtime_process import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

NON_ASCII_TOKEN = "pöol-tøken-✓"
IDLE_SECONDS = 3
HEADER_TIMEOUT_SECONDS = 2
MAX_CLIENT_LAG_SECONDS = 2
HOSTILE_ARGS = (
    f"--idle-seconds={IDLE_SECONDS}",
    f"--header-timeout-seconds={HEADER_TIMEOUT_SECONDS}",
    f"--max-client-lag-seconds={MAX_CLIENT_LAG_SECONDS}",
)
# How long the server may take past a bound to act on it: one supervision pass, the close
# handshake's own timeout (2 s), and a loaded test machine.
SLACK_SECONDS = 4.0


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    server = start_server(
        tmp_path_factory.mktemp("hostile"),
        max_sessions=3,
        max_session_seconds=60,
        token=NON_ASCII_TOKEN,
        extra_args=HOSTILE_ARGS,
    )
    yield server
    server.stop()


def ended(server: RuntimeServer, reason: str) -> float:
    return server.metric("sessions_ended_total", reason=reason)


async def test_client_that_never_reads_is_dropped(hostile_server: RuntimeServer) -> None:
    """Failure 2: instead of hearing stale audio for the whole cap, the caller is dropped
    once it is more than --max-client-lag-seconds behind, and its slot is free."""
    outcome = await attacks.never_reads(hostile_server)
    assert outcome.contained, outcome
    assert set(outcome.ended) == {"too_slow"}
    assert outcome.seconds is not None
    assert outcome.seconds < MAX_CLIENT_LAG_SECONDS + 1 + SLACK_SECONDS


async def test_burst_of_messages_then_close_frees_the_slot(hostile_server: RuntimeServer) -> None:
    """Failure 3: 5000 one-byte audio messages then a close; the slot frees at once."""
    outcome = await attacks.burst_then_close(hostile_server)
    assert outcome.contained, outcome
    assert outcome.seconds is not None
    assert outcome.seconds < 3.0


async def test_pcm_flood_is_closed_and_others_keep_their_audio(
    hostile_server: RuntimeServer,
) -> None:
    """Failure 4: a PCM caller sending as fast as it can is cut off for exceeding real time;
    a conversation beside it keeps its audio."""
    started = time.monotonic()
    observer = asyncio.create_task(moshi_session(attacks.chat(hostile_server), 6.0))
    assert await eventually(lambda: active(hostile_server) == 1, 20)
    outcome = await attacks.pcm_flood(hostile_server)
    cut_off = time.monotonic() - started
    transcript = await observer
    assert outcome.contained, outcome
    assert "input_rate" in outcome.ended
    assert outcome.seconds is not None
    assert outcome.seconds < 5.0
    # The conversation went on, unharmed, after the flood. (Its gaps are measured by
    # bench/hostile_clients.py on a quiet machine; this one may be busy.)
    assert not transcript.errors
    assert transcript.audio_messages_after[-1] > cut_off + 1.0
    assert transcript.audio_samples >= 2 * 24_000, transcript.audio_samples
    await asyncio.to_thread(hostile_server.wait_idle)


async def test_upgrade_resets_are_counted_not_logged(hostile_server: RuntimeServer) -> None:
    """Failure 6: callers that reset the connection mid-upgrade leave no traceback, a count,
    and every slot free."""
    before = hostile_server.metric("upgrades_aborted_total")
    outcome = await attacks.upgrade_resets(hostile_server, attempts=60)
    assert outcome.contained, outcome
    assert hostile_server.metric("upgrades_aborted_total") > before
    assert "Error handling request" not in hostile_server.log()


async def test_connections_without_a_request_are_closed(hostile_server: RuntimeServer) -> None:
    """Failure 7, slowloris: connections that send nothing, and ones that trickle a request
    line they never finish, are closed (and counted) after --header-timeout-seconds."""
    outcome = await attacks.slowloris(hostile_server, connections=4)
    assert outcome.contained, outcome
    assert outcome.seconds is not None
    assert outcome.seconds < HEADER_TIMEOUT_SECONDS + SLACK_SECONDS


async def test_session_that_sends_no_audio_is_closed_when_idle(
    hostile_server: RuntimeServer,
) -> None:
    """Failure 7, idle: a caller that answers pings but never sends audio is closed after
    --idle-seconds with an error that says why, instead of holding its slot for the cap."""
    outcome = await attacks.silent_session(hostile_server)
    assert outcome.contained, outcome
    assert outcome.close_code == 1008
    assert outcome.seconds is not None
    assert outcome.seconds < IDLE_SECONDS + SLACK_SECONDS


async def test_unparsable_requests_are_refused_quietly(hostile_server: RuntimeServer) -> None:
    """Like failure 6, a log flood: requests aiohttp cannot parse (smuggling attempts, bad
    headers, a line too long) are answered 400 and counted, with no traceback each."""
    before = hostile_server.metric("bad_requests_total")
    for attack in (attacks.http_smuggling, attacks.bad_query_strings):
        outcome = await attack(hostile_server)
        assert outcome.contained, outcome
    assert hostile_server.metric("bad_requests_total") >= before + 5


async def test_non_ascii_tokens_are_refused_not_crashed(hostile_server: RuntimeServer) -> None:
    """Failure 5: a non-ASCII bearer token is a 401, not a 500, even when the configured
    token is itself non-ASCII; nothing drains."""
    outcome = await attacks.drain_abuse(hostile_server)
    assert outcome.contained, outcome


async def test_deadlines_hold_against_a_client_that_never_reads(tmp_path: Path) -> None:
    """Failure 2: with the lag bound out of the way, a caller that never reads is still cut
    off at --max-session-seconds, and SIGTERM still exits soon after --drain-seconds; the
    right non-ASCII token drains (failure 5)."""
    cap, drain = 6, 3
    server = start_server(
        tmp_path,
        max_sessions=2,
        max_session_seconds=cap,
        drain_seconds=drain,
        token=NON_ASCII_TOKEN,
        extra_args=("--max-client-lag-seconds=300",),
    )
    try:
        first, sending = await attacks.never_reader(server)
        connected = time.monotonic()
        assert await eventually(lambda: ended(server, "session_limit") >= 1, cap + 20)
        await asyncio.to_thread(server.wait_idle, 5.0)
        # Freed at the cap plus the close's own timeout (then aborted), not at the next one.
        assert time.monotonic() - connected < cap + CLOSE_TIMEOUT_SECONDS + SLACK_SECONDS
        sending.cancel()
        first.reset()

        second, sending = await attacks.never_reader(server)
        assert await eventually(lambda: active(server) == 1, 10)
        status, _ = attacks.raw_post(server, "/v1/drain", NON_ASCII_TOKEN)
        assert status == 200
        await asyncio.sleep(1.0)  # let the socket back up with drain notices and audio
        server.process.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        code = await asyncio.to_thread(server.process.wait, drain + 30)
        assert code == 0
        assert time.monotonic() - terminated < drain + SLACK_SECONDS
        sending.cancel()
        second.reset()
    finally:
        server.stop()
