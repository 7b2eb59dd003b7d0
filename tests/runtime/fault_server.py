"""``python -m tests.runtime.fault_server runtime serve ...``: the real runtime command with
faults a test can set off. After SIGUSR2 the engine thread's next step fails the way
``VOICEFLEET_TEST_ENGINE_FAULT`` says: ``raise`` (a CUDA error, a bug) or ``hang`` (a wedged
GPU, a deadlock). With ``VOICEFLEET_TEST_UPGRADE_DELAY_SECONDS`` every WebSocket upgrade
takes that long before its answer goes out (a busy event loop, a slow network). Nothing else
is changed; the server under test is the real one."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from typing import Any

from aiohttp import web

from voicefleet.cli import main
from voicefleet.runtime.engine import BatchedEngine

ENV_FAULT = "VOICEFLEET_TEST_ENGINE_FAULT"
FAULT_RAISE = "raise"
FAULT_HANG = "hang"
ENV_UPGRADE_DELAY = "VOICEFLEET_TEST_UPGRADE_DELAY_SECONDS"


def install_engine_fault(mode: str) -> None:
    tripped = threading.Event()
    real_step = BatchedEngine._step

    def step(self: BatchedEngine, frames: Any) -> Any:
        if tripped.is_set():
            if mode == FAULT_HANG:
                threading.Event().wait()
            raise RuntimeError("injected engine fault")
        return real_step(self, frames)

    BatchedEngine._step = step  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR2, lambda _signum, _frame: tripped.set())


def install_upgrade_delay(seconds: float) -> None:
    real_prepare = web.WebSocketResponse.prepare

    async def prepare(self: web.WebSocketResponse, request: web.BaseRequest) -> Any:
        await asyncio.sleep(seconds)
        return await real_prepare(self, request)

    web.WebSocketResponse.prepare = prepare  # type: ignore[method-assign]


if __name__ == "__main__":
    # Here, not at import: the codec workers are spawned processes that import this module.
    install_engine_fault(os.environ.get(ENV_FAULT, FAULT_RAISE))
    if ENV_UPGRADE_DELAY in os.environ:
        install_upgrade_delay(float(os.environ[ENV_UPGRADE_DELAY]))
    sys.exit(main(sys.argv[1:]))
