"""The operator's way of running the gateway: ``--backends-pushed``, the pool's runtime pods
sent by ``PUT /v1/backends`` and signed with the pool token; and what the gateway counts as
a conversation the platform cut."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.callers import audio_after, call, hang_up
from tests.gateway.conftest import TOKEN
from tests.gateway.helpers import chat, gateway
from voicefleet import constants
from voicefleet.api import signature
from voicefleet.testing.attacks import eventually
from voicefleet.testing.gateway_process import GatewayProcess, start_gateway
from voicefleet.testing.runtime_process import RuntimeServer

pytestmark = pytest.mark.runtime


def put(process: GatewayProcess, body: bytes, header: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers[signature.HEADER] = header
    request = urllib.request.Request(
        process.http + constants.PATH_BACKENDS, data=body, headers=headers, method="PUT"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def signed(process: GatewayProcess, urls: list[str], token: str = TOKEN) -> int:
    body = json.dumps({"backends": urls}).encode()
    return put(process, body, signature.sign(token, body, time.time()))[0]


async def test_only_the_operators_signed_set_puts_backends_in_rotation(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    first, second = backends
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    gw = start_gateway(
        tmp_path, [], ["--backends-pushed", f"--token-file={token_file}"], ready=False
    )
    try:
        assert not gw.ready()  # it knows no pod before the operator's first push
        body = json.dumps({"backends": [first.http]}).encode()
        now = time.time()
        refusals = {
            "no signature": (None, 401, "missing"),
            "another token": (signature.sign("not-the-pool-token", body, now), 401, "match"),
            "an old request": (signature.sign(TOKEN, body, now - 120), 401, "older"),
            "a garbled header": ("t=soon,s=", 401, "must read"),
        }
        for what, (header, status, words) in refusals.items():
            answer = put(gw, body, header)
            assert answer[0] == status and words in str(answer[1]["error"]), (what, answer)
        bad_body = b'{"backends": "http://127.0.0.1:1"}'
        assert put(gw, bad_body, signature.sign(TOKEN, bad_body, now))[0] == 400
        assert signed(gw, ["127.0.0.1:1"]) == 400
        assert gw.status()["backends"] == []  # nothing refused changed anything

        assert signed(gw, [first.http]) == 200
        assert await eventually(gw.ready, 10)
        caller = await call(chat(gw))
        await audio_after(caller, 5)
        assert first.status()["sessions"] == {"active": 1, "capacity": 2}

        # The operator's next set lacks the first pod: its live conversation goes on, and
        # new ones go to the pod that is in the set now.
        assert signed(gw, [second.http]) == 200
        assert [b["url"] for b in gw.status()["backends"]] == [second.http]
        assert await eventually(lambda: gw.status()["backends"][0]["inRotation"], 10)
        later = await call(chat(gw))
        await audio_after(later, 5)
        await audio_after(caller, 5)
        assert second.status()["sessions"] == {"active": 1, "capacity": 2}
        await hang_up(caller, later)
        assert gw.status()["cut"] == {}  # callers that hang up are no cut
    finally:
        gw.stop()


async def test_a_pod_lost_mid_conversation_is_counted_as_cut(
    tmp_path: Path, two: tuple[RuntimeServer, RuntimeServer]
) -> None:
    with gateway(tmp_path, two) as gw:
        caller = await call(chat(gw))
        await audio_after(caller, 5)
        (holding,) = [s for s in two if s.status()["sessions"] == {"active": 1, "capacity": 2}]
        holding.process.kill()
        await caller.ended(10.0)
        # Counted once the relay has wound down, just after the caller's socket closed.
        assert await eventually(lambda: gw.status()["cut"] == {"pod_lost": 1}, 10), gw.status()
        assert gw.metric("conversations_cut_total", reason="pod_lost") == 1
        assert gw.status()["moved"] == 0
