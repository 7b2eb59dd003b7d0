"""An upstream for the gateway benchmark that speaks the runtime's wire framing but runs no
model: it answers ``GET /v1/status`` in the runtime's contract (a large capacity, its live
count), sends Moshi's 0x00 handshake on ``/api/chat`` as the runtime does, and echoes every
message back at once, on ``/api/chat`` and ``/ws/pcm``; pings are answered.

Why: the tiny model on a 2-core CPU holds only a few conversations, and the gateway's capacity
is measured in hundreds. What the gateway does per message (read a frame, write it to the
other side) does not depend on what produced it, so an echo of the same message sizes at the
same rate loads the gateway as real conversations would, and the echo gives a round trip to
time. ``bench/gateway_relay.py --upstream runtime`` runs the real runtime for a small count.

Usage: ``python -m bench.gateway_echo --port 9000 [--capacity 10000]``
"""

from __future__ import annotations

import argparse
import struct

from aiohttp import WSMsgType, web

from voicefleet import constants
from voicefleet.testing.contract_server import report

LIVE = web.AppKey("live", list[int])
CAPACITY = web.AppKey("capacity", int)
HANDSHAKE = bytes([0x00]) + struct.pack("<II", 0, 0)  # kind, protocol and model version


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=4 * 64 * 1024)
    await ws.prepare(request)
    live = request.app[LIVE]
    live[0] += 1
    try:
        if request.path == constants.PATH_MOSHI_CHAT:
            await ws.send_bytes(HANDSHAKE)
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
    finally:
        live[0] -= 1
    return ws


async def status(request: web.Request) -> web.Response:
    answer = report(request.app[LIVE][0], request.app[CAPACITY], draining=False)
    return web.json_response(answer.wire())


async def readyz(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--capacity", type=int, default=10_000)
    args = parser.parse_args()
    app = web.Application()
    app[LIVE] = [0]
    app[CAPACITY] = args.capacity
    app.router.add_get(constants.PATH_MOSHI_CHAT, echo)
    app.router.add_get(constants.PATH_PCM, echo)
    app.router.add_get(constants.PATH_STATUS, status)
    app.router.add_get(constants.PATH_READYZ, readyz)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
