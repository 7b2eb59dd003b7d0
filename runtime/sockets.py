"""How a caller's WebSocket is set up, shared by the runtime and the gateway in front of it
(plain aiohttp: the gateway imports it without the model's libraries).

No aiohttp heartbeat (it pings only a caller that sends nothing, and callers stream; the
runtime's lag probe pings all of them, through the gateway too), pings and pongs handed to
the handler, no per-message compression (audio does not compress, and inflating a caller's
frames is CPU the caller controls), and small socket buffers (``limits.SEND_BUFFER_BYTES``)
so stale audio cannot pile up for a caller that stopped reading.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from voicefleet.runtime.limits import CLOSE_TIMEOUT_SECONDS, SEND_BUFFER_BYTES, WRITE_BUFFER_BYTES


def caller_websocket(max_msg_size: int) -> web.WebSocketResponse:
    return web.WebSocketResponse(
        max_msg_size=max_msg_size,
        autoping=False,
        heartbeat=None,
        compress=False,
        # How long a close handshake waits for the caller's answer.
        timeout=CLOSE_TIMEOUT_SECONDS,
        writer_limit=WRITE_BUFFER_BYTES,
    )


def bound_buffers(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
