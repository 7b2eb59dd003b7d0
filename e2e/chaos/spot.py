"""The chaos scenarios of spot capacity: more spot nodes signalled at once than there is
spot capacity left, then every signal cleared."""

from __future__ import annotations

import concurrent.futures
import time

from e2e import drill
from e2e.chaos import report
from e2e.chaos.context import Run
from e2e.chaos.report import Row
from e2e.chaos.settings import POOL, SPOT_NODES_SPARED, planned
from e2e.observe import Limits
from voicefleet import constants
from voicefleet.testing.polling import poll


def mass_spot_interruption(run: Run) -> Row:
    want = planned(run.target)
    spot_label = f"{constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE}={constants.CapacityType.SPOT}"
    spot_nodes = sorted(
        n.metadata.name for n in run.view.core.list_node(label_selector=spot_label).items
    )
    pods = run.view.serving()
    used = sorted(
        {p.node for p in pods if p.capacity_type == constants.CapacityType.SPOT and p.node}
    )
    spare = [n for n in spot_nodes if n not in used][:SPOT_NODES_SPARED]
    hit = [n for n in spot_nodes if n not in spare]
    run.changes.interrupted = hit
    surviving = run.per_pod * sum(1 for p in pods if p.node not in hit)
    limits = Limits(
        target=run.target,
        floor=min(run.target, surviving),
        pods=want.replicas + want.spot_replicas,  # + an on-demand stand-in per spot pod
        spot=want.spot_replicas,
    )
    window = run.monitor.open(POOL, run.per_pod, limits)
    started = time.monotonic()
    signals = [drill.DRILL_SIGNALS[i % len(drill.DRILL_SIGNALS)][1] for i in range(len(hit))]
    with concurrent.futures.ThreadPoolExecutor(len(hit)) as pool:
        list(pool.map(run.view.core.patch_node, hit, signals))
    signalled = time.monotonic() - started
    # First the reaction: every pod on those nodes marked draining (or deleted).
    leaving = {p.uid for p in pods if p.node in hit}
    reacted = poll(
        lambda: all(u in run.monitor.drain_marked or u in run.monitor.terminating for u in leaving),
        30,
        0.05,
    )
    # Then back at the target: replacements on the spared spot nodes, and on-demand
    # stand-ins for the rest once the spot fallback has passed.
    fallback = run.settings.spot_fallback_seconds
    restored = poll(
        lambda: run.view.capacity(run.target) >= run.target and not run.view.draining(),
        fallback + 60,
        0.1,
    )
    back = time.monotonic() - started if restored else None
    # Then steady: a serving on-demand stand-in for every spot pod that waits (the
    # waiting pods reach the fallback time one poll apart, so their stand-ins may too).
    poll(
        lambda: (
            not run.view.draining() and run.view.stand_ins(run.target) == len(run.view.waiting())
        ),
        fallback + 30,
        0.1,
    )
    stuck = run.view.waiting()
    stand_ins = run.view.stand_ins(run.target)
    note = (
        f"no spot node left for {len(stuck)} pods: the nodes allowed {surviving} until "
        f"replacements ran; on-demand stand-ins after the {fallback} s spot fallback; "
        f"back at {run.target} after {report.seconds(back)}"
    )
    failures = [] if reacted else [f"the pods on {len(hit)} signalled nodes were not drained"]
    fallback_bound = fallback + 15
    if window.below_target_seconds > fallback_bound:
        failures.append(
            f"below the target for {window.below_target_seconds:.1f} s "
            f"(> spot fallback + 15 s = {fallback_bound} s)"
        )
    if stand_ins < len(stuck):
        failures.append(f"{len(stuck)} spot pods wait but only {stand_ins} stand-ins run")
    kinds = len({s for s, _ in drill.DRILL_SIGNALS[: len(hit)]})
    done = (
        f"{len(hit)} of {len(spot_nodes)} spot nodes signalled within {signalled:.1f} s "
        f"({kinds} kinds of signal), {len(used)} spot pods on them; then {len(stuck)} spot "
        f"pods wait, {stand_ins} on-demand stand-ins serve"
    )
    return run.row(
        "mass spot interruption",
        done,
        window,
        failures,
        notes=[note],
        unschedulable_expected=len(stuck),
        unschedulable_why="nodes still signalled",
    )


def spot_recovery(run: Run) -> Row:
    want = planned(run.target)
    hit = run.changes.interrupted
    waiting = {p.uid for p in run.view.waiting()}
    stand_ins = run.view.stand_ins(run.target)
    window = run.monitor.open(
        POOL,
        run.per_pod,
        Limits(run.target, run.target, want.replicas + want.spot_replicas, want.spot_replicas),
    )
    changed = time.monotonic()
    for name in hit:
        drill.clear_node(run.cluster, name)
    run.changes.interrupted = []
    settled = run.view.settle(run.target)
    failures = [] if settled is not None else [f"not settled at {run.target} sessions"]
    remade = sum(1 for uid in waiting if uid in run.monitor.terminating)
    done = (
        f"signals cleared on {len(hit)} nodes: {remade} waiting spot pods remade, "
        f"{stand_ins} stand-ins given back once spot pods served; settled in "
        f"{report.seconds(None if settled is None else settled - changed)}"
    )
    return run.row("recovery of the spot nodes", done, window, failures)
