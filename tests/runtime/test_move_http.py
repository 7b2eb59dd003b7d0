"""The wire contract the gateway moves conversations with, between two real runtime processes
(tiny Moshi, greedy): export a live session by the id its upgrade announced, import it on
another pod (and a newer state into the same slot: only the steps since are replayed), then
resume it there with the import's ticket on the same protocol.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from voicefleet import constants
from voicefleet.testing.runtime_process import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

TOKEN = "pool-token-for-moves"
RATE = 24_000
FRAME_SAMPLES = 1920
SPOKEN = 12  # frames the caller sends before the first export (inside the 2 s burst)
RESUMED = 6  # frames sent after resuming
WAIT_SECONDS = 60.0
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RuntimeServer, ...]]:
    servers = [
        start_server(
            tmp_path_factory.mktemp(name),
            max_sessions=2,
            max_session_seconds=60,
            token=TOKEN,
            extra_args=["--greedy"],
        )
        for name in ("old-pod", "new-pod")
    ]
    yield tuple(servers)
    for server in servers:
        server.stop()


def _speech(frames: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    pcm = (3000 * rng.standard_normal((frames, FRAME_SAMPLES))).astype("<i2")
    return [row.tobytes() for row in pcm]


async def _audio_frames(ws: aiohttp.ClientWebSocketResponse, count: int) -> int:
    """Read until ``count`` audio frames came back; how many did."""
    got = 0
    while got < count:
        message = await ws.receive(timeout=WAIT_SECONDS)
        assert message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), message
        got += message.type == aiohttp.WSMsgType.BINARY
    return got


async def _export(http: aiohttp.ClientSession, pod: RuntimeServer, session: str) -> bytes:
    url = pod.http + constants.PATH_SESSION_EXPORT.format(session=session)
    async with http.post(url, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == constants.CONTENT_TYPE_SLOT_STATE
        return await response.read()


async def _import(
    http: aiohttp.ClientSession, pod: RuntimeServer, state: bytes, into: str | None = None
) -> tuple[int, dict[str, Any]]:
    params = {constants.QUERY_INTO: into} if into else {}
    async with http.post(
        pod.http + constants.PATH_SESSION_IMPORT, data=state, headers=AUTH, params=params
    ) as response:
        return response.status, json.loads(await response.text())


async def _move(old: RuntimeServer, new: RuntimeServer) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    pcm = f"{constants.PATH_PCM}?rate={RATE}"
    async with aiohttp.ClientSession() as http, http.ws_connect(old.ws + pcm) as caller:
        session = caller._response.headers[constants.HEADER_SESSION]
        info = json.loads((await caller.receive(timeout=WAIT_SECONDS)).data)
        assert info["sessionId"] == session
        for frame in _speech(SPOKEN, 1):
            await caller.send_bytes(frame)
        await _audio_frames(caller, SPOKEN - 1)  # the model's first frame is held back
        export_url = old.http + constants.PATH_SESSION_EXPORT.format(session=session)
        async with http.post(export_url) as response:
            seen["no token"] = response.status
        async with http.post(
            old.http + constants.PATH_SESSION_EXPORT.format(session="999"), headers=AUTH
        ) as response:
            seen["unknown session"] = response.status
        first = await _export(http, old, session)
        seen["corrupt"] = await _import(http, new, first[:-1] + bytes([first[-1] ^ 1]))
        status, imported = await _import(http, new, first)
        assert status == 200, imported
        seen["first"] = imported
        # The old pod serves on while the new one prefills; at the switch, the catch-up.
        await caller.send_bytes(_speech(1, 2)[0])
        await _audio_frames(caller, 1)
        latest = await _export(http, old, session)
        seen["catch-up"] = await _import(http, new, latest, into=imported["ticket"])
    resume = f"{pcm}&{constants.QUERY_RESUME}={imported['ticket']}"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(new.ws + resume) as moved:
            await moved.receive(timeout=WAIT_SECONDS)  # its session info
            for frame in _speech(RESUMED, 3):
                await moved.send_bytes(frame)
            seen["resumed audio"] = await _audio_frames(moved, RESUMED)
        try:
            async with http.ws_connect(new.ws + resume):
                seen["second resume"] = 101
        except aiohttp.WSServerHandshakeError as exc:
            seen["second resume"] = exc.status
    return seen


def test_a_conversation_moves_between_pods_over_the_wire(
    pods: tuple[RuntimeServer, RuntimeServer],
) -> None:
    old, new = pods
    seen = asyncio.run(_move(old, new))
    print(seen)
    assert seen["no token"] == 401
    assert seen["unknown session"] == 404
    status, corrupt = seen["corrupt"]
    assert status == 400 and "does not match its digest" in corrupt["error"]
    assert seen["first"]["replayedSteps"] == seen["first"]["steps"] >= SPOKEN
    status, catch_up = seen["catch-up"]
    assert status == 200, catch_up
    assert catch_up["ticket"] == seen["first"]["ticket"]
    assert catch_up["steps"] > seen["first"]["steps"]
    assert catch_up["replayedSteps"] == catch_up["steps"] - seen["first"]["steps"]
    # The moved conversation speaks on the new pod (that it goes on exactly where it was is
    # test_move_engine.py's and test_move.py's to show).
    assert seen["resumed audio"] == RESUMED
    assert seen["second resume"] == 404
