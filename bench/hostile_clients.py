"""Every attack of issue 10 against a real runtime process (the tiny model on the CPU), each
with an observer conversation streaming Ogg/Opus in real time beside it, from a process of its
own so the attacker's work on this machine does not stall the observer's reading.

For each attack the table gives: the observer's longest gap between two audio frames and how
many gaps exceeded 160 ms (two frames), the steps the server finished late meanwhile (every
step carries the observer's frame), whether the attack was contained (the offending
connection closed or refused with the reason the server counted, its slot free) and how long
that took, and the CPU the runtime and its codec workers spent during the attack (the
attack's own cost, whatever else runs on the machine). The load average is printed per row:
gaps measured on a busy machine are the machine's as much as the attack's. The attacks
themselves are in tests/runtime/attacks.py (the fast tests run a subset).

Usage: ``python -m bench.hostile_clients [--out results.json] [--only NAME ...]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from voicefleet.testing import attacks, polling
from voicefleet.testing.attacks import Outcome, chat, open_caller, stream_opus
from voicefleet.testing.runtime_process import RuntimeServer, start_server

TOKEN = "bench-pool-token"
DRAIN_SECONDS = 5
CODEC_WORKERS = 2  # so one worker can be killed while the observer's survives
# Bounds shortened from their defaults so idle and slowloris attacks end in seconds.
SERVER_ARGS = ("--idle-seconds=5", "--header-timeout-seconds=3")
GAP_MS = 160.0  # two frames: one late frame is jitter, a gap over two is heard
OBSERVER_WARMUP_SECONDS = 1.5
AFTER_SECONDS = 1.0  # the observer keeps listening this long after an attack


# --- the observer, in a process of its own ---------------------------------------------------
def observe(url: str, conn: Connection) -> None:
    """Stream until told to stop; send back (session id, audio arrival times, errors)."""
    asyncio.run(_observe(url, conn))


async def _observe(url: str, conn: Connection) -> None:
    arrivals: list[float] = []
    errors: list[str] = []
    async with aiohttp.ClientSession() as client:
        ws, sid = await open_caller(client, url)
        streaming = asyncio.create_task(stream_opus(ws, 600.0))

        async def read() -> None:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                if message.data[:1] == b"\x01":
                    arrivals.append(time.monotonic())
                elif message.data[:1] == b"\x05":
                    errors.append(message.data[1:].decode(errors="replace"))

        reading = asyncio.create_task(read())
        await polling.until(
            lambda: arrivals and arrivals[-1] - arrivals[0] >= OBSERVER_WARMUP_SECONDS,
            timeout=60 + OBSERVER_WARMUP_SECONDS,
            interval=0.05,
        )
        conn.send(sid)  # ready: audio is flowing
        await asyncio.to_thread(conn.recv)  # until told to stop
        streaming.cancel()
        await ws.close()
        reading.cancel()
    conn.send((arrivals, errors))


class Observer:
    def __init__(self, url: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=observe, args=(url, child), daemon=True)
        self.process.start()
        if not self._conn.poll(60):
            self.process.kill()
            raise RuntimeError("no audio within 60 s")
        self.session_id: int = self._conn.recv()

    def stop(self) -> tuple[list[float], list[str]]:
        self._conn.send("stop")
        arrivals, errors = self._conn.recv() if self._conn.poll(30) else ([], ["no answer"])
        self.process.join(10)
        return arrivals, errors


def gaps_in(arrivals: list[float], start: float, end: float) -> list[float]:
    """Milliseconds between consecutive audio frames that arrived from ``start`` to ``end``
    (the one before ``start`` included, so a gap spanning it counts)."""
    inside = [t for t in arrivals if start <= t <= end]
    before = [t for t in arrivals if t < start][-1:]
    times = before + inside
    return [(b - a) * 1000 for a, b in itertools.pairwise(times)]


# --- one row ---------------------------------------------------------------------------------
@dataclass
class Row:
    attack: str
    max_gap_ms: float
    gaps_over: int
    late_steps: int | None
    contained: bool
    how: str
    seconds: float | None
    load: float
    server_cpu_ms: float | None
    observer_errors: list[str]


def cpu_seconds(server: RuntimeServer) -> float | None:
    """CPU time the runtime and its codec workers have used so far (None once it exited)."""
    if server.process.poll() is not None:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in (server.process.pid, *server.codec_worker_pids()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone (a killed worker, the server after SIGTERM)
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def late_steps(server: RuntimeServer) -> int | None:
    try:
        late = server.status()["lateFrames"]
    except OSError:
        return None  # the server has exited (SIGTERM attack)
    assert isinstance(late, int)
    return late


async def run_one(server: RuntimeServer, name: str, attack: Attack) -> Row:
    try:
        observer = await asyncio.to_thread(Observer, chat(server))
    except RuntimeError as exc:  # the server may be full or gone: a row that says so
        return Row(name, 0.0, 0, None, False, f"observer: {exc}", None, 0.0, 0.0, [])
    late_before = late_steps(server)
    cpu_before = cpu_seconds(server)
    started = time.monotonic()
    try:
        outcome = await attack(server, observer.session_id)
    except Exception as exc:  # a broken attack is a row that says so, not a lost table
        outcome = Outcome(False, f"attack failed: {exc!r}")
    ended = time.monotonic()
    cpu_after = cpu_seconds(server)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    await asyncio.sleep(AFTER_SECONDS)
    late_after = late_steps(server)
    arrivals, errors = await asyncio.to_thread(observer.stop)
    gaps = gaps_in(arrivals, started, ended + AFTER_SECONDS)
    late = None if late_before is None or late_after is None else late_after - late_before
    return Row(
        attack=name,
        max_gap_ms=round(max(gaps, default=0.0), 1),
        gaps_over=sum(gap > GAP_MS for gap in gaps),
        late_steps=late,
        contained=outcome.contained,
        how=outcome.how,
        seconds=None if outcome.seconds is None else round(outcome.seconds, 2),
        load=round(os.getloadavg()[0], 2),
        server_cpu_ms=None if cpu is None else round(cpu * 1000),
        observer_errors=errors,
    )


# An attack given the observer's session id (the codec kill must spare the observer's worker).
Attack = Callable[[RuntimeServer, int], Awaitable[Outcome]]


def all_attacks() -> list[tuple[str, Attack]]:
    def plain(attack: attacks.Attack) -> Attack:
        async def run(server: RuntimeServer, _observer: int) -> Outcome:
            return await attack(server)

        return run

    async def codec_kill(server: RuntimeServer, observer: int) -> Outcome:
        # Sessions go to codec workers by id.
        return await attacks.codec_worker_killed(server, spare=observer % CODEC_WORKERS)

    async def sigterm(server: RuntimeServer, _observer: int) -> Outcome:
        return await attacks.sigterm_with_never_reader(server, DRAIN_SECONDS)

    return [
        *((name, plain(attack)) for name, attack in attacks.ATTACKS),
        ("codec worker SIGKILL (1)", codec_kill),
        ("SIGTERM, never-reader (2)", sigterm),
    ]


async def run(server: RuntimeServer, only: list[str]) -> list[Row]:
    rows = []
    for name, attack in all_attacks():
        if only and not any(word.lower() in name.lower() for word in only):
            continue
        row = await run_one(server, name, attack)
        rows.append(row)
        print(f"  {format_row(row)}", flush=True)
    return rows


HEADER = (
    f"{'attack':<28} {'max gap ms':>10} {'>' + str(int(GAP_MS)) + ' ms':>7} "
    f"{'late':>5}  {'contained':<9} {'s':>6}  {'cpu ms':>6}  {'load':>5}  how"
)


def format_row(row: Row) -> str:
    seconds = "" if row.seconds is None else f"{row.seconds:.2f}"
    late = "n/a" if row.late_steps is None else str(row.late_steps)
    cpu = "n/a" if row.server_cpu_ms is None else f"{row.server_cpu_ms:.0f}"
    contained = "yes" if row.contained else "NO"
    return (
        f"{row.attack:<28} {row.max_gap_ms:>10.0f} {row.gaps_over:>7} {late:>5}  "
        f"{contained:<9} {seconds:>6}  {cpu:>6}  {row.load:>5.2f}  {row.how}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--only", nargs="*", default=[], help="attacks whose name has a word")
    parser.add_argument("--log", type=Path, help="keep the runtime's log here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        server = start_server(
            Path(tmp),
            max_sessions=4,
            max_session_seconds=120,
            token=TOKEN,
            drain_seconds=DRAIN_SECONDS,
            codec_workers=CODEC_WORKERS,
            extra_args=SERVER_ARGS,
        )
        print(HEADER, flush=True)
        try:
            rows = asyncio.run(run(server, args.only))
        finally:
            server.stop()
            if args.log:
                args.log.write_text(server.log())
    load_after = os.getloadavg()
    print(f"\nload average before {load_before}, after {load_after} on {os.cpu_count()} CPUs")
    if args.out:
        result: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "load_before": load_before,
            "load_after": load_after,
            "server_args": list(SERVER_ARGS),
            "rows": [asdict(row) for row in rows],
        }
        args.out.write_text(json.dumps(result, indent=2))
    bad = [row.attack for row in rows if not row.contained or row.gaps_over]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
