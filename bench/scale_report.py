"""The operator benchmark's numbers: percentiles, the operator's own histograms, its
memory, and the printed table."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def histogram_mean(text: str, name: str) -> tuple[float, int]:
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum "):
            total = float(line.split()[1])
        if line.startswith(f"{name}_count "):
            count = float(line.split()[1])
    return (total / count if count else float("nan")), int(count)


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cores() -> int:
    return os.cpu_count() or 0


def print_table(r: dict[str, Any]) -> None:
    rows = [
        (f"reconcile, {r['pools']} pools at once: created -> pods exist", r["reconcileSeconds"]),
        ("reconcile, one more pool at a time: created -> pods exist", r["singleReconcileSeconds"]),
        ("interruption: node tainted -> its pods marked draining", r["drainMarkedSeconds"]),
        ("interruption: node tainted -> replacements created", r["replacedSeconds"]),
    ]
    print()
    print(
        f"voicefleet operator, {r['pools']} pools x {r['podsPerPool']} pods over {r['nodes']} "
        f"fake nodes (kwok), poll {r['pollIntervalSeconds']} s; {r['machine']}"
    )
    print(f"| {'measure':<60} | {'n':>4} | {'p50 s':>7} | {'p95 s':>7} | {'max s':>7} |")
    print(f"|{'-' * 62}|{'-' * 6}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for label, values in rows:
        clean = [v for v in values if not math.isnan(v)]
        print(
            f"| {label:<60} | {len(clean):>4} | {percentile(clean, 0.5):>7.3f} | "
            f"{percentile(clean, 0.95):>7.3f} | {max(clean, default=float('nan')):>7.3f} |"
        )
    print(
        f"| {'operator: signal seen -> drains + replacements (mean)':<60} | "
        f"{r['operatorReactionCount']:>4} | {r['operatorReactionMeanSeconds']:>7.3f} | "
        f"{'':>7} | {'':>7} |"
    )
    print(
        f"operator's own view: create reconcile mean "
        f"{r['operatorCreateReconcileMeanSeconds']:.3f} s, API GET mean "
        f"{r['operatorApiGetMeanSeconds']:.3f} s over {r['operatorApiGets']} GETs"
    )
    print(
        f"operator memory: RSS {r['operatorRssMiB']} MiB, peak {r['operatorPeakRssMiB']} MiB; "
        f"benchmark wall time {r.get('wallSeconds', 0)} s"
    )
