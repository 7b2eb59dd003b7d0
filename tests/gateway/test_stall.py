"""A backend that stops reading mid-conversation: the gateway's write to it stalls, and after
``RELAY_STALL_SECONDS`` the relay is aborted, both sockets let go, so neither the caller nor
the gateway's memory is held by it. The backend is a stand-in in the test's own process (the
runtime never stops reading while its caller streams in real time); the gateway is the real
process."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from voicefleet import constants
from voicefleet.gateway.limits import RELAY_STALL_SECONDS
from voicefleet.testing.attacks import eventually
from voicefleet.testing.contract_server import report
from voicefleet.testing.gateway_process import start_gateway
from voicefleet.testing.loopback import free_port

HANDSHAKE = bytes([0x00]) + struct.pack("<II", 0, 0)
# Far more than the socket buffers between the gateway and a backend that does not read.
FLOOD_MESSAGES = 200
FLOOD_BYTES = 200 * 1024


@pytest.fixture
async def deaf_backend() -> AsyncIterator[str]:
    """Takes one conversation, sends the handshake, then never reads again."""
    stop = asyncio.Event()

    async def chat(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=4 * FLOOD_BYTES)
        await ws.prepare(request)
        await ws.send_bytes(HANDSHAKE)
        assert request.transport is not None
        request.transport.pause_reading()
        await stop.wait()
        return ws

    async def status(_request: web.Request) -> web.Response:
        return web.json_response(report(0, 4, draining=False).wire())

    app = web.Application()
    app.router.add_get(constants.PATH_MOSHI_CHAT, chat)
    app.router.add_get(constants.PATH_STATUS, status)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    stop.set()
    await runner.cleanup()


async def test_backend_that_stops_reading_is_let_go(deaf_backend: str, tmp_path: Path) -> None:
    process = await asyncio.to_thread(start_gateway, tmp_path, [deaf_backend])
    try:
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(f"{process.ws}{constants.PATH_MOSHI_CHAT}") as ws,
        ):
            assert (await ws.receive(timeout=10)).data == HANDSHAKE

            async def flood() -> None:
                for _ in range(FLOOD_MESSAGES):
                    await ws.send_bytes(b"\x01" + bytes(FLOOD_BYTES))

            flooding = asyncio.create_task(flood())
            closed = await ws.receive(timeout=RELAY_STALL_SECONDS + 20)
            assert closed.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            flooding.cancel()
            await asyncio.gather(flooding, return_exceptions=True)
        assert await eventually(lambda: process.metric("relay_stalls_total") == 1, 10)
        assert process.metric("conversations_ended_total", reason="stalled") == 1
        assert process.status()["active"] == 0
    finally:
        process.stop()
