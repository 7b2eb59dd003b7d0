"""What priming new conversations costs the host: the runtime's copies (one device copy per
state tensor for all claimed slots, queued while the device runs the next step) beside moshi's
masked ``reset_streaming``, which priming did first until it was found to walk every streaming
module from Python (16-28 ms a pass at full size on an H200, making ticks late while callers
joined).

    python -m bench.prime_cost [--backend moshi] [--sessions 40] [--device cuda]

Prints the p50 and max of 20 passes for 1, 8 and 32 slots at once (device work included).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from bench import moshi_pod
from voicefleet.runtime.backends.base import Sampling

PASSES = 20


def _timed(work: Callable[[], None], device: torch.device) -> tuple[float, float]:
    took = []
    for _ in range(PASSES):
        started = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        took.append((time.perf_counter() - started) * 1000)
    return round(float(np.median(took)), 2), round(max(took), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    moshi_pod.add_arguments(parser, sessions=40)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    backend = moshi_pod.load(args)
    backend.start(args.sessions)
    frozen = np.zeros(args.sessions, dtype=bool)
    rows = []
    for count in (1, 8, 32):
        slots = list(range(min(count, args.sessions)))
        asked = [Sampling()] * len(slots)

        def reset(slots: list[int] = slots, asked: list[Sampling] = asked) -> None:
            backend.reset(slots, asked)
            backend.freeze(frozen)

        def prime(slots: list[int] = slots, asked: list[Sampling] = asked) -> None:
            backend.prime(slots, asked)
            backend._put_primes()  # what the next step does while the device runs it

        rows.append(
            {
                "slots": len(slots),
                "moshi_reset_ms": _timed(reset, device),
                "prime_ms": _timed(prime, device),
            }
        )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(json.dumps({"device": name, "kv_cache_dtype": args.kv_cache_dtype, "rows": rows}))
    print(f"\n{name}: p50 / max of {PASSES} passes, ms")
    print(f"{'slots':>6}{'moshi reset':>18}{'prime':>16}")
    for row in rows:
        print(f"{row['slots']:>6}{row['moshi_reset_ms']!s:>18}{row['prime_ms']!s:>16}")


if __name__ == "__main__":
    main()
