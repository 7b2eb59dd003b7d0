"""What importing moved conversations costs a busy receiving pod: the frame steps of its other
conversations while 240 s conversations are replayed into its free slot, with the replay in
CUDA graphs (the runtime's) and eager (as before), beside the same pod with no import, all in
one process on one device.

    python -m bench.move_import [--backend moshi] [--sessions 40] [--seconds 240]
        [--kv-cache-dtype bf16] [--imports 3] [--device cuda] [--out results.json]

The pod is the runtime's own engine (frame clock, moves scheduled between ticks) over
``--sessions`` slots, all but one active (stepping on silence: a step costs the same whatever
the audio). Each import is a conversation of the whole context (3000 steps at 240 s), its
history random tokens (the replay's cost does not depend on their values), imported into the
free slot; when it is ready the slot is released and the next one starts. Prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
import time
from typing import Any

import numpy as np
import torch

from bench import moshi_pod
from voicefleet.runtime.backends.moshi_move import HISTORY
from voicefleet.runtime.backends.moshi_replay import ReplayRow
from voicefleet.runtime.backends.moshi_step import MoshiBackend
from voicefleet.runtime.backends.slot_state import SlotState
from voicefleet.runtime.engine import BatchedEngine
from voicefleet.runtime.frame_stats import FrameStats
from voicefleet.runtime.limits import IMPORT_CHUNK_STEPS

BASELINE_TICKS = 150


@dataclasses.dataclass
class Phase:
    name: str
    steps_ms: list[float] = dataclasses.field(default_factory=list)
    late: int = 0
    chunks_ms: list[float] = dataclasses.field(default_factory=list)
    imports_s: list[float] = dataclasses.field(default_factory=list)

    def row(self) -> dict[str, Any]:
        steps = np.array(self.steps_ms)
        chunks = np.array(self.chunks_ms) if self.chunks_ms else np.zeros(1)
        return {
            "phase": self.name,
            "ticks": len(steps),
            "step_p50_ms": round(float(np.percentile(steps, 50)), 1),
            "step_p95_ms": round(float(np.percentile(steps, 95)), 1),
            "step_max_ms": round(float(steps.max()), 1),
            "late_frames": self.late,
            "chunks": len(self.chunks_ms),
            "chunk_p50_ms": round(float(np.percentile(chunks, 50)), 1),
            "chunk_max_ms": round(float(chunks.max()), 1),
            "import_s": [round(s, 2) for s in self.imports_s],
        }


class Recorder:
    """Every tick's step time and every import chunk's, filed under the current phase."""

    def __init__(self) -> None:
        self.phase = Phase("warm-up")
        self.lock = threading.Lock()

    def on_step(self, seconds: float, late: bool) -> None:
        with self.lock:
            self.phase.steps_ms.append(seconds * 1000)
            self.phase.late += int(late)

    def timing_chunks(self, backend: MoshiBackend) -> None:
        step = backend.import_step

        def timed(slot: int, max_steps: int) -> int:
            started = time.perf_counter()
            left = step(slot, max_steps)
            with self.lock:
                self.phase.chunks_ms.append((time.perf_counter() - started) * 1000)
            return left

        backend.import_step = timed  # type: ignore[method-assign]


def _long_states(
    engine: BatchedEngine, backend: MoshiBackend, seconds: int, count: int
) -> list[SlotState]:
    """States of conversations that fill the context: a live slot's, with its history
    replaced by random tokens of the context's length, different for each (a slot keeps
    what an identical history already rebuilt, and would replay nothing)."""
    handle = engine.acquire()
    assert handle is not None
    engine.push_input(handle, np.zeros(backend.frame.samples, dtype=np.float32))
    time.sleep(0.5)
    state = engine.export_state(handle).result(timeout=30)
    engine.release(handle)
    steps = backend.frame.context_steps(seconds)
    rng = np.random.default_rng(0)
    history = state.arrays[HISTORY]
    meta = {**state.meta, "steps": steps, "lmgen_offset": steps}
    states = []
    for _ in range(count):
        tokens = rng.integers(0, int(backend.lm.card), (steps, history.shape[1]))
        tokens[:, 0] = rng.integers(0, int(backend.lm.text_card), steps)
        arrays = {**state.arrays, HISTORY: tokens.astype(history.dtype)}
        states.append(dataclasses.replace(state, meta=meta, arrays=arrays))
    return states


def _ticks(recorder: Recorder, count: int) -> None:
    start = len(recorder.phase.steps_ms)
    while len(recorder.phase.steps_ms) < start + count:
        time.sleep(0.05)


def _imports(engine: BatchedEngine, states: list[SlotState], phase: Phase) -> None:
    for state in states:
        started = time.perf_counter()
        claimed = engine.import_state(state)
        assert claimed is not None, "no free slot for the import"
        handle, ready = claimed
        ready.result(timeout=300)
        phase.imports_s.append(time.perf_counter() - started)
        engine.release(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    moshi_pod.add_arguments(parser, sessions=40)
    parser.add_argument("--imports", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    backend = moshi_pod.load(args)
    recorder = Recorder()
    recorder.timing_chunks(backend)
    engine = BatchedEngine(
        backend,
        args.sessions,
        on_frame=lambda _: None,
        stats=FrameStats(),
        on_step=recorder.on_step,
    )
    engine.start()
    if not engine.ready.wait(900):
        raise SystemExit(f"the engine did not start: {engine.failure!r}")
    states = _long_states(engine, backend, args.seconds, 2 * args.imports)
    silence = np.zeros(backend.frame.samples, dtype=np.float32)
    for _ in range(args.sessions - 1):  # every slot but one busy, joined at its first frame
        handle = engine.acquire()
        assert handle is not None
        engine.push_input(handle, silence)
    _ticks(recorder, 40)

    replay = "CUDA graphs" if backend_chunks(backend) else "eager (no GPU)"
    phases = [Phase("no import"), Phase(f"import, {replay}"), Phase("import, eager")]
    recorder.phase = phases[0]
    _ticks(recorder, BASELINE_TICKS)
    recorder.phase = phases[1]
    _imports(engine, states[: args.imports], phases[1])
    # The baseline: the same replay, eager, as before graphs; the graphs' row is freed first
    # (a full pod has room for one more row, not two).
    backend._replay_row = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    backend._replay_row = ReplayRow(
        backend.lm, backend._forward_text, max_chunk=IMPORT_CHUNK_STEPS, graphs=False
    )
    recorder.phase = phases[2]
    _imports(engine, states[args.imports :], phases[2])
    engine.stop()

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = [phase.row() for phase in phases]
    result = {
        "device": device_name,
        "backend": args.backend,
        "sessions": args.sessions,
        "busy": args.sessions - 1,
        "seconds": args.seconds,
        "kv_cache_dtype": args.kv_cache_dtype,
        "imported_steps": int(states[0].meta["steps"]),
        "graph_chunks": backend_chunks(backend),
        "rows": rows,
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n{device_name}, {args.sessions - 1} busy of {args.sessions} slots, imports of "
        f"{states[0].meta['steps']} steps ({args.kv_cache_dtype})"
    )
    print(
        f"{'phase':<22}{'ticks':>6}{'p50':>7}{'p95':>7}{'max':>7}{'late':>6}{'chunks':>8}"
        f"{'chunk p50':>11}{'chunk max':>11}  import s"
    )
    for row in rows:
        print(
            f"{row['phase']:<22}{row['ticks']:>6}{row['step_p50_ms']:>7}{row['step_p95_ms']:>7}"
            f"{row['step_max_ms']:>7}{row['late_frames']:>6}{row['chunks']:>8}"
            f"{row['chunk_p50_ms']:>11}{row['chunk_max_ms']:>11}  {row['import_s']}"
        )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)


def backend_chunks(backend: MoshiBackend) -> list[int]:
    row = backend._replay_row
    return [] if row is None else row.chunks


if __name__ == "__main__":
    main()
