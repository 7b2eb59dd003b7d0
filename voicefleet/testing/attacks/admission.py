"""Attacks on the upgrade, admission and control endpoints, and on the HTTP parser."""

from __future__ import annotations

import asyncio
import re
import socket

import aiohttp

from voicefleet.testing.attacks.common import (
    GIVE_UP_SECONDS,
    Outcome,
    Watch,
    active,
    chat,
    eventually,
)
from voicefleet.testing.attacks.lifecycle import resident_mib
from voicefleet.testing.clients import moshi_session
from voicefleet.testing.loopback import http
from voicefleet.testing.rawws import RawClient, upgrade_request
from voicefleet.testing.runtime_process import RuntimeServer


# --- the upgrade, admission, control ---------------------------------------------------------
async def upgrade_resets(server: RuntimeServer, attempts: int = 100) -> Outcome:
    """Issue 10, failure 6: reset the connection mid-upgrade, half at once, half after the 101."""
    before_log = server.log().count("Traceback")
    before = server.metric("upgrades_aborted_total")
    watch = Watch(server)
    for attempt in range(attempts):
        client = await RawClient.connect("127.0.0.1", server.port)
        client.writer.write(upgrade_request("/api/chat", "127.0.0.1"))
        await client.writer.drain()
        if attempt % 2:
            await client.reader.readuntil(b"\r\n\r\n")
        client.reset()
    freed = await watch.slot_freed()
    tracebacks = server.log().count("Traceback") - before_log
    counted = server.metric("upgrades_aborted_total") - before
    return Outcome(
        freed and tracebacks == 0,
        f"{tracebacks} tracebacks, {counted:.0f} counted",
        watch.elapsed(),
    )


async def capacity(server: RuntimeServer) -> Outcome:
    """Every free slot taken by streaming callers, then 20 more callers: refused before the
    upgrade (503, Retry-After), not queued."""
    watch = Watch(server)
    status = server.status()["sessions"]
    assert isinstance(status, dict)
    stop = asyncio.Event()
    holders = [
        asyncio.create_task(moshi_session(chat(server), 60.0, stop=stop))
        for _ in range(int(status["capacity"]) - int(status["active"]))
    ]
    try:
        await eventually(lambda: active(server) == status["capacity"], GIVE_UP_SECONDS)
        refused = 0
        async with aiohttp.ClientSession() as client:
            for _ in range(20):
                try:
                    await client.ws_connect(chat(server))
                except aiohttp.WSServerHandshakeError as exc:
                    ok = exc.status == 503 and exc.headers is not None
                    refused += ok and "Retry-After" in (exc.headers or {})
    finally:
        stop.set()
        await asyncio.gather(*holders, return_exceptions=True)
    freed = await watch.slot_freed()
    return Outcome(refused == 20 and freed, f"{refused}/20 refused 503", watch.elapsed())


async def drain_abuse(server: RuntimeServer) -> Outcome:
    """Wrong, missing and non-ASCII tokens, a huge body: refused, never a 500, never a drain
    (issue 10, failure 5)."""
    url = f"{server.http}/v1/drain"
    statuses = [
        http("POST", url, {"deadlineSeconds": 0})[0],
        http("POST", url, {"deadlineSeconds": 0}, token="wrong")[0],
        raw_post(server, "/v1/drain", token="pöol-tøken-✗")[0],
        raw_post(server, "/v1/drain", token="ключ")[0],
        raw_post(server, "/v1/drain", token="x", body=b"{" * 2_000_000)[0],
    ]
    ready = http("GET", f"{server.http}/readyz")[0] == 200
    ok = ready and 500 not in statuses and all(s in (401, 403, 413) for s in statuses)
    return Outcome(ok, f"statuses {sorted(set(statuses))}, still ready", None)


def raw_post(
    server: RuntimeServer, path: str, token: str, body: bytes = b'{"deadlineSeconds": 60}'
) -> tuple[int, bytes]:
    """POST with the token sent as UTF-8 bytes (urllib would send Latin-1)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + b"Authorization: Bearer "
        + token.encode()
        + f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    )
    return raw_request(server, head + body)


def raw_request(server: RuntimeServer, request: bytes) -> tuple[int, bytes]:
    """(status, body) of one request written byte for byte; (0, b"") if none came back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        try:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionError:
            pass  # answered and closed before the whole request was read
    match = re.match(rb"HTTP/1\.[01] (\d+)", answer)
    return (int(match.group(1)) if match else 0), answer.partition(b"\r\n\r\n")[2]


async def bad_query_strings(server: RuntimeServer) -> Outcome:
    """Out-of-range and unparsable settings, unknown rates, a query longer than a line may
    be: clamped or refused, never a 500."""
    statuses = []
    async with aiohttp.ClientSession() as client:
        url = (
            f"{chat(server)}?text_temperature=nan&text_topk=-5&audio_topk=1e999&audio_temperature=x"
        )
        async with client.ws_connect(url) as ws:
            info = (await ws.receive()).data
            statuses.append(101 if info[:1] == b"\x00" else 0)
    for query in ("rate=abc", "rate=44100", "rate=" + "9" * 400):
        statuses.append(http("GET", f"{server.http}/ws/pcm?{query}")[0])
    tracebacks = server.log().count("Traceback")
    statuses.append(
        raw_request(server, b"GET /api/chat?" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n")[0]
    )
    logged = server.log().count("Traceback") - tracebacks
    ok = statuses[0] == 101 and all(s == 400 for s in statuses[1:]) and logged == 0
    return Outcome(ok, f"statuses {statuses}, {logged} tracebacks", None)


async def http_smuggling(server: RuntimeServer) -> Outcome:
    """Requests a proxy and the server could read differently: refused, connection closed."""
    requests = [
        b"POST /v1/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
        b"POST /v1/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n X-Folded: y\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
    ]
    tracebacks = server.log().count("Traceback")
    statuses = [raw_request(server, request)[0] for request in requests]
    logged = server.log().count("Traceback") - tracebacks
    ok = all(status == 400 for status in statuses) and logged == 0
    return Outcome(ok, f"statuses {statuses}, {logged} tracebacks", None)


async def short_sessions(server: RuntimeServer, count: int = 500) -> Outcome:
    """Sessions opened and closed one after another, as fast as they go: no slot, task or
    memory left behind; past the pod's start rate, refused (503) before the upgrade."""
    rss_before = resident_mib(server)
    watch = Watch(server)
    served = refused = 0
    async with aiohttp.ClientSession() as client:
        for _ in range(count):
            try:
                async with client.ws_connect(chat(server)) as ws:
                    await ws.receive()
                served += 1
            except aiohttp.WSServerHandshakeError as exc:
                refused += exc.status == 503
    freed = await watch.slot_freed()
    grown = resident_mib(server) - rss_before
    return Outcome(
        freed and served + refused == count and grown < 50,
        f"{served} served, {refused} refused 503, RSS +{grown:.0f} MiB",
        watch.elapsed(),
    )
