"""Backends found by DNS (``--backends-dns``, as a pool's headless Service names its pods):
a real gateway process finds a real runtime by a name, and relays a conversation to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.callers import audio_after, call, hang_up
from tests.gateway.helpers import chat
from voicefleet.testing.gateway_process import start_gateway
from voicefleet.testing.runtime_process import RuntimeServer

pytestmark = pytest.mark.runtime


async def test_a_backend_found_by_its_name_takes_conversations(
    tmp_path: Path, backends: tuple[RuntimeServer, RuntimeServer]
) -> None:
    server = backends[0]
    gw = start_gateway(tmp_path, [], [f"--backends-dns=localhost:{server.port}"])
    try:
        found = {b["url"]: b["inRotation"] for b in gw.status()["backends"]}
        assert found[f"http://127.0.0.1:{server.port}"] is True, found
        caller = await call(chat(gw))
        await audio_after(caller, 10)
        assert server.status()["sessions"] == {"active": 1, "capacity": 2}
        await hang_up(caller)
    finally:
        gw.stop()
