"""What the session gateway adds: N concurrent conversations at real time (one 80 ms frame
per conversation per 80 ms each way), straight to the upstream and then through a real
``voicefleet gateway`` process, in the same run; the gateway's CPU from /proc.

Upstreams:
- ``--upstream echo`` (default): ``bench/gateway_echo.py``, which speaks the runtime's wire
  framing (status contract, Moshi handshake) and echoes every message at once: hundreds of
  conversations on a small machine, where the tiny model holds a few. Each conversation sends
  a 240-byte binary message (an 80 ms Ogg/Opus page at ~24 kbit/s) every 80 ms carrying its
  send time; the echo's round trip is the latency.
- ``--upstream runtime``: real runtime processes with the tiny model, real Ogg/Opus both
  ways; the latency is the round trip of a WebSocket ping sent every 4th frame (the runtime
  answers it from its session's sender, ahead of audio; through the gateway it is relayed
  like any message).

Added latency = the gateway run's round-trip percentile less the direct run's, at the same
conversation count (a round trip crosses the gateway twice). "In gateway" is the gateway's own
histogram (``relay_latency_seconds``: read from one side to written to the other, one
crossing), the upper bound of the bucket holding the percentile. The load average is printed:
on a shared machine the numbers are the machine's as much as the gateway's.

Each level runs ``--rounds`` times each way, direct and gateway alternated, so both meet the
same spells of load from whatever else runs on the machine.

Usage: ``python -m bench.gateway_relay [--conversations 25,50,100,200] [--seconds 10]
[--rounds 3] [--upstream echo|runtime] [--client-processes 2] [--out results.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from voicefleet import constants
from voicefleet.testing.gateway_process import GatewayProcess, start_gateway
from voicefleet.testing.loopback import free_port, http
from voicefleet.testing.polling import wait_for
from voicefleet.testing.runtime_process import RuntimeServer, start_server, stop_process

FRAME_SECONDS = 0.08
PAYLOAD_BYTES = 240
PING_EVERY = 4  # frames; pings are charged to the runtime's input budget like messages
WARMUP_SECONDS = 2.0
CONNECT_SECONDS = 4.0  # for the client processes to start and every conversation to connect
GOAL_P95_MS = 1.0
ECHO = "echo"
RUNTIME = "runtime"
TIME = struct.Struct("<d")


# --- clients, in processes of their own -------------------------------------------------------
def clients(urls: list[str], start: float, seconds: float, upstream: str, conn: Connection) -> None:
    """Run one conversation per URL; send back the round trips (seconds) in the window."""
    conn.send(asyncio.run(_clients(urls, start, seconds, upstream)))
    conn.close()


@dataclass
class Schedule:
    """What every conversation of a run shares: how long it talks, which of its round trips
    count (sent within the window, past the warm-up), and where they go."""

    seconds: float
    window: tuple[float, float]
    rtts: list[float]

    def keep(self, sent: float) -> None:
        if self.window[0] <= sent <= self.window[1]:
            self.rtts.append(time.monotonic() - sent)


async def _clients(urls: list[str], start: float, seconds: float, upstream: str) -> list[float]:
    schedule = Schedule(seconds, (start + WARMUP_SECONDS, start + seconds), [])
    talk = _echo_conversation if upstream == ECHO else _runtime_conversation
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Each conversation's frames at its own phase of the 80 ms, as callers' would be.
        await asyncio.gather(
            *(
                talk(session, url, start + index * FRAME_SECONDS / len(urls), schedule)
                for index, url in enumerate(urls)
            )
        )
    return schedule.rtts


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def _echo_conversation(
    session: aiohttp.ClientSession, url: str, start: float, schedule: Schedule
) -> None:
    pad = bytes(PAYLOAD_BYTES - 1 - TIME.size)
    async with session.ws_connect(url, compress=0) as ws:
        await ws.receive()  # the handshake

        async def receive() -> None:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x01":
                    schedule.keep(TIME.unpack_from(message.data, 1)[0])

        receiver = asyncio.create_task(receive())
        for index in range(int(schedule.seconds / FRAME_SECONDS)):
            await _sleep_until(start + index * FRAME_SECONDS)
            await ws.send_bytes(b"\x01" + TIME.pack(time.monotonic()) + pad)
        await asyncio.sleep(0.3)  # the last echoes
        await ws.close()
        await receiver


async def _runtime_conversation(
    session: aiohttp.ClientSession, url: str, start: float, schedule: Schedule
) -> None:
    import sphn  # noqa: PLC0415 - only this mode needs the codec

    from voicefleet.testing.clients import FRAME_SAMPLES, SAMPLE_RATE, tone  # noqa: PLC0415

    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    loop = tone(2.0)
    frames = len(loop) // FRAME_SAMPLES
    async with session.ws_connect(url, compress=0, autoping=False) as ws:
        await ws.receive()  # the handshake

        async def receive() -> None:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.PING:
                    await ws.pong(message.data)  # the runtime's lag probe
                elif message.type is aiohttp.WSMsgType.PONG and len(message.data) == TIME.size:
                    schedule.keep(TIME.unpack(message.data)[0])

        receiver = asyncio.create_task(receive())
        for index in range(int(schedule.seconds / FRAME_SECONDS)):
            await _sleep_until(start + index * FRAME_SECONDS)
            at = (index % frames) * FRAME_SAMPLES
            ogg = writer.append_pcm(loop[at : at + FRAME_SAMPLES])
            if ogg:
                await ws.send_bytes(b"\x01" + ogg)
            if index % PING_EVERY == 0:
                await ws.ping(TIME.pack(time.monotonic()))
        await asyncio.sleep(0.3)
        await ws.close()
        await receiver


# --- measuring --------------------------------------------------------------------------------
@dataclass
class Level:
    conversations: int
    path: str  # "direct" or "gateway"
    samples: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    gateway_cpu_percent: float | None = None
    in_gateway_ms: dict[str, float] | None = None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat (11 and 12 after the command name).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _histogram(gateway: GatewayProcess) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of relay_latency_seconds, both directions summed."""
    body = http("GET", f"{gateway.http}{constants.PATH_METRICS}")[2].decode()
    buckets: dict[float, float] = {}
    name = constants.GATEWAY_METRIC_PREFIX + "relay_latency_seconds_bucket"
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name:
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return sorted(buckets.items())


def _bucket_quantiles(counts: list[tuple[float, float]]) -> dict[str, float]:
    """From cumulative bucket counts: the upper bound of the bucket holding each quantile."""
    total = counts[-1][1] if counts else 0.0
    answer = {}
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        bound = next((bound for bound, count in counts if count >= q * total), float("inf"))
        answer[label] = bound * 1000
    return answer


@dataclass
class Run:
    """One run's raw measurements: round trips, and the gateway's CPU and histogram."""

    rtts: list[float]
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    buckets: list[tuple[float, float]] | None = None


def run_once(
    urls: list[str], upstream: str, seconds: float, processes: int, gateway: GatewayProcess | None
) -> Run:
    start = time.monotonic() + CONNECT_SECONDS
    context = multiprocessing.get_context("spawn")
    pipes, workers = [], []
    for share in range(processes):
        mine = urls[share::processes]
        if not mine:
            continue
        receiving, sending = context.Pipe(duplex=False)
        worker = context.Process(target=clients, args=(mine, start, seconds, upstream, sending))
        worker.start()
        pipes.append(receiving)
        workers.append(worker)
    time.sleep(max(0.0, start + WARMUP_SECONDS - time.monotonic()))
    cpu_before = _cpu_seconds(gateway.process.pid) if gateway else 0.0
    buckets_before = _histogram(gateway) if gateway else []
    measured_from = time.monotonic()
    time.sleep(max(0.0, start + seconds - time.monotonic()))
    run = Run([])
    if gateway is not None:
        run.cpu_seconds = _cpu_seconds(gateway.process.pid) - cpu_before
        run.wall_seconds = time.monotonic() - measured_from
        after = _histogram(gateway)
        run.buckets = [
            (bound, a - b) for (bound, a), (_, b) in zip(after, buckets_before, strict=True)
        ]
    for pipe in pipes:
        run.rtts.extend(pipe.recv())
    for worker in workers:
        worker.join()
    if not run.rtts:
        raise RuntimeError("no round trips measured: did the conversations connect?")
    return run


def level_of(runs: list[Run], conversations: int, gateway: bool) -> Level:
    """The runs of one level and path, pooled."""
    rtts = [rtt for run in runs for rtt in run.rtts]
    cpu = None
    in_gateway = None
    if gateway:
        wall = sum(run.wall_seconds for run in runs)
        cpu = round(100 * sum(run.cpu_seconds for run in runs) / wall, 1)
        pooled: dict[float, float] = {}
        for run in runs:
            for bound, count in run.buckets or []:
                pooled[bound] = pooled.get(bound, 0.0) + count
        in_gateway = _bucket_quantiles(sorted(pooled.items()))
    return Level(
        conversations=conversations,
        path="gateway" if gateway else "direct",
        samples=len(rtts),
        p50_ms=round(_percentile(rtts, 0.50), 3),
        p95_ms=round(_percentile(rtts, 0.95), 3),
        p99_ms=round(_percentile(rtts, 0.99), 3),
        gateway_cpu_percent=cpu,
        in_gateway_ms=in_gateway,
    )


# --- the upstreams ---------------------------------------------------------------------------
def start_echo(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (directory / "echo.log").open("wb")
    command = [sys.executable, "-m", "bench.gateway_echo", f"--port={port}"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return http("GET", f"{url}{constants.PATH_READYZ}")[0] == 200
        except OSError:
            return False

    wait_for(answers, 30, "the echo upstream")
    return process, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", default="25,50,100,200")
    parser.add_argument("--seconds", type=float, default=10.0, help="per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per level and path")
    parser.add_argument("--upstream", choices=(ECHO, RUNTIME), default=ECHO)
    parser.add_argument("--runtimes", type=int, default=2, help="runtime mode: processes")
    parser.add_argument("--slots", type=int, default=2, help="runtime mode: slots each")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    counts = [int(n) for n in args.conversations.split(",")]
    directory = Path(tempfile.mkdtemp(prefix="gateway-relay-"))
    servers: list[RuntimeServer] = []
    echo: subprocess.Popen[bytes] | None = None
    if args.upstream == ECHO:
        echo, echo_url = start_echo(directory)
        upstreams = [echo_url]
    else:
        for _ in range(args.runtimes):
            servers.append(
                start_server(directory, max_sessions=args.slots, max_session_seconds=600)
            )
        upstreams = [server.http for server in servers]
        counts = [n for n in counts if n <= args.runtimes * args.slots] or [
            args.runtimes * args.slots
        ]
    gateway = start_gateway(directory, upstreams)
    rows: list[Level] = []
    load_before = os.getloadavg()
    try:
        for count in counts:
            direct = [
                upstreams[i % len(upstreams)].replace("http", "ws", 1) + constants.PATH_MOSHI_CHAT
                for i in range(count)
            ]
            through = [f"{gateway.ws}{constants.PATH_MOSHI_CHAT}"] * count
            runs: dict[bool, list[Run]] = {False: [], True: []}
            # Alternated, so both paths meet the same spells of load from the machine's others.
            for _ in range(args.rounds):
                for via in (False, True):
                    runs[via].append(
                        run_once(
                            through if via else direct,
                            args.upstream,
                            args.seconds,
                            args.client_processes,
                            gateway if via else None,
                        )
                    )
                    for server in servers:
                        server.wait_idle(30)
            rows += [level_of(runs[False], count, False), level_of(runs[True], count, True)]
            _print_pair(rows[-2], rows[-1])
    finally:
        gateway.stop()
        for server in servers:
            server.stop()
        if echo is not None:
            stop_process(echo, 5)
    load_after = os.getloadavg()
    print(_table(rows, args, load_before, load_after))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "machine": platform.node(),
                    "cpus": os.cpu_count(),
                    "upstream": args.upstream,
                    "seconds": args.seconds,
                    "rounds": args.rounds,
                    "clientProcesses": args.client_processes,
                    "loadBefore": load_before,
                    "loadAfter": load_after,
                    "rows": [asdict(row) for row in rows],
                },
                indent=2,
            )
        )
    return 0


def _print_pair(direct: Level, through: Level) -> None:
    print(
        f"  {direct.conversations} conversations: direct p95 {direct.p95_ms:.3f} ms, "
        f"gateway p95 {through.p95_ms:.3f} ms, gateway CPU {through.gateway_cpu_percent}%",
        flush=True,
    )


def _table(rows: list[Level], args: argparse.Namespace, before: Any, after: Any) -> str:
    lines = [
        f"upstream {args.upstream}, {args.rounds} alternated runs of {args.seconds:g} s per "
        f"level and path ({WARMUP_SECONDS:g} s warm-up each), "
        f"{args.client_processes} client processes, {os.cpu_count()} CPUs, load average "
        f"{before[0]:.2f} before, {after[0]:.2f} after",
        "CONVERSATIONS  GATEWAY CPU %  DIRECT RTT p50/p95/p99 MS  GATEWAY RTT p50/p95/p99 MS  "
        "ADDED p50/p95/p99 MS  IN GATEWAY p50/p95/p99 MS (<=)",
    ]
    best: tuple[float, int, float] | None = None
    for direct, through in zip(rows[::2], rows[1::2], strict=True):
        added = [
            through.p50_ms - direct.p50_ms,
            through.p95_ms - direct.p95_ms,
            through.p99_ms - direct.p99_ms,
        ]
        inside = through.in_gateway_ms or {}
        lines.append(
            f"{through.conversations:<14} {through.gateway_cpu_percent or 0:<14.1f} "
            f"{direct.p50_ms:6.2f}/{direct.p95_ms:6.2f}/{direct.p99_ms:6.2f}      "
            f"{through.p50_ms:6.2f}/{through.p95_ms:6.2f}/{through.p99_ms:6.2f}       "
            f"{added[0]:5.2f}/{added[1]:5.2f}/{added[2]:5.2f}    "
            f"{inside.get('p50', 0):.2f}/{inside.get('p95', 0):.2f}/{inside.get('p99', 0):.2f}"
        )
        cpu = through.gateway_cpu_percent or 0.0
        if added[1] <= GOAL_P95_MS and cpu > 0:
            per_core = through.conversations / (cpu / 100)
            if best is None or through.conversations > best[1]:
                best = (per_core, through.conversations, cpu)
    if best is None:
        lines.append(f"no level kept the added p95 at or under {GOAL_P95_MS:g} ms")
    else:
        lines.append(
            f"at {best[1]} conversations (added p95 <= {GOAL_P95_MS:g} ms) the gateway used "
            f"{best[2]:.1f}% of a core: about {best[0]:.0f} conversations per gateway core"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
