"""A WebSocket client written on a bare socket, for callers no library would produce: one
that never reads, one that hangs up mid-upgrade with a reset, one that sends half a request
line. Frames are encoded by hand (RFC 6455), masked as a client must."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def upgrade_request(path: str, host: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    # XOR as one big integer: a byte at a time in Python costs the harness more CPU than
    # the server spends on the frame, and the harness shares the machine with it.
    key = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return header + mask + masked


class RawClient:
    """One TCP connection; ``receive_buffer`` shrinks the kernel's receive buffer so a client
    that never reads pushes back on the server after a few kilobytes, as a stalled phone
    would after its own buffers filled."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, *, receive_buffer: int | None = None) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        # A small reader limit: asyncio stops reading the socket once this much is buffered.
        reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        return cls(reader, writer)

    async def upgrade(self, path: str) -> int:
        """Send the upgrade request; the HTTP status of the answer (101 when accepted)."""
        host, port = self.writer.get_extra_info("peername")[:2]
        self.writer.write(upgrade_request(path, f"{host}:{port}"))
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1])

    async def send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(frame(opcode, payload))
        await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next unfragmented frame from the server (never masked)."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    def reset(self) -> None:
        """Hang up with a TCP reset (SO_LINGER 0), as a crashed client or a proxy would."""
        sock = self.writer.get_extra_info("socket")
        # Already closed by the server: nothing left to reset.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()

    async def closed_by_server(self, timeout: float) -> bool:
        """Whether the server ends the connection (EOF or reset) within ``timeout``; whatever
        it still sends meanwhile is read and thrown away."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True
