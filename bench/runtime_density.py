"""Runtime density benchmark on one GPU: how many real-time conversations the full server
holds, Moshi and Hertz-dev, each against its bare model loop on the same card.

Two parts, each in its own process so they never share GPU memory:

- ``baseline``: the plain loop (Mimi encode, ``LMGen.step``, Mimi decode for B sessions in
  one batch under ``streaming(B)``), 40 warm-up frames, 100 timed frames.
- ``server``: ``python -m voicefleet.runtime serve --backend moshi --weights random`` (the
  full Moshi 7B architecture, random weights, bf16) and N real WebSocket clients on the
  Moshi protocol, spread over client processes, each streaming Ogg/Opus in real time and
  decoding what comes back. Frame-step p50/p95 and late frames come from the server's
  ``/v1/status`` while every client streams; time to first audio is measured by the clients
  (connect to first decoded audio).

Hertz-dev (``hertz``): the bare loop is the runtime's own batched step (``HertzBackend``:
streaming codec, backbone, resynthesizer, CUDA graph) over B slots with a 10 s prompt, timed
over 100 frames after 20; it also measures the GPU memory each slot's state takes. Then the
server with the largest batch whose bare p95 leaves room, with clients streaming for the
whole session cap (240 s), and the Moshi server of the same run as the baseline.

Usage (on the GPU machine): ``python -m bench.runtime_density all --out results.json``
or one part: ``baseline --points 3000:1,40 1500:80`` / ``server --seconds-cap 240
--sessions 40`` / ``hertz --hertz-batches 1,44,48``. Prints one table at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch
from moshi.models import loaders
from moshi.models.lm import LMGen

from bench.density_server import FRAME, server


# --- the bare-model baseline ---------------------------------------------------------------
def baseline(points: list[tuple[int, list[int]]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for context, batches in points:
        torch.manual_seed(0)
        lm = loaders.get_moshi_lm(
            None, lm_kwargs_overrides={"context": context}, device="cuda", dtype=torch.bfloat16
        )
        mimi = loaders.get_mimi(None, device="cuda")
        weights_gib = torch.cuda.memory_allocated() / 2**30
        lm_gen = LMGen(lm, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
        for batch in batches:
            torch.cuda.reset_peak_memory_stats()
            row: dict[str, Any] = {"part": "bare", "context": context, "sessions": batch}
            try:
                with torch.no_grad(), lm_gen.streaming(batch), mimi.streaming(batch):
                    inputs = [torch.randn(batch, 1, FRAME, device="cuda") * 0.1 for _ in range(8)]
                    times: list[float] = []
                    for i in range(140):
                        torch.cuda.synchronize()
                        start = time.perf_counter()
                        codes = mimi.encode(inputs[i % 8])
                        tokens = lm_gen.step(codes)
                        if tokens is not None:
                            mimi.decode(tokens[:, 1:].clamp(min=0))
                        torch.cuda.synchronize()
                        if i >= 40:
                            times.append((time.perf_counter() - start) * 1000)
                p50, p95 = np.percentile(times, [50, 95])
                row |= {
                    "p50_ms": round(float(p50), 1),
                    "p95_ms": round(float(p95), 1),
                    "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
                    "weights_gib": round(weights_gib, 2),
                }
            except torch.cuda.OutOfMemoryError:
                row["error"] = "out of memory"
            torch.cuda.empty_cache()
            print(json.dumps(row), flush=True)
            rows.append(row)
        del lm_gen, lm, mimi
        torch.cuda.empty_cache()
    return rows


# --- Hertz-dev ---------------------------------------------------------------------------------
PROMPT_SECONDS = 10
# Bare-loop p95 a batch may take to go on to the server run: the 60 ms target less what the
# server adds (Moshi: 2-5 ms) and a margin.
HERTZ_BARE_MS = 56.0
ENV_ATTENTION = "VOICEFLEET_HERTZ_ATTENTION"
ATTENTIONS = ("matmul", "sdpa")


def write_prompt(path: Path) -> Path:
    """A 10 s stereo 16 kHz WAV (two different tones): the longest prompt the runtime keeps."""
    rate = 16_000
    t = np.arange(PROMPT_SECONDS * rate) / rate
    stereo = np.stack([0.2 * np.sin(2 * np.pi * 180 * t), 0.2 * np.sin(2 * np.pi * 240 * t)], 1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((stereo * 32767).astype("<i2").tobytes())
    return path


def hertz_baseline(
    batches: list[int], seconds_cap: int, prompt: str, backend_name: str
) -> list[dict[str, Any]]:
    """The batched Hertz-dev step alone, per batch size; one model for all of them."""
    from voicefleet.runtime.backends import get_loader  # noqa: PLC0415
    from voicefleet.runtime.backends.base import Sampling  # noqa: PLC0415
    from voicefleet.runtime.backends.hertz.backend import HertzBackend  # noqa: PLC0415
    from voicefleet.runtime.config import RuntimeConfig  # noqa: PLC0415

    torch.set_grad_enabled(False)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    config = RuntimeConfig(
        backend=backend_name, max_sessions=1, max_session_seconds=seconds_cap, prompt=prompt
    )
    first = get_loader(backend_name)(config, device)
    assert isinstance(first, HertzBackend)
    weights = torch.cuda.memory_allocated() if cuda else 0
    rows: list[dict[str, Any]] = []
    for batch in batches:
        backend = HertzBackend(
            first.model,
            first.prompt_audio,
            name="random",
            variant=first.variant,
            device=device,
            dtype=first.dtype,
            context_steps=first.context_steps,
            graphs=True,
        )
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        row: dict[str, Any] = {"part": "hertz-bare", "context": backend.rows(), "sessions": batch}
        try:
            backend.start(batch)
            state = torch.cuda.memory_allocated() - weights if cuda else 0
            backend.reset(list(range(batch)), [Sampling()] * batch)
            backend.freeze(np.ones(batch, dtype=bool))
            frames = [np.random.randn(batch, 2000).astype(np.float32) * 0.1 for _ in range(8)]
            times = []
            for i in range(120):
                start = time.perf_counter()
                backend.step(frames[i % 8])
                if i >= 20:
                    times.append((time.perf_counter() - start) * 1000)
            p50, p95 = np.percentile(times, [50, 95])
            row |= {
                "p50_ms": round(float(p50), 1),
                "p95_ms": round(float(p95), 1),
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else 0,
                "weights_gib": round(weights / 2**30, 3),
                "state_gib_per_session": round(state / batch / 2**30, 4),
                "cuda_graph": backend._graph is not None,
            }
        except torch.cuda.OutOfMemoryError:
            row["error"] = "out of memory"
        print(json.dumps(row), flush=True)
        rows.append(row)
        del backend
        if cuda:
            torch.cuda.empty_cache()
    return rows


def hertz(
    batches: list[int], seconds_cap: int, stream_s: float, procs: int, backend: str
) -> list[dict[str, Any]]:
    """Bare loop at each batch, for each way of attending; then the server with the way and
    the largest batch whose bare p95 leaves room under the 60 ms target, streamed for the
    whole cap (the next smaller batch if that one does not start)."""
    prompt = str(write_prompt(Path("/tmp/voicefleet-prompt.wav")))
    context = multiprocessing.get_context("spawn")
    rows: list[dict[str, Any]] = []
    for attention in ATTENTIONS:
        os.environ[ENV_ATTENTION] = attention  # read by the child process at import
        with context.Pool(1) as pool:
            part = pool.apply(hertz_baseline, (batches, seconds_cap, prompt, backend))
        rows += [r | {"attention": attention} for r in part]
    fits = sorted(
        ((r["sessions"], -r["p95_ms"], r["attention"]) for r in rows if "p95_ms" in r),
        reverse=True,
    )
    fits = [f for f in fits if -f[1] <= HERTZ_BARE_MS]
    if fits:
        os.environ[ENV_ATTENTION] = fits[0][2]
        sizes = sorted({f[0] for f in fits}, reverse=True)[:2]
        extra = (f"--prompt={prompt}",)
        row = server(seconds_cap, sizes, stream_s, procs, backend, extra=extra)
        rows.append(row | {"attention": fits[0][2]})
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| part | context | sessions | p50 ms | p95 ms | late frames | TTFA p50 | TTFA p95 "
        "| GPU GiB |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['part']} | {r.get('context')} | {r['sessions']} | {r['error']} |")
            continue
        gib = r.get("peak_gib", r.get("gpu_used_gib"))
        late = r.get("late_frames", "")
        part = f"{r['part']} {r['kv_cache_dtype']}" if "kv_cache_dtype" in r else r["part"]
        lines.append(
            f"| {part} | {r['context']} | {r['sessions']} | {r['p50_ms']} | {r['p95_ms']} "
            f"| {late} | {r.get('ttfa_p50_ms', '')} | {r.get('ttfa_p95_ms', '')} | {gib} |"
        )
    return "\n".join(lines)


def _points(specs: list[str]) -> list[tuple[int, list[int]]]:
    out = []
    for spec in specs:
        context, batches = spec.split(":")
        out.append((int(context), [int(b) for b in batches.split(",")]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("baseline", "server", "hertz", "all"))
    parser.add_argument("--hertz-batches", default="1,44,48")
    parser.add_argument("--hertz-stream-seconds", type=float, default=236.0)
    parser.add_argument("--hertz-backend", default="hertz-dev", help="hertz-tiny: CPU smoke")
    parser.add_argument("--hertz-cap", type=int, default=240)
    parser.add_argument("--points", nargs="*", default=["3000:1,40", "1500:80"])
    parser.add_argument("--seconds-cap", type=int, nargs="*", default=[240])
    parser.add_argument("--sessions", nargs="*", default=["40,38"])
    parser.add_argument("--stream-seconds", type=float, default=25.0)
    parser.add_argument("--client-procs", type=int, default=6)
    parser.add_argument("--backend", default="moshi", help="tiny: a CPU smoke run of this script")
    parser.add_argument(
        "--kv-cache-dtype",
        nargs="*",
        help="per --sessions entry: bf16 (default) or fp8 (runtime/backends/kv_fp8.py)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    if args.part in ("hertz", "all"):
        batches = [int(b) for b in args.hertz_batches.split(",")]
        rows += hertz(
            batches,
            args.hertz_cap,
            args.hertz_stream_seconds,
            args.client_procs,
            args.hertz_backend,
        )
        print(_table(rows), flush=True)
    if args.part in ("baseline", "all"):
        # A child process: its GPU memory is gone before a server starts.
        # One child process per context length: its GPU memory (weights, compiled kernels,
        # CUDA graphs) is surely gone before the next model or a server starts.
        context = multiprocessing.get_context("spawn")
        for point in _points(args.points):
            with context.Pool(1) as pool:
                rows += pool.apply(baseline, ([point],))
    if args.part in ("server", "all"):
        kv = args.kv_cache_dtype or ["bf16"] * len(args.sessions)
        for cap, sizes, dtype in zip(args.seconds_cap, args.sessions, kv, strict=True):
            wanted = [int(s) for s in sizes.split(",")]
            rows.append(
                server(
                    cap,
                    wanted,
                    args.stream_seconds,
                    args.client_procs,
                    args.backend,
                    kv_cache_dtype=dtype,
                )
            )
    print(_table(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
