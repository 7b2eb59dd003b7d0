"""What moving a Moshi conversation costs: the state's size against the conversation's length,
and the replay (prefill) cost per step by chunk size, on whatever device runs it.

    python -m bench.move_state [--backend tiny|moshi] [--steps 750] [--device cpu]

A conversation of ``--steps`` steps (750 = one minute) runs in slot 0 of a one-slot backend
on random audio; its state is exported at a few lengths, then imported into slot 1 of a
two-slot backend (slot 0 busy) with each chunk size, timing the replay alone.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from voicefleet.runtime.backends import get_loader
from voicefleet.runtime.backends.base import Sampling
from voicefleet.runtime.backends.moshi_step import MoshiBackend
from voicefleet.runtime.backends.slot_state import SlotState
from voicefleet.runtime.config import RuntimeConfig

CHUNKS = (1, 8, 32, 64, 128)
FRAME = 1920


def _backend(name: str, slots: int, device: torch.device, seconds: int) -> MoshiBackend:
    config = RuntimeConfig(backend=name, max_sessions=slots, max_session_seconds=seconds)
    backend = get_loader(name)(config, device)
    assert isinstance(backend, MoshiBackend)
    backend.start(slots)
    return backend


def _replay_seconds(target: MoshiBackend, state: SlotState, chunk: int) -> float:
    left = target.import_begin(1, state)
    started = time.perf_counter()
    while left:
        left = target.import_step(1, chunk)
    if target.device.type == "cuda":
        torch.cuda.synchronize(target.device)  # the replay's kernels, not only their launch
    seconds = time.perf_counter() - started
    target.reset([1], [Sampling()])  # the next import starts from nothing again
    target.freeze(np.array([True, False]))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="tiny", choices=("tiny", "moshi"))
    parser.add_argument("--steps", type=int, default=750)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    seconds = int(args.steps * 0.08) + 10
    source = _backend(args.backend, 1, device, seconds)
    target = _backend(args.backend, 2, device, seconds)
    source.reset([0], [Sampling()])
    source.freeze(np.ones(1, dtype=bool))
    target.reset([0], [Sampling()])
    target.freeze(np.array([True, False]))
    rng = np.random.default_rng(0)
    sizes: dict[int, int] = {}
    started = time.perf_counter()
    marks = {args.steps // 10, args.steps // 2, args.steps}
    for step in range(1, args.steps + 1):
        source.step((0.1 * rng.standard_normal((1, FRAME))).astype(np.float32))
        if step in marks:
            sizes[step] = len(source.export_slot(0).to_bytes())
    step_ms = 1000 * (time.perf_counter() - started) / args.steps
    state = SlotState.from_bytes(source.export_slot(0).to_bytes())
    replay_ms = {
        chunk: 1000 * _replay_seconds(target, state, chunk) / args.steps for chunk in CHUNKS
    }
    history = state.arrays["lm/history"].nbytes
    print(
        json.dumps(
            {
                "backend": args.backend,
                "device": str(device),
                "steps": args.steps,
                "state_bytes_by_steps": sizes,
                "history_bytes_per_step": history / args.steps,
                "fixed_bytes": state.nbytes - history,
                "step_ms_batch1": round(step_ms, 2),
                "replay_ms_per_step_by_chunk": {k: round(v, 3) for k, v in replay_ms.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
