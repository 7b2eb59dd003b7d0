"""A TCP relay from addresses inside the node's network namespace to the host's loopback.

The control plane listens on the host's loopback only; the real node (kubelet, kube-proxy,
and pods through the ``kubernetes`` Service) lives in a network namespace of its own. This
process opens its listening sockets inside that namespace, then goes back to the host's,
so every connection it accepts there is relayed to the API server on 127.0.0.1. Nothing is
routed between the two: the host's network is not changed.

Run as ``python -m voicefleet.sandbox.relay --netns NAME --listen ADDR:PORT ... --to
127.0.0.1:PORT`` (the sandbox starts it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence

from voicefleet.sandbox import netns

CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def _serve(listeners: list[socket.socket], host: str, port: int) -> None:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    servers = [await asyncio.start_server(relay, sock=sock) for sock in listeners]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"relaying {[s.getsockname() for s in listeners]} -> {host}:{port}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def _listen(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voicefleet.sandbox.relay")
    parser.add_argument("--netns", required=True, help="namespace to listen in")
    parser.add_argument("--listen", action="append", required=True, help="ADDR:PORT there")
    parser.add_argument("--to", required=True, help="ADDR:PORT on the host to relay to")
    args = parser.parse_args(argv)
    # Listening sockets are made inside the namespace; connections out are made back home.
    with netns.inside(args.netns):
        listeners = [_listen(address) for address in args.listen]
    host, _, port = args.to.rpartition(":")
    asyncio.run(_serve(listeners, host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
