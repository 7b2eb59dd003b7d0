"""The chaos scenarios of nodes and the control plane: a NotReady blip, every node
NotReady, an API server outage, and SIGKILLs of the leader while the pool scales."""

from __future__ import annotations

import time
from collections import Counter

from e2e.chaos import changes, report
from e2e.chaos.context import Run
from e2e.chaos.report import Kill, Row
from e2e.chaos.settings import LEADER_BACK_SECONDS, POOL, changing, steady
from voicefleet import constants
from voicefleet.sandbox import processes
from voicefleet.testing import polling


def node_blip(run: Run) -> Row:
    pods = run.view.serving()
    node, count = Counter(p.node for p in pods).most_common(1)[0]
    assert node is not None
    window = run.monitor.open(POOL, run.per_pod, steady(run.target))
    run.changes.set_ready([node], ready=False)
    # The fault's length is what the scenario is about (shorter than the NotReady grace).
    time.sleep(run.settings.blip_seconds)
    run.changes.set_ready([node], ready=True)
    failures = run.nothing_happened(pods, [node])
    return run.row(
        "one node NotReady 5 s",
        f"{node} ({count} pool pods) NotReady {run.settings.blip_seconds:.0f} s, then Ready",
        window,
        failures,
    )


def all_not_ready(run: Run) -> Row:
    pods = run.view.serving()
    names = sorted(n.metadata.name for n in run.view.core.list_node().items)
    window = run.monitor.open(POOL, run.per_pod, steady(run.target))
    length = run.settings.all_not_ready_seconds
    started = time.monotonic()
    run.changes.set_ready(names, ready=False)
    said = polling.seconds_until(run.view.degraded_for_nodes, length, 0.5)
    # The fault lasts its full length whether or not the pool said Degraded early: the whole
    # window is observed (no pod may be drained while every node is NotReady).
    time.sleep(max(0.0, length - (time.monotonic() - started)))
    run.changes.set_ready(names, ready=True)
    failures = run.nothing_happened(pods, names)
    if said is None:
        failures.append("the pool never said Degraded/NodesNotReady")
    shown = "never" if said is None else f"after {said:.0f} s"
    return run.row(
        "every node NotReady 60 s",
        f"all {len(names)} nodes NotReady {length:.0f} s "
        f"(pool Degraded/{constants.REASON_NODES_NOT_READY} {shown}), then Ready",
        window,
        failures,
    )


def api_outage(run: Run) -> Row:
    supervisor = run.operators()
    new = run.settings.after_outage_target
    window = run.monitor.open(POOL, run.per_pod, steady(run.target))
    restarts = len(supervisor.restarts)
    if not processes.is_running(run.apiserver):
        raise RuntimeError(f"kube-apiserver (pid {run.apiserver.pid}) does not run")
    with changes.stopped(run.apiserver.pid):
        # The outage's length is the fault: the operators must ride out this much.
        time.sleep(run.settings.outage_seconds)
    resumed = time.time()
    # The first renewal after the outage (each stays the Lease's record for a retry
    # period, 2 s, and this polls every 0.1 s from the moment the API answers).
    back = supervisor.renewed_after(resumed, LEADER_BACK_SECONDS)
    polling.wait_for(run.view.api_answers, 60, "the API server to answer again")
    run.monitor.set_limits(window, changing(run.target, new))
    changed = time.monotonic()
    run.changes.set_target(new)
    settled = run.view.settle(new)
    failures = [] if settled is not None else [f"not settled at {new} sessions"]
    if back is None:
        failures.append("no replica renewed the lease after the outage")
    codes = Counter(r.exit_code for r in supervisor.restarts[restarts:])
    done = (
        f"kube-apiserver stopped {run.settings.outage_seconds:.0f} s; "
        f"{report.restarts(codes)}; lease renewed "
        f"{report.seconds(back[0] if back else None)} after; "
        f"then target {run.target}->{new}: done in "
        f"{report.seconds(None if settled is None else settled - changed)}"
    )
    run.target = new
    return run.row("API server outage 30 s", done, window, failures)


def kills_while_scaling(run: Run) -> Row:
    supervisor = run.operators()
    settings = run.settings
    steps = [
        settings.small_target if i % 2 == 0 else settings.target for i in range(settings.kills)
    ]
    window = run.monitor.open(
        POOL, run.per_pod, changing(run.target, settings.small_target, settings.target)
    )
    failures: list[str] = []
    before = len(supervisor.restarts)
    for i, new in enumerate(steps):
        polling.wait_for(supervisor.all_running, 90, "every replica to run")
        polling.wait_for(supervisor.leader, 60, "a replica to lead")
        changed = time.monotonic()
        run.changes.set_target(new)
        # A random moment into the scaling is the point: a kill at any step of a pass.
        time.sleep(run.rng.uniform(0.0, 2.5))
        leader = polling.wait_for(supervisor.leader, 60, "a replica to lead")
        late = (i + 1) % settings.late_restart_every == 0
        restart_after = settings.late_restart_seconds if late else 0.0
        killed_at = time.monotonic()
        killed = supervisor.kill(leader, restart_after)
        back = supervisor.renewed_after(killed, LEADER_BACK_SECONDS)
        by = "-" if back is None else "restarted" if back[1] == leader.name else "standby"
        run.kills.append(
            Kill(new, killed_at - changed, back[0] if back else None, by, restart_after)
        )
        if run.view.settle(new) is None:
            failures.append(f"kill {i + 1}: not settled at {new} sessions")
        run.target = new
    polling.wait_for(supervisor.all_running, 90, "every replica to run")
    slowest = max((k.leader_back_seconds or 0.0) for k in run.kills)
    codes = Counter(r.exit_code for r in supervisor.restarts[before:])
    if any(k.leader_back_seconds is None for k in run.kills):
        failures.append("no lease renewal after a kill")
    standby = sum(1 for k in run.kills if k.by == "standby")
    done = (
        f"{len(steps)} SIGKILLs of the leader, 0-2.5 s into scaling "
        f"{settings.small_target}<->{settings.target}; {standby} taken over by the standby, "
        f"{len(steps) - standby} by the restarted replica; lease renewed <= "
        f"{slowest:.1f} s after a kill; {report.restarts(codes)}"
    )
    return run.row("10 SIGKILLs while scaling", done, window, failures)
