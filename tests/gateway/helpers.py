"""What the gateway tests share: a gateway process per test, and counts read from the
runtime and the gateway."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from voicefleet.testing.attacks import eventually
from voicefleet.testing.gateway_process import GatewayProcess, start_gateway
from voicefleet.testing.runtime_process import RuntimeServer


@contextmanager
def gateway(
    tmp_path: Path, servers: Sequence[RuntimeServer], *args: str
) -> Iterator[GatewayProcess]:
    process = start_gateway(tmp_path, [server.http for server in servers], args)
    try:
        yield process
    finally:
        process.stop()


def started(server: RuntimeServer) -> float:
    return sum(
        value
        for (name, _), value in server.metrics().items()
        if name == "voicefleet_runtime_sessions_started_total"
    )


def chat(process: GatewayProcess) -> str:
    return f"{process.ws}/api/chat"


async def queued(process: GatewayProcess, length: int) -> None:
    assert await eventually(lambda: process.status()["queue"]["length"] == length, 10), (
        process.status()
    )
