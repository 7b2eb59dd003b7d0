"""Moving live conversations through a real gateway between two real runtimes (tiny model):
a pod drains, and its conversations go on on the other pod with the caller's socket open,
its audio one stream, and none of the switch visible."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import pytest

from tests.gateway.callers import audio_after, call, hang_up
from tests.gateway.conftest import TOKEN
from tests.gateway.helpers import chat, gateway
from tests.gateway.test_ogg_splice import check_one_stream
from voicefleet import constants
from voicefleet.testing.attacks import eventually
from voicefleet.testing.attacks.common import active
from voicefleet.testing.clients import audio_session, pcm_session
from voicefleet.testing.kyutai_client import HeadlessAudio
from voicefleet.testing.loopback import http
from voicefleet.testing.polling import poll
from voicefleet.testing.runtime_process import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

DRAIN = {"deadlineSeconds": 20, "reason": "test"}


def token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    return f"--token-file={path}"


def _drain(server: RuntimeServer) -> None:
    status, _, body = http("POST", server.http + constants.PATH_DRAIN, DRAIN, token=TOKEN)
    assert status == 200, body


def _holder(pair: tuple[RuntimeServer, RuntimeServer]) -> tuple[RuntimeServer, RuntimeServer]:
    """(the backend holding the one conversation, the other)."""
    first, second = pair
    return (first, second) if active(first) == 1 else (second, first)


async def test_a_moshi_conversation_moves_when_its_pod_drains(
    tmp_path: Path, two: tuple[RuntimeServer, RuntimeServer]
) -> None:
    with gateway(tmp_path, two, token_file(tmp_path)) as gw:
        caller = await call(chat(gw))
        await audio_after(caller, 15)
        old, new = _holder(two)
        drained_at = time.monotonic()
        _drain(old)
        assert await eventually(lambda: active(new) == 1 and active(old) == 0, 20), gw.log()
        await audio_after(caller, 25)  # two more seconds of audio, from the new pod
        assert caller.task is not None and not caller.task.done()
        assert caller.close_code is None and caller.errors == []
        # Nothing of the switch shows: no drain notice, one handshake, one session notice.
        assert [n.get("type") for n in caller.notices] == ["session"], caller.notices
        assert caller.handshakes == 1
        check_one_stream(bytes(caller.ogg))
        assert gw.metric("conversations_moved_total") == 1
        # The switch metric is the time the caller's audio was held: a final export and a
        # catch-up import, each served between two of a pod's frames, and the upgrade of the
        # new session; never just the instant the held messages were flushed.
        held = gw.metric("move_switch_seconds_sum")
        assert gw.metric("move_switch_seconds_count") == 1
        assert 0.01 <= held <= gw.metric("move_seconds_sum"), (held, gw.log())
        after = [t for t in caller.audio_at if t > drained_at]
        gaps = [b - a for a, b in itertools.pairwise(after)]
        print(f"longest audio gap across the move: {max(gaps) * 1000:.0f} ms")
        await hang_up(caller)
        assert await eventually(lambda: active(new) == 0, 10)


async def test_a_pcm_conversation_moves_when_its_pod_drains(
    tmp_path: Path, two: tuple[RuntimeServer, RuntimeServer]
) -> None:
    with gateway(tmp_path, two, token_file(tmp_path)) as gw:
        talking = asyncio.create_task(pcm_session(f"{gw.ws}{constants.PATH_PCM}", 6.0, 16_000))
        assert await eventually(lambda: sum(active(s) for s in two) == 1, 10)
        old, new = _holder(two)
        await asyncio.sleep(1.5)
        _drain(old)
        # The old pod would keep it to the drain deadline (20 s): it is on the new one now.
        assert await eventually(lambda: active(new) == 1 and active(old) == 0, 10)
        assert not talking.done()
        transcript = await talking
        assert gw.metric("conversations_moved_total") == 1, gw.log()
        types = [n.get("type") for n in transcript.notices if n.get("type") != "text"]
        assert types == ["session"], transcript.notices
        # Audio all the way: ~75 chunks of 80 ms in 6 s; a cut conversation stops early.
        assert len(transcript.chunks) >= 60, len(transcript.chunks)
        assert active(old) == 0


async def test_with_no_room_elsewhere_the_caller_hears_of_the_drain(tmp_path: Path) -> None:
    only = start_server(tmp_path, max_sessions=2, max_session_seconds=60, token=TOKEN)
    try:
        with gateway(tmp_path, [only], token_file(tmp_path)) as gw:
            caller = await call(chat(gw))
            await audio_after(caller, 5)
            _drain(only)
            assert await eventually(
                lambda: gw.metric("move_failures_total", reason="no_slot") == 1, 10
            ), gw.log()
            await asyncio.wait_for(_drain_notice(caller), 10)
            await hang_up(caller)
    finally:
        only.stop()


async def _drain_notice(caller: object) -> None:
    while not any(n.get("type") == "drain" for n in caller.notices):  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)


def test_kyutais_client_through_the_gateway_survives_a_drain(
    tmp_path: Path, two: tuple[RuntimeServer, RuntimeServer]
) -> None:
    moved_while_talking: list[bool] = []

    def drain_its_pod() -> None:
        if not poll(lambda: sum(active(s) for s in two) == 1, 10, 0.05):
            return
        old, new = _holder(two)
        _drain(old)
        # On the new pod while the client talks on (the old pod would keep it 20 s).
        on_new = poll(lambda: active(new) == 1 and active(old) == 0, 5, 0.05)
        moved_while_talking.append(bool(on_new))

    with gateway(tmp_path, two, token_file(tmp_path)) as gw, HeadlessAudio() as audio:
        timer = threading.Timer(3.0, drain_its_pod)
        timer.start()
        try:
            run = audio.run_client(gw.ws, 9.0)
        finally:
            timer.cancel()
            timer.join()
        assert run.exit_code is None, run  # still talking when the user stopped it
        assert not run.lost_connection and "Connection closed" not in run.stderr, run.stderr
        assert moved_while_talking == [True], gw.log()
        assert gw.metric("conversations_moved_total") == 1, gw.log()
        # The text went on after the move: the 3 s before it give at most ~37 pieces.
        assert len(run.words) >= 45, run.stdout


async def test_a_hertz_dev_conversation_on_audio_moves_when_its_pod_drains(
    tmp_path: Path,
) -> None:
    """/audio has no notices: the gateway learns of the drain from its poll."""
    servers = [
        start_server(
            tmp_path, max_sessions=2, max_session_seconds=60, token=TOKEN, backend="hertz-tiny"
        )
        for _ in range(2)
    ]
    try:
        with gateway(tmp_path, servers, token_file(tmp_path)) as gw:
            talking = asyncio.create_task(audio_session(f"{gw.ws}{constants.PATH_AUDIO}", 7.0))
            assert await eventually(lambda: sum(active(s) for s in servers) == 1, 10)
            old, new = _holder((servers[0], servers[1]))
            await asyncio.sleep(2.0)
            _drain(old)
            # The old pod would keep it to the drain deadline (20 s): it is on the new one now.
            assert await eventually(lambda: active(new) == 1 and active(old) == 0, 10)
            assert not talking.done()
            transcript = await talking
            assert gw.metric("conversations_moved_total") == 1, gw.log()
            assert transcript.not_audio == [], transcript.not_audio
            # 125 ms frames for 7 s: 56; a conversation cut at the drain stops near 16.
            assert len(transcript.samples) >= 45, len(transcript.samples)
            assert active(old) == 0
    finally:
        for server in servers:
            server.stop()
