"""Every attack of issue 10 on a live runtime, as a hostile caller would make it, each with how
the server must contain it. Used by the fast tests (test_hostile.py) and by the full table of
bench/hostile_clients.py, which runs them all with a conversation streaming beside them.

An attack returns an :class:`Outcome`: whether it was contained (the offending connection
closed or refused, with the reason the server counted, its slot free again), how, and how
long that took from the start of the offence.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import sphn

from tests.polling import poll
from tests.runtime.clients import FRAME_SAMPLES, SAMPLE_RATE, moshi_session, tone
from tests.runtime.oggpages import SilentStream
from tests.runtime.rawws import OP_BINARY, OP_CLOSE, RawClient, frame, upgrade_request
from tests.runtime.server_process import RuntimeServer, http

PCM_RATE = 24_000
PCM_FRAME_BYTES = PCM_RATE * 2 * 8 // 100  # 80 ms of 16-bit samples
MAX_MESSAGE_BYTES = 64 * 1024  # runtime/protocol.py's bound on one client message
# The longest any attack waits for the server to act before calling it not contained.
GIVE_UP_SECONDS = 30.0


@dataclass
class Outcome:
    contained: bool
    how: str
    seconds: float | None = None
    close_code: int | None = None
    # sessions_ended_total reasons that went up while the attack ran
    ended: dict[str, float] = field(default_factory=dict)


Attack = Callable[[RuntimeServer], Awaitable[Outcome]]


async def eventually(predicate: Callable[[], Any], timeout: float) -> Any:
    """``predicate()``'s first truthy result within ``timeout``; it runs off the event loop,
    so the caller's own clients keep streaming meanwhile."""
    return await asyncio.to_thread(poll, predicate, timeout, 0.1)


def active(server: RuntimeServer) -> int:
    sessions = server.status()["sessions"]
    assert isinstance(sessions, dict)
    return int(sessions["active"])


def endings(server: RuntimeServer) -> dict[str, float]:
    prefix = "voicefleet_runtime_sessions_ended_total"
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in server.metrics().items()
        if name == prefix
    }


class Watch:
    """Snapshots taken when an attack starts, to tell what it changed."""

    def __init__(self, server: RuntimeServer) -> None:
        self.server = server
        self.started = time.monotonic()
        self.active = active(server)
        self._ended = endings(server)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def ended(self) -> dict[str, float]:
        now = endings(self.server)
        return {r: v - self._ended.get(r, 0.0) for r, v in now.items() if v > self._ended.get(r, 0)}

    async def slot_freed(self, timeout: float = GIVE_UP_SECONDS) -> bool:
        """Whether the sessions the attack opened are all gone again."""
        return bool(await eventually(lambda: active(self.server) <= self.active, timeout))

    async def ended_for(self, reason: str, timeout: float = GIVE_UP_SECONDS) -> float | None:
        """Seconds from the start until a session ended for ``reason``, or None."""
        if await eventually(lambda: reason in self.ended(), timeout):
            return self.elapsed()
        return None


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[str], int | None]:
    """(0x05 errors or JSON error notices, close code) once the server has closed."""
    errors: list[str] = []
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x05":
            errors.append(message.data[1:].decode(errors="replace"))
        elif message.type == aiohttp.WSMsgType.TEXT and '"error"' in message.data:
            errors.append(message.data)
    return errors, ws.close_code


async def closed_session(
    watch: Watch, reason: str, how: str, close_code: int | None = None
) -> Outcome:
    """The common ending: the session ended for ``reason`` and its slot is free."""
    seconds = await watch.ended_for(reason)
    freed = await watch.slot_freed()
    return Outcome(
        contained=seconds is not None and freed,
        how=how if seconds is not None else f"not ended for {reason}",
        seconds=seconds,
        close_code=close_code,
        ended=watch.ended(),
    )


# --- protocol abuse ------------------------------------------------------------------------
async def protocol_abuse(server: RuntimeServer) -> Outcome:
    """Unknown kinds, stray handshakes, errors and metadata from the client, then a text frame
    (which the Moshi protocol does not take)."""
    watch = Watch(server)
    async with aiohttp.ClientSession() as client, client.ws_connect(chat(server)) as ws:
        await ws.receive()  # the handshake
        for junk in (b"\x09junk", b"\x06", b"\x03\xff", b"\x00\x00\x00", b"\x05x", b"\x04{["):
            await ws.send_bytes(junk)
        await ws.send_str("a text frame")
        _, code = await read_until_closed(ws)
    return await closed_session(watch, "bad_input", f"0x05 + close {code}", code)


async def malformed_opus(server: RuntimeServer) -> Outcome:
    watch = Watch(server)
    async with aiohttp.ClientSession() as client, client.ws_connect(chat(server)) as ws:
        await ws.receive()
        await ws.send_bytes(b"\x01not an ogg page" + os.urandom(2000))
        _, code = await read_until_closed(ws)
    return await closed_session(watch, "bad_input", f"0x05 + close {code}", code)


async def oversized_message(server: RuntimeServer) -> Outcome:
    """A message four times the runtime's bound: aiohttp refuses it (1009) before reading it
    whole."""
    watch = Watch(server)
    async with aiohttp.ClientSession() as client, client.ws_connect(chat(server)) as ws:
        await ws.receive()
        await ws.send_bytes(b"\x01" + bytes(5 * MAX_MESSAGE_BYTES))
        _, code = await read_until_closed(ws)
    freed = await watch.slot_freed()
    return Outcome(code == 1009 and freed, f"close {code}", watch.elapsed(), code, watch.ended())


async def deflate_bomb(server: RuntimeServer) -> Outcome:
    """A frame marked per-message-deflate (RSV1) that would inflate to 10 MB; the runtime
    never agrees to compression, so it is a protocol error at the frame's header."""
    watch = Watch(server)
    client = await RawClient.connect("127.0.0.1", server.port)
    try:
        assert await client.upgrade("/api/chat") == 101
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15).compress(bytes(10_000_000))
        raw = bytearray(frame(OP_BINARY, bomb))
        raw[0] |= 0x40  # RSV1: "compressed"
        client.writer.write(bytes(raw))
        closed = await client.closed_by_server(GIVE_UP_SECONDS)
    finally:
        client.reset()
    freed = await watch.slot_freed()
    return Outcome(closed and freed, "protocol error close", watch.elapsed(), None, watch.ended())


async def opus_bomb(server: RuntimeServer) -> Outcome:
    """Ogg pages packed with Opus packets: 64 KiB announcing about 50 s of audio. The budget
    refuses it from its headers, before any codec worker decodes it, and the session with it."""
    watch = Watch(server)
    stream = SilentStream()
    bomb = stream.pages_of(packets_per_page=64, count=19, seconds_per_packet=0.04)
    async with aiohttp.ClientSession() as client, client.ws_connect(chat(server)) as ws:
        await ws.receive()
        await ws.send_bytes(b"\x01" + stream.start)  # 2 s: the whole burst allowance
        await asyncio.sleep(2.5)  # refilled: the bomb is not dropped for want of budget
        watch.started = time.monotonic()
        await ws.send_bytes(b"\x01" + bomb)
        _, code = await read_until_closed(ws)
    return await closed_session(watch, "input_rate", f"close {code}, input_rate", code)


# --- floods and bursts -----------------------------------------------------------------------
async def burst_then_close(server: RuntimeServer) -> Outcome:
    """Issue 10, failure 3: 5000 one-byte audio messages, then a close."""
    watch = Watch(server)
    client = await RawClient.connect("127.0.0.1", server.port)
    try:
        assert await client.upgrade("/api/chat") == 101
        await client.read_frame()  # the handshake
        client.writer.write(b"".join(frame(OP_BINARY, b"\x01") for _ in range(5000)))
        await client.send(OP_CLOSE, (1000).to_bytes(2, "big"))
        closed = await client.closed_by_server(GIVE_UP_SECONDS)
    finally:
        client.reset()
    freed = await watch.slot_freed()
    return Outcome(closed and freed, "slot freed", watch.elapsed(), None, watch.ended())


async def flood(server: RuntimeServer, url: str, message: bytes) -> Outcome:
    """Send ``message`` as fast as the socket takes it until the server cuts the caller off."""
    watch = Watch(server)
    async with aiohttp.ClientSession() as client, client.ws_connect(url) as ws:
        while watch.elapsed() < GIVE_UP_SECONDS and not ws.closed:
            try:
                await ws.send_bytes(message)
            except ConnectionError:
                break
            await asyncio.sleep(0)  # other clients share this event loop
        # Behind a flood the close may come as a reset; the server's count says why.
        async for _ in ws:
            pass
    return await closed_session(watch, "input_rate", "closed, input_rate")


async def pcm_flood(server: RuntimeServer) -> Outcome:
    """Issue 10, failure 4: a PCM caller sending as fast as it can."""
    noise = np.random.default_rng(1).integers(-3000, 3000, 32_000).astype("<i2").tobytes()
    return await flood(server, f"{server.ws}/ws/pcm?rate={PCM_RATE}", noise)


async def opus_flood(server: RuntimeServer) -> Outcome:
    """Real Opus audio, as fast as the socket takes it."""
    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    audio = tone(2.0)
    pages = b"".join(
        writer.append_pcm(audio[i : i + FRAME_SAMPLES])
        for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES)
    )
    return await flood(server, chat(server), b"\x01" + pages[: MAX_MESSAGE_BYTES - 1])


# --- slow, silent and half-open callers --------------------------------------------------------
async def stream_pcm(client: RawClient, seconds: float) -> None:
    """Real-time 24 kHz PCM, 80 ms a message, until done or the server hangs up."""
    silence = bytes(PCM_FRAME_BYTES)
    started = time.monotonic()
    for index in range(int(seconds / 0.08)):
        try:
            await client.send(OP_BINARY, silence)
        except ConnectionError:
            return
        await asyncio.sleep(max(0.0, started + (index + 1) * 0.08 - time.monotonic()))


async def never_reader(server: RuntimeServer) -> tuple[RawClient, asyncio.Task[None]]:
    """A PCM caller that streams in real time and never reads a byte of the answer."""
    client = await RawClient.connect("127.0.0.1", server.port, receive_buffer=4096)
    assert await client.upgrade(f"/ws/pcm?rate={PCM_RATE}") == 101
    return client, asyncio.create_task(stream_pcm(client, 120.0))


async def never_reads(server: RuntimeServer) -> Outcome:
    """Issue 10, failure 2: streams audio, never reads the answer."""
    watch = Watch(server)
    client, sending = await never_reader(server)
    try:
        return await closed_session(watch, "too_slow", "dropped, too_slow")
    finally:
        sending.cancel()
        client.reset()


async def half_open(server: RuntimeServer) -> Outcome:
    """Upgrades, then neither reads nor sends nor closes: a phone that lost its network."""
    watch = Watch(server)
    client = await RawClient.connect("127.0.0.1", server.port, receive_buffer=4096)
    try:
        assert await client.upgrade("/api/chat") == 101
        return await closed_session(watch, "too_slow", "dropped, too_slow (no pong)")
    finally:
        client.reset()


async def silent_session(server: RuntimeServer) -> Outcome:
    """Issue 10, failure 7: answers pings, sends no audio."""
    watch = Watch(server)
    async with aiohttp.ClientSession() as client, client.ws_connect(chat(server)) as ws:
        errors, code = await read_until_closed(ws)  # reading answers the pings
    outcome = await closed_session(watch, "idle", f"0x05 + close {code}, idle", code)
    outcome.contained = outcome.contained and any("no audio" in e for e in errors)
    return outcome


async def slowloris(server: RuntimeServer, connections: int = 20) -> Outcome:
    """Issue 10, failure 7: connections that send nothing, or a request line a byte at a time."""
    before = server.metric("connections_timed_out_total")
    started = time.monotonic()
    clients = [await RawClient.connect("127.0.0.1", server.port) for _ in range(connections)]

    async def dribble(client: RawClient) -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            client.writer.write(bytes([byte]))
            await asyncio.sleep(0.3)

    dribbling = [asyncio.create_task(dribble(c)) for c in clients[::2]]
    try:
        closed = await asyncio.gather(*(c.closed_by_server(GIVE_UP_SECONDS) for c in clients))
        seconds = time.monotonic() - started
    finally:
        for task in dribbling:
            task.cancel()
        for client in clients:
            client.reset()
    counted = server.metric("connections_timed_out_total") - before
    return Outcome(
        all(closed) and counted >= connections,
        f"{sum(closed)}/{connections} closed, {counted:.0f} counted",
        seconds,
    )


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


def resident_mib(server: RuntimeServer) -> float:
    status = open(f"/proc/{server.process.pid}/status").read()  # noqa: SIM115
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


# --- parts that die, and stopping --------------------------------------------------------------
def codec_worker_pid(server: RuntimeServer, index: int) -> int:
    """The current pid of codec worker ``index``, from the server's log."""
    found = re.findall(rf"codec worker {index}: pid (\d+)", server.log())
    return int(found[-1])


async def codec_worker_killed(server: RuntimeServer, spare: int | None = None) -> Outcome:
    """Issue 10, failure 1: SIGKILL a codec worker (an OOM kill) under a live session: it
    gets 0x05 and a close, and a new caller is served again within 10 s. ``spare``: a worker
    to leave alone (the observer's)."""
    workers = len(server.codec_worker_pids())
    victim = (spare + 1) % workers if spare is not None else 0
    watch = Watch(server)
    async with aiohttp.ClientSession() as client:
        # Sessions go to workers by id: open callers until one lands on the victim.
        while True:
            ws, sid = await open_caller(client, chat(server))
            if sid % workers == victim:
                break
            await ws.close()
        streaming = asyncio.create_task(stream_opus(ws, 60.0))
        await asyncio.sleep(1.0)  # audio both ways, decodes in flight
        os.kill(codec_worker_pid(server, victim), signal.SIGKILL)
        killed = time.monotonic()
        errors, code = await read_until_closed(ws)
        streaming.cancel()
        # New callers, served (audio back) by the fresh process: one per worker, so one
        # lands on the victim's; the time is from the kill to the last one's first audio.
        served = None
        for _ in range(workers):
            opened = time.monotonic()
            fresh = await moshi_session(chat(server), 2.0)
            if fresh.first_audio_seconds is None or fresh.errors:
                served = None
                break
            served = opened + fresh.first_audio_seconds - killed
    freed = await watch.slot_freed()
    told = any("codec" in error for error in errors)
    ok = told and code == 1011 and served is not None and served < 10 and freed
    return Outcome(ok, f"0x05 + close {code}, served again", served, code, watch.ended())


async def open_caller(
    client: aiohttp.ClientSession, url: str
) -> tuple[aiohttp.ClientWebSocketResponse, int]:
    """A Moshi-protocol connection past its handshake, and its session id."""
    ws = await client.ws_connect(url)
    await ws.receive()  # the handshake
    info = json.loads((await ws.receive()).data[1:])
    return ws, int(info["sessionId"])


async def stream_opus(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> None:
    """A tone as Ogg/Opus in real time, one 80 ms frame at a time. Two seconds of it are
    looped (a whole number of frames and of cycles): computing minutes of samples up front
    would stall this caller's event loop, and a stalled caller stops answering pings."""
    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    loop = tone(2.0)
    frames = len(loop) // FRAME_SAMPLES
    started = time.monotonic()
    for index in range(int(seconds * SAMPLE_RATE) // FRAME_SAMPLES):
        at = (index % frames) * FRAME_SAMPLES
        ogg = writer.append_pcm(loop[at : at + FRAME_SAMPLES])
        if ogg:
            await ws.send_bytes(b"\x01" + ogg)
        await asyncio.sleep(max(0.0, started + (index + 1) * 0.08 - time.monotonic()))


async def sigterm_with_never_reader(server: RuntimeServer, drain_seconds: int) -> Outcome:
    """SIGTERM with a caller that never reads: the process still exits within the pod's grace
    period (drain + 30 s). Ends the server: run it last."""
    client, sending = await never_reader(server)
    try:
        await asyncio.sleep(1.0)  # its buffers fill
        server.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(server.process.wait, drain_seconds + 30)
        seconds = time.monotonic() - started
    finally:
        sending.cancel()
        client.reset()
    return Outcome(code == 0 and seconds < drain_seconds + 30, f"exit {code}", seconds)


def chat(server: RuntimeServer) -> str:
    return f"{server.ws}/api/chat"


async def no_attack(server: RuntimeServer) -> Outcome:
    """Nothing for 5 s: the observer's gaps and late steps on this machine as it is."""
    await asyncio.sleep(5.0)
    return Outcome(True, "baseline")


# name, attack: in the order the table runs them.
ATTACKS: list[tuple[str, Attack]] = [
    ("none (baseline)", no_attack),
    ("protocol abuse", protocol_abuse),
    ("malformed Opus", malformed_opus),
    ("oversized message", oversized_message),
    ("deflate bomb", deflate_bomb),
    ("Opus bomb", opus_bomb),
    ("burst then close (3)", burst_then_close),
    ("PCM flood (4)", pcm_flood),
    ("Opus flood", opus_flood),
    ("never reads (2)", never_reads),
    ("half-open", half_open),
    ("silent, answers pings (7)", silent_session),
    ("slowloris (7)", slowloris),
    ("upgrade resets (6)", upgrade_resets),
    ("capacity", capacity),
    ("drain abuse (5)", drain_abuse),
    ("bad query strings", bad_query_strings),
    ("HTTP smuggling", http_smuggling),
    ("500 short sessions", short_sessions),
]
