"""The server part of ``bench/runtime_density.py``: the runtime as a real process and N real
WebSocket clients on the Moshi protocol, spread over client processes, each streaming
Ogg/Opus in real time and decoding what comes back. Frame-step p50/p95 and late frames come
from the server's ``/v1/status`` while every client streams; time to first audio is measured
by the clients (connect to first decoded audio)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import sphn

FRAME = 1920
FRAME_S = 0.08
RATE = 24_000


# --- real clients ------------------------------------------------------------------------------
async def _client(url: str, seconds: float, delay: float) -> dict[str, Any]:
    await asyncio.sleep(delay)
    writer = sphn.OpusStreamWriter(RATE)
    reader = sphn.OpusStreamReader(RATE)
    t = np.arange(int(seconds * RATE), dtype=np.float32) / RATE
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    result: dict[str, Any] = {"ttfa_s": None, "samples": 0, "errors": [], "closed": None}
    connected = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            connected = time.monotonic()

            async def send() -> None:
                for i in range(len(audio) // FRAME):
                    ogg = writer.append_pcm(audio[i * FRAME : (i + 1) * FRAME])
                    if ogg:
                        await ws.send_bytes(b"\x01" + ogg)
                    wake = connected + (i + 1) * FRAME_S
                    await asyncio.sleep(max(0.0, wake - time.monotonic()))
                await ws.close()

            sender = asyncio.create_task(send())
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                data: bytes = message.data
                if data[0] == 1:
                    pcm = reader.append_bytes(data[1:])
                    if pcm.shape[-1] and result["ttfa_s"] is None:
                        result["ttfa_s"] = time.monotonic() - connected
                    result["samples"] += int(pcm.shape[-1])
                elif data[0] == 5:
                    result["errors"].append(data[1:].decode())
            result["closed"] = ws.close_code
            sender.cancel()
    except Exception as exc:
        result["errors"].append(f"{type(exc).__name__}: {exc}")
    result["seconds"] = time.monotonic() - connected
    return result


def _client_process(url: str, count: int, seconds: float, offset: float, queue: Any) -> None:
    async def run() -> list[dict[str, Any]]:
        # Arrivals spread over 2 s: sessions join while others are streaming.
        jobs = [_client(url, seconds, offset + 2.0 * i / max(1, count)) for i in range(count)]
        return list(await asyncio.gather(*jobs))

    queue.put(asyncio.run(run()))


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _poll(base: str, stream_s: float) -> tuple[dict[str, Any], dict[str, Any], list[float]]:
    """/v1/status from 6 s in (all joined, warm) to 1 s before the end, every 10 s: (first,
    last, the step p95 of each 20 s window seen)."""
    time.sleep(6.0)
    before = _get(f"{base}/v1/status")
    end = time.monotonic() + max(1.0, stream_s - 7.0)
    p95s = []
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(10.0, left))
        during = _get(f"{base}/v1/status")
        p95s.append(float(during["frameMs"]["p95"]))
    return before, during, p95s


def server(
    seconds_cap: int,
    sessions: list[int],
    stream_s: float,
    procs: int,
    backend: str = "moshi",
    *,
    extra: tuple[str, ...] = (),
    kv_cache_dtype: str = "bf16",
) -> dict[str, Any]:
    port = 18998
    for wanted in sessions:
        command = [
            sys.executable, "-m", "voicefleet.runtime", "serve", f"--backend={backend}",
            "--host=127.0.0.1", f"--port={port}",
            f"--max-sessions={wanted}", f"--max-session-seconds={seconds_cap}",
            f"--codec-workers={min(8, (os.cpu_count() or 2) // 2)}",
        ]  # fmt: skip
        if backend in ("moshi", "hertz-dev"):
            command.append("--weights=random")  # full-size architecture, random bf16 weights
        command += (*extra, f"--kv-cache-dtype={kv_cache_dtype}")
        log_path = Path(os.environ.get("OUT", "/tmp")) / f"server-{seconds_cap}-{wanted}.log"
        log = log_path.open("wb")
        started = time.monotonic()
        # A neutral working directory: the repository root holds operator/, which would shadow
        # the standard library's operator module for `python -m`.
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        ready = False
        while proc.poll() is None and time.monotonic() - started < 400:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                    ready = True
                    break
            except OSError:
                time.sleep(1)
        if not ready:
            proc.kill()
            proc.wait()
            print(f"server with {wanted} slots did not start; log tail:", flush=True)
            print(log_path.read_text(errors="replace")[-3000:], flush=True)
            port += 1
            continue
        load_s = time.monotonic() - started
        base = f"http://127.0.0.1:{port}"
        url = f"ws://127.0.0.1:{port}/api/chat"
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        per = [wanted // procs + (1 if i < wanted % procs else 0) for i in range(procs)]
        workers = [
            context.Process(target=_client_process, args=(url, n, stream_s, 0.0, queue))
            for n in per
            if n
        ]
        t0 = time.monotonic()
        for worker in workers:
            worker.start()
        before, during, p95s = _poll(base, stream_s)
        results: list[dict[str, Any]] = []
        for _ in workers:
            results.extend(queue.get(timeout=stream_s + 120))
        for worker in workers:
            worker.join(30)
        elapsed = time.monotonic() - t0
        proc.terminate()
        proc.wait(60)
        ttfa = [r["ttfa_s"] * 1000 for r in results if r["ttfa_s"] is not None]
        gpu = during["gpu"]
        row = {
            "part": "server",
            "context": during["model"]["contextSteps"],
            "sessions": wanted,
            "connected": sum(1 for r in results if r["samples"] > 0),
            "p50_ms": during["frameMs"]["p50"],
            "p95_ms": during["frameMs"]["p95"],
            "p95_ms_worst_window": max(p95s),
            "late_frames": during["lateFrames"] - before["lateFrames"],
            "late_frames_total": during["lateFrames"],
            "ttfa_p50_ms": round(float(np.percentile(ttfa, 50)), 1) if ttfa else None,
            "ttfa_p95_ms": round(float(np.percentile(ttfa, 95)), 1) if ttfa else None,
            "audio_s_per_session": round(float(np.mean([r["samples"] for r in results])) / RATE, 2),
            "backend": backend,
            "kv_cache_dtype": kv_cache_dtype,
            "errors": sorted({e for r in results for e in r["errors"]})[:5],
            "gpu_used_gib": round(gpu["memoryUsedBytes"] / 2**30, 1) if gpu["available"] else None,
            "gpu": gpu.get("name"),
            "load_s": round(load_s, 1),
            "stream_s": stream_s,
            "wall_s": round(elapsed, 1),
        }
        print(json.dumps(row), flush=True)
        return row
    return {"part": "server", "sessions": sessions, "error": "no server size started"}
