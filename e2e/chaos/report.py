"""A chaos run's outcome: a row per scenario, the leader kills, and the table and summary
printed from them."""

from __future__ import annotations

import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from e2e.chaos.settings import Settings


@dataclass
class Row:
    """One scenario's outcome, a row of the table."""

    scenario: str
    done: str
    pods_max: int
    pods_expected: int
    capacity_min: int | None
    capacity_target: int | None
    # The least capacity the nodes allowed when it was lowest (the target, unless the
    # scenario took nodes away), and how long the capacity stayed below the target.
    capacity_floor: int | None
    below_target_seconds: float
    drains_acknowledged: int
    drains_made: int
    unschedulable_left: int
    unschedulable_why: str = ""  # why pods wait, where the nodes are not back yet
    deletion_max_seconds: float | None = None
    seconds: float = 0.0  # the scenario's wall time
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class Kill:
    target: int  # the target the pool was scaling to
    after_change_seconds: float  # the change -> the kill
    leader_back_seconds: float | None  # the kill -> the next lease renewal
    by: str  # who renewed it: the restarted replica or the standby
    restart_after: float


@dataclass
class Result:
    rows: list[Row]
    kills: list[Kill]
    restarts: list[tuple[str, int | None]]  # (replica, the exit code that caused it)
    wall_seconds: float
    load: tuple[float, float]  # 1-minute load average at the start and the end
    settings: Settings
    problems: list[str]  # of the run itself (stand-ins, supervisor), not of the operator
    tracebacks: list[str]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and not self.problems and not self.tracebacks


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def restarts(codes: Counter[int | None]) -> str:
    if not codes:
        return "no replica restarted"
    parts = [f"{n} after exit {_exit(code)}" for code, n in sorted(codes.items(), key=str)]
    return f"{sum(codes.values())} replica restarts ({', '.join(parts)})"


def _exit(code: int | None) -> str:
    if code is None:
        return "?"
    if code < 0:
        return signal.Signals(-code).name
    return f"{code}" + (" (lease lost)" if code == 3 else "")


HEADER: Final = (
    "SCENARIO",
    "WHAT WAS DONE",
    "PODS MAX/EXPECTED",
    "CAPACITY MIN/TARGET",
    "DRAINS ACKED/MADE",
    "UNSCHEDULABLE LEFT",
    "POOL DELETIONS MAX S",
    "VERDICT",
)


def table(result: Result) -> str:
    """The run as a table, one row per scenario, with notes and failures under it."""
    rows = [HEADER]
    notes: list[str] = []
    for row in result.rows:
        capacity = "-"
        if row.capacity_min is not None:
            capacity = f"{row.capacity_min} / {row.capacity_target}"
        mark = ""
        for note in row.notes:
            notes.append(note)
            mark += f" [{len(notes)}]"
        rows.append(
            (
                row.scenario + mark,
                row.done,
                f"{row.pods_max} / {row.pods_expected}",
                capacity,
                f"{row.drains_acknowledged} / {row.drains_made}",
                f"{row.unschedulable_left} ({row.unschedulable_why})"
                if row.unschedulable_why
                else str(row.unschedulable_left),
                "-" if row.deletion_max_seconds is None else f"{row.deletion_max_seconds:.1f}",
                "ok" if row.ok else "FAIL",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    for row in result.rows:
        lines += [f"FAIL {row.scenario}: {failure}" for failure in row.failures]
    lines += [f"problem: {p}" for p in result.problems]
    lines += [f"traceback in an operator log: {t.splitlines()[0]}" for t in result.tracebacks]
    return "\n".join(lines)


def summary(result: Result) -> str:
    s = result.settings
    kills = ", ".join(f"{seconds(k.leader_back_seconds)} ({k.by})" for k in result.kills)
    took = ", ".join(f"{r.scenario} {r.seconds:.0f} s" for r in result.rows)
    return (
        f"chaos run: the chart's 2 operator replicas (leader election 15/10/2 s, poll 2 s, "
        f"NotReady grace 30 s, mass NotReady 55%, spot fallback {s.spot_fallback_seconds} s), "
        f"one {s.target}-session spot-first pool (seed {s.seed}); "
        f"wall {result.wall_seconds:.0f} s, load average {result.load[0]:.1f} -> "
        f"{result.load[1]:.1f} on {os.cpu_count()} cores\n"
        f"lease renewed after each kill: {kills}\n"
        f"wall time per scenario: {took}"
    )
