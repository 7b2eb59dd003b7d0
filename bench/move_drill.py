"""The moving drill at the process level (issue 15's "Done when"): N live conversations,
a mix of Moshi-protocol callers (Ogg/Opus) and ``/ws/pcm`` callers, all streaming in real
time through one real ``voicefleet gateway`` spread over R real runtime processes (tiny
model, on this CPU); then pods are drained one after another (``POST /v1/drain`` with the
pool token, as a spot interruption's drain would), each time until its conversations are
gone from it. Measured from the callers' side: whether a socket closed, whether a caller
saw a drain notice or a second handshake or session notice (it must not), each
conversation's longest gap between audio messages; from the gateway: conversations moved,
moves failed by reason, the move and switch histograms, and each move's log line (its
caller's address and switch time, which ties moves to callers and to drained pods).

The baseline runs the same conversations and drains in the same run through a gateway
started without the token (nothing moves: callers hear the drain notice and are cut at the
drain deadline, ``--baseline-deadline-seconds``).

Usage: ``python -m bench.move_drill [--conversations 4] [--runtimes 3] [--max-sessions 4]
[--drains 2] [--out bench/results/move_drill_2core.json] [--no-baseline]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.drill_callers import MOSHI, PCM, run_callers
from voicefleet import constants
from voicefleet.testing.clients import FRAME_SECONDS
from voicefleet.testing.gateway_process import GatewayProcess, start_gateway
from voicefleet.testing.loopback import http
from voicefleet.testing.polling import poll
from voicefleet.testing.runtime_process import RuntimeServer, start_server

TOKEN = "move-drill-pool-token"
# The defaults fit the 2-core development machine: a tiny runtime costs 30-50 ms of CPU per
# 80 ms frame whatever its slots (2 slots: 31 ms, 8: 48 ms), so two cores hold about three
# of them beside the callers and the gateway; 20 conversations over 5 runtimes ran at about
# 60% of real time there (--conversations 20 --runtimes 5 --max-sessions 8). Two drains,
# and every conversation still fits on the last pod.
CONVERSATIONS = 4
RUNTIMES = 3
SLOTS = 4
DRAINS = 2
REAL_TIME_SHARE = 0.95  # of 12.5 audio messages a second: below, gaps are the machine's
GOAL_GAP_MS = 300.0
# A spot interruption's notice on GKE and AKS: the moves must finish well inside it.
MOVE_DEADLINE_SECONDS = 30
BASELINE_DEADLINE_SECONDS = 3
WARMUP_SECONDS = 5.0  # every caller talking before the first drain: the quiet window
SETTLE_SECONDS = 3.0  # after a pod empties, before the next drain: audio after the switch
EMPTY_SLACK_SECONDS = 10.0  # past the deadline, before a pod that does not empty is given up
SESSION_SECONDS = 600  # slots long enough for the whole drill
START_WORKERS = 2  # runtimes loading at once (the machine has two cores)
DEFAULT_OUT = Path("bench/results/move_drill_2core.json")
GATEWAY_METRICS = (
    "conversations_moved_total",
    "move_failures_total",
    "move_seconds",
    "move_switch_seconds",
    "conversations_ended_total",
)
MOVE_LINE = re.compile(
    r"moved the conversation of [\d.]+:(?P<port>\d+) from (?P<source>\S+) to (?P<target>\S+) "
    r"at step \S+ in (?P<took>[\d.]+) s \(switch (?P<switch>[\d.]+) s\)"
)


# --- one run ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    conversations: int
    runtimes: int
    max_sessions: int
    drains: int
    moves: bool  # the gateway has the pool token
    deadline_seconds: int


@dataclass
class Drained:
    """One drained pod, as the drill saw it."""

    backend: str
    drained_at: float
    emptied_at: float | None
    on_it: int  # its conversations when the drain began
    moved: int  # the gateway's moves off it (its log)
    failed: dict[str, float]  # move_failures_total's increase, by reason
    window_end: float = 0.0


def _start_runtimes(directory: Path, setup: Setup) -> list[RuntimeServer]:
    def one(_: int) -> RuntimeServer:
        return start_server(
            directory,
            max_sessions=setup.max_sessions,
            max_session_seconds=SESSION_SECONDS,
            token=TOKEN,
            drain_seconds=setup.deadline_seconds,
        )

    with ThreadPoolExecutor(START_WORKERS) as pool:
        futures = [pool.submit(one, index) for index in range(setup.runtimes)]
        servers = []
        for future in futures:
            try:
                servers.append(future.result())
            except Exception:
                for server in servers:
                    server.stop()
                raise
    return servers


def _metrics(gateway: GatewayProcess) -> dict[str, float]:
    """The gateway's move metrics, keyed ``name{label=value,...}``."""
    body = http("GET", gateway.http + constants.PATH_METRICS)[2].decode()
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            name = sample.name.removeprefix(constants.GATEWAY_METRIC_PREFIX)
            if name.startswith(GATEWAY_METRICS):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{name}{{{labels}}}" if labels else name] = float(sample.value)
    return out


def _failures(metrics: dict[str, float]) -> dict[str, float]:
    prefix = "move_failures_total{reason="
    return {k.removeprefix(prefix)[:-1]: v for k, v in metrics.items() if k.startswith(prefix)}


def _active(server: RuntimeServer) -> int:
    sessions = server.status()["sessions"]
    assert isinstance(sessions, dict)
    return int(sessions["active"])


def _drain(server: RuntimeServer, gateway: GatewayProcess, setup: Setup) -> Drained:
    """Drain one pod and wait until its conversations are gone from it (moved, or cut)."""
    on_it = _active(server)
    before = _failures(_metrics(gateway))
    drained_at = time.monotonic()
    body = {"deadlineSeconds": setup.deadline_seconds, "reason": "move drill"}
    status, _, answer = http("POST", server.http + constants.PATH_DRAIN, body, token=TOKEN)
    if status != 200:
        raise RuntimeError(f"drain of {server.http}: HTTP {status} {answer[:200]!r}")
    empty = poll(lambda: _active(server) == 0, setup.deadline_seconds + EMPTY_SLACK_SECONDS, 0.05)
    emptied_at = time.monotonic() if empty else None
    after = _failures(_metrics(gateway))
    failed = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    return Drained(server.http, drained_at, emptied_at, on_it, 0, failed)


def _moves(gateway: GatewayProcess) -> list[dict[str, Any]]:
    return [
        {
            "port": int(m["port"]),
            "source": m["source"],
            "target": m["target"],
            "took_s": float(m["took"]),
            "switch_s": float(m["switch"]),
        }
        for m in MOVE_LINE.finditer(gateway.log())
    ]


def _late_frames(servers: Sequence[RuntimeServer]) -> dict[str, Any]:
    out = {}
    for server in servers:
        if server.process.poll() is None:
            status = server.status()
            out[server.http] = {"late_frames": status["lateFrames"], "frame_ms": status["frameMs"]}
    return out


def run_once(setup: Setup, directory: Path) -> dict[str, Any]:
    """One drill: start everything, talk, drain, stop; everything measured, unsummarised."""
    servers = _start_runtimes(directory, setup)
    token_file = directory / "token"
    token_file.write_text(TOKEN)
    extra = [f"--token-file={token_file}"] if setup.moves else []
    try:
        gateway = start_gateway(directory, [s.http for s in servers], extra)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    kinds = [MOSHI if index % 2 == 0 else PCM for index in range(setup.conversations)]
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=run_callers, args=(gateway.ws, kinds, child), daemon=True
    )
    drained: list[Drained] = []
    try:
        process.start()
        if not parent.poll(setup.conversations * 5 + 60):
            raise RuntimeError(f"the callers did not all start:\n{gateway.log()[-3000:]}")
        parent.recv()
        spread = {s.http: _active(s) for s in servers}
        started_at = time.monotonic()
        time.sleep(WARMUP_SECONDS)
        quiet = _late_frames(servers)
        late: dict[str, Any] = {}
        live = list(servers)
        for _ in range(setup.drains):
            # The pod with the most conversations: the most to move.
            server = max(live, key=_active)
            live.remove(server)
            step = _drain(server, gateway, setup)
            time.sleep(SETTLE_SECONDS)
            step.window_end = time.monotonic()
            drained.append(step)
            late[server.http] = _late_frames([server])[server.http]
            server.stop()  # a drained pod is deleted: its CPU goes to the others
            print(f"  drained {server.http}: {step.on_it} conversations", flush=True)
        late.update(_late_frames(live))
        metrics = _metrics(gateway)
        stopped_at = time.monotonic()
        parent.send("stop")
        if not parent.poll(60):
            raise RuntimeError("the callers did not report back")
        heard = parent.recv()
        moves = _moves(gateway)
        gateway_log = gateway.log()
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
        gateway.stop()
        for server in servers:
            server.stop()
    return {
        "setup": asdict(setup),
        "spread": spread,
        "started_at": started_at,
        "warm_until": started_at + WARMUP_SECONDS,
        "stopped_at": stopped_at,
        "late_frames_after_warmup": quiet,
        "late_frames_at_end": late,
        "drains": [asdict(d) for d in drained],
        "moves": moves,
        "metrics": metrics,
        "heard": heard,
        "gateway_log_tail": gateway_log[-4000:],
    }


# --- what the callers saw -------------------------------------------------------------------
def longest_gap(arrivals: Sequence[float], start: float, end: float) -> float:
    """The longest time without audio within [start, end] (a socket that closed is silent
    from its last audio to ``end``)."""
    times = [start, *(t for t in arrivals if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(times))


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _seen_switch(heard: dict[str, Any]) -> bool:
    """Whether a caller saw anything of a move: a drain notice, a second handshake or
    session notice."""
    notices = heard["notices"]
    return "drain" in notices or heard["handshakes"] > 1 or notices.count("session") > 1


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    heard: list[dict[str, Any]] = run["heard"]
    moves: list[dict[str, Any]] = run["moves"]
    warm_until, stopped_at = run["warm_until"], run["stopped_at"]
    by_port = {h["port"]: h for h in heard}
    rows = []
    for drain in run["drains"]:
        start, end = drain["drained_at"], drain["window_end"]
        mine = [m for m in moves if m["source"] == drain["backend"]]
        ports = {m["port"] for m in mine}
        # Conversations cut off this pod: a socket closed in its window (without moves
        # the callers on it are also the ones that heard its drain notice).
        cut = [h for h in heard if h["closed_at"] is not None and start <= h["closed_at"] <= end]
        ports |= {h["port"] for h in cut}
        gaps = [longest_gap(by_port[p]["audio_at"], start, end) for p in ports if p in by_port]
        # The same window for the conversations that stayed put: what the machine did to all.
        others = [
            longest_gap(h["audio_at"], start, end)
            for h in heard
            if h["port"] not in ports and (h["closed_at"] is None or h["closed_at"] > start)
        ]
        switches = [m["switch_s"] for m in mine]
        rows.append(
            {
                "backend": drain["backend"],
                "on_it": drain["on_it"],
                "moved": len(mine),
                "cut": len(cut),
                "failed": drain["failed"],
                "emptied_s": None
                if drain["emptied_at"] is None
                else round(drain["emptied_at"] - start, 2),
                "gap_ms": {
                    "p50": _ms(_pct(gaps, 0.5)),
                    "p95": _ms(_pct(gaps, 0.95)),
                    "max": _ms(max(gaps, default=None)),
                },
                "others_gap_ms": {"p50": _ms(_pct(others, 0.5)), "p95": _ms(_pct(others, 0.95))},
                "switch_ms": {"p50": _ms(_pct(switches, 0.5)), "p95": _ms(_pct(switches, 0.95))},
            }
        )
    drill_gaps = [longest_gap(h["audio_at"], warm_until, stopped_at) for h in heard]
    quiet_gaps = [longest_gap(h["audio_at"], run["started_at"], warm_until) for h in heard]
    warm = warm_until - run["started_at"]
    rates = [sum(run["started_at"] < t < warm_until for t in h["audio_at"]) / warm for h in heard]
    on_drained = sum(d["on_it"] for d in run["drains"])
    return {
        "rows": rows,
        "conversations": len(heard),
        "on_drained_pods": on_drained,
        "moved": len(moves),
        "moved_metric": run["metrics"].get("conversations_moved_total", 0.0),
        "sockets_closed": sum(h["closed_at"] is not None for h in heard),
        "saw_the_switch": sum(_seen_switch(h) for h in heard),
        "longest_gap_ms": {
            "p50": _ms(_pct(drill_gaps, 0.5)),
            "p95": _ms(_pct(drill_gaps, 0.95)),
            "max": _ms(max(drill_gaps, default=None)),
        },
        # Real time is one audio message per 80 ms frame per conversation.
        "audio_per_second_before_drains": round(statistics.fmean(rates), 2) if rates else None,
        "quiet_longest_gap_ms": {
            "p95": _ms(_pct(quiet_gaps, 0.95)),
            "max": _ms(max(quiet_gaps, default=None)),
        },
    }


def table(summary: dict[str, Any]) -> str:
    """One row per drained pod, laid out like the interruption drill's table."""
    header = (
        "POD",
        "CONVERSATIONS",
        "MOVED",
        "CUT",
        "LONGEST GAP p50/p95/max",
        "SWITCH p50/p95",
        "THE OTHERS' GAP p50/p95",
    )

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    rows = [header] + [
        (
            r["backend"].rsplit(":", 1)[-1],
            str(r["on_it"]),
            str(r["moved"]),
            str(r["cut"]),
            f"{ms(r['gap_ms']['p50'])} / {ms(r['gap_ms']['p95'])} / {ms(r['gap_ms']['max'])} ms",
            f"{ms(r['switch_ms']['p50'])} / {ms(r['switch_ms']['p95'])} ms",
            f"{ms(r['others_gap_ms']['p50'])} / {ms(r['others_gap_ms']['p95'])} ms",
        )
        for r in summary["rows"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def summary_line(summary: dict[str, Any]) -> str:
    on = summary["on_drained_pods"]
    share = 100.0 * summary["moved"] / on if on else 100.0
    p95 = summary["longest_gap_ms"]["p95"]
    goal = "met" if p95 is not None and p95 <= GOAL_GAP_MS else "missed"
    rate = summary["audio_per_second_before_drains"]
    real_time = rate is not None and rate >= REAL_TIME_SHARE / FRAME_SECONDS
    pace = "real time" if real_time else "NOT real time (12.5): gaps include the machine's lag"
    return (
        f"moved {summary['moved']}/{on} ({share:.0f}%), sockets closed "
        f"{summary['sockets_closed']}/{summary['conversations']}, callers that saw a drain "
        "notice or a second greeting "
        f"{summary['saw_the_switch']}, longest gap per conversation p95 {p95} ms (max "
        f"{summary['longest_gap_ms']['max']} ms; goal <= {GOAL_GAP_MS:.0f} ms: {goal}); "
        f"before the drains p95 {summary['quiet_longest_gap_ms']['p95']} ms, "
        f"{rate} audio messages/s per conversation ({pace})"
    )


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=CONVERSATIONS)
    parser.add_argument("--runtimes", type=int, default=RUNTIMES)
    parser.add_argument("--max-sessions", type=int, default=SLOTS)
    parser.add_argument("--drains", type=int, default=DRAINS)
    parser.add_argument("--deadline-seconds", type=int, default=MOVE_DEADLINE_SECONDS)
    parser.add_argument("--baseline-deadline-seconds", type=int, default=BASELINE_DEADLINE_SECONDS)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    left = (args.runtimes - args.drains) * args.max_sessions
    if args.drains >= args.runtimes or left < args.conversations:
        parser.error(
            f"after {args.drains} drains {left} slots remain for {args.conversations} "
            "conversations: lower --drains or --conversations, or raise --runtimes or "
            "--max-sessions"
        )
    if args.runtimes * args.max_sessions < args.conversations:
        parser.error("more conversations than slots: raise --runtimes or --max-sessions")
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": _load(),
    }
    runs = [("moves", True, args.deadline_seconds)]
    if not args.no_baseline:
        runs.append(("baseline", False, args.baseline_deadline_seconds))
    for name, moves, deadline in runs:
        setup = Setup(
            args.conversations, args.runtimes, args.max_sessions, args.drains, moves, deadline
        )
        print(f"== {name}: {setup}", flush=True)
        with tempfile.TemporaryDirectory(prefix="move-drill-") as directory:
            run = run_once(setup, Path(directory))
        summary = summarise(run)
        result[name] = {"summary": summary, "run": run, "load_after": _load()}
        print(table(summary))
        print(summary_line(summary), flush=True)
    result["load_after"] = _load()
    print(f"load average before {result['load_before']}, after {result['load_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
