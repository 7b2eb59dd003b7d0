"""Parts that die and a server that stops, with a caller that never reads; the baseline."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import aiohttp

from voicefleet.testing.attacks.common import (
    Outcome,
    Watch,
    chat,
    open_caller,
    read_until_closed,
    stream_opus,
)
from voicefleet.testing.attacks.connections import never_reader
from voicefleet.testing.clients import moshi_session
from voicefleet.testing.runtime_process import RuntimeServer


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


async def no_attack(server: RuntimeServer) -> Outcome:
    """Nothing for 5 s: the observer's gaps and late steps on this machine as it is."""
    await asyncio.sleep(5.0)
    return Outcome(True, "baseline")
