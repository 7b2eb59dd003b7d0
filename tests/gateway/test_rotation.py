"""Rotation by status polls, with a stand-in runtime (the contract server, no model): a
backend that does not answer its poll is out of rotation, and /readyz says so, until it
answers again; one that stops answering leaves again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from voicefleet import constants
from voicefleet.testing.attacks import eventually
from voicefleet.testing.gateway_process import start_gateway
from voicefleet.testing.loopback import free_port, http
from voicefleet.testing.runtime_process import stop_process

CAPACITY = 4


async def test_backend_is_out_of_rotation_until_it_answers(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_gateway(tmp_path, [url], ("--poll-seconds=0.2",), ready=False)
    try:
        # Nothing listens there yet: polled, failed, not ready, and the reason is said.
        assert await eventually(lambda: process.backend(url)["lastError"], 10)
        status, _, body = http("GET", f"{process.http}{constants.PATH_READYZ}")
        assert status == 503 and json.loads(body)["reason"] == "no_backend"
        assert not process.backend(url)["inRotation"]

        command = [
            sys.executable, "-m", "voicefleet.testing.contract_server", "--host=127.0.0.1",
            f"--port={port}", "--token=unused", f"--capacity={CAPACITY}",
        ]  # fmt: skip
        stand_in = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            assert await eventually(process.ready, 20)
            view = process.backend(url)
            assert view["inRotation"] and view["capacity"] == CAPACITY
            assert view["lastError"] is None
            assert process.metric("backends_in_rotation") == 1
        finally:
            stop_process(stand_in, 5)
        assert await eventually(lambda: not process.ready(), 10)
        assert not process.backend(url)["inRotation"]
        assert process.metric("backends_in_rotation") == 0
    finally:
        process.stop()
