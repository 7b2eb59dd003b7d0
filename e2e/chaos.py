"""The chaos run of issue 9: the chart installed as shipped (two replicas, leader election),
one 400-session spot-first pool served by stand-in runtimes, and in turn:

1. one node NotReady for 5 s (a blip: shorter than the operator's NotReady grace);
2. every node NotReady for 60 s (a control-plane or network fault, not reclaims);
3. a 30 s API server outage (kube-apiserver SIGSTOPped), then a change to the pool;
4. 10 SIGKILLs of the leader at random moments while the pool scales 400 <-> 40;
5. a mass spot interruption (more spot nodes than there is spot capacity left) ...
6. ... and its recovery (every signal cleared);
7. 50 small pools created at once, then deleted at once.

Measured from outside only: watches of the pool pods and pools (``e2e/observe.py``), the
leader election Lease, and the records of the stand-in runtimes (``e2e/standins.py``), which
answer the operator's status polls and drain calls on each pod's IP. Per scenario: the most
pods that were not draining against the plan (a duplicate shows here), the least serving
capacity against the target, drain calls acknowledged by the runtimes against drain marks
made, pods left unschedulable once the nodes were back, and for the 50 pools the slowest
deletion. The operator replicas run as host processes with the chart's arguments and are
restarted as a kubelet restarts containers (``e2e/supervise.py``).

No pytest here: ``e2e/test_chaos.py`` asserts on :class:`Result`, and ``python -m e2e.chaos``
prints the same table on a sandbox of its own.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from kubernetes import client, config

from e2e import fleet
from e2e.observe import Limits, Monitor, PodSeen, Window
from e2e.standins import Kubelet
from e2e.supervise import Supervisor
from voicefleet import catalog, constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.api.status import PlanStatus
from voicefleet.operator.planner import plan
from voicefleet.sandbox import binaries, manager, nodes, processes
from voicefleet.testing import kube_admin, operators, polling
from voicefleet.testing.polling import poll

NAMESPACE: Final = "chaos"
POOL: Final = "chaos"
BURST_PREFIX: Final = "burst"
# The 50 pools get GPUs of their own for the scenario (added, then removed), so they run
# beside the big pool without taking its nodes.
BURST_PRODUCT: Final = "NVIDIA-H200"
BURST_NODES: Final = nodes.NodeGroup(
    count=7, capacity_type=constants.CapacityType.ON_DEMAND, gpus=8, product=BURST_PRODUCT
)
# Spot nodes that a mass interruption leaves alone: fewer than the pool's spot pods, so some
# replacements find spot capacity and the rest need on-demand stand-ins.
SPOT_NODES_SPARED: Final = 4
# The renewal the run waits for after a kill: a lease (15 s), a retry, and a slow start.
LEADER_BACK_SECONDS: Final = 45.0
Log = Callable[[str], None]
SCENARIOS: Final = (
    "node_blip",
    "all_not_ready",
    "api_outage",
    "kills_while_scaling",
    "mass_spot_interruption",
    "spot_recovery",
    "pool_burst",
)


@dataclass(frozen=True)
class Settings:
    kills: int = 10
    outage_seconds: float = 30.0
    blip_seconds: float = 5.0
    all_not_ready_seconds: float = 60.0
    pools: int = 50
    target: int = 400
    small_target: int = 40
    after_outage_target: int = 480
    # The chart's `interruption.spotFallbackSeconds` (its default, 120 s, would make the
    # stand-ins of a mass interruption wait two minutes): the one value the run sets.
    spot_fallback_seconds: int = 10
    drain_seconds: int = 30
    # Every fourth kill restarts the replica only after its lease ran out, so the standby
    # takes over; the others restart at once and take their own lease back.
    late_restart_every: int = 4
    late_restart_seconds: float = 20.0
    settle_seconds: float = 90.0
    delete_limit_seconds: float = 10.0
    seed: int = 9
    # The scenarios to run, by method name (all by default; a subset to look at one).
    scenarios: tuple[str, ...] = SCENARIOS


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


def planned(target: int) -> PlanStatus:
    return plan(VoiceAgentPoolSpec.model_validate(pool_spec(target)), catalog.builtin())


def pool_spec(target: int, drain_seconds: int = Settings.drain_seconds) -> dict[str, Any]:
    return {
        "sessions": {"target": target},
        "gpu": {"product": nodes.DEFAULT_GPU_PRODUCT},
        "capacity": {
            "strategy": constants.Strategy.SPOT_FIRST,
            "onDemandBase": 1,
            "spotPercentage": 80,
            "interruption": {"drainSeconds": drain_seconds},
        },
    }


def burst_spec() -> dict[str, Any]:
    return {
        "sessions": {"target": 10},
        "gpu": {"product": BURST_PRODUCT},
        "capacity": {"strategy": constants.Strategy.ON_DEMAND},
    }


def _manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


class Chaos:
    """One chaos run on a sandbox whose kube-apiserver runs as ``apiserver``; it installs
    the chart itself, and uninstalls it at the end."""

    def __init__(
        self,
        cluster: fleet.Cluster,
        apiserver: processes.Process,
        workdir: Path,
        settings: Settings = Settings(),
        log: Log = print,
    ) -> None:
        self.cluster = cluster
        self.apiserver = apiserver
        self.workdir = workdir
        self.settings = settings
        self.log = log
        self.core = client.CoreV1Api(cluster.api)
        self.objects = client.CustomObjectsApi(cluster.api)
        self.rng = random.Random(settings.seed)
        self.target = settings.target
        self.monitor = Monitor(cluster.api, NAMESPACE)
        self.kubelet = Kubelet(cluster.api, NAMESPACE)
        self.supervisor: Supervisor | None = None
        self.kills: list[Kill] = []
        # What the run changed in the cluster, until it puts it back.
        self.interrupted: list[str] = []  # spot nodes signalled
        self.not_ready: list[str] = []  # nodes made NotReady
        self.added: list[str] = []  # nodes added
        self.cleanup_problems: list[str] = []

    # --- the run -------------------------------------------------------------------------

    def run(self) -> Result:
        started = time.monotonic()
        load = os.getloadavg()[0]
        rows: list[Row] = []
        replicas: operators.Replicas | None = None
        try:
            fleet.install_chart(
                self.cluster,
                [f"interruption.spotFallbackSeconds={self.settings.spot_fallback_seconds}"],
            )
            replicas = fleet.start_operators(self.cluster, self.workdir)
            self.supervisor = Supervisor(replicas, self.cluster.api, fleet.OPERATOR_NAMESPACE)
            self.supervisor.start()
            self._namespace()
            self.monitor.listeners.append(self.kubelet.follow)
            self.monitor.start()
            self._apply(POOL, pool_spec(self.target, self.settings.drain_seconds))
            self._must_settle(self.target, "the pool's first pods")
            for name in self.settings.scenarios:
                self.log(f"chaos: {name}")
                scenario: Callable[[], Row] = getattr(self, name)
                began = time.monotonic()
                rows.append(scenario())
                rows[-1].seconds = time.monotonic() - began
                self.log(
                    f"chaos: {rows[-1].scenario}: {'ok' if rows[-1].ok else rows[-1].failures}"
                )
        finally:
            self._teardown(replicas)
        supervisor = self.supervisor
        return Result(
            rows=rows,
            kills=self.kills,
            restarts=[(r.replica, r.exit_code) for r in supervisor.restarts] if supervisor else [],
            wall_seconds=time.monotonic() - started,
            load=(load, os.getloadavg()[0]),
            settings=self.settings,
            problems=[
                *self.kubelet.problems,
                *(supervisor.problems if supervisor else []),
                *self.cleanup_problems,
            ],
            tracebacks=replicas.tracebacks() if replicas else [],
        )

    # --- scenarios -----------------------------------------------------------------------

    def node_blip(self) -> Row:
        pods = self._serving()
        node, count = Counter(p.node for p in pods).most_common(1)[0]
        assert node is not None
        window = self.monitor.open(POOL, self._per_pod(), self._steady(self.target))
        self._not_ready([node], ready=False)
        time.sleep(self.settings.blip_seconds)
        self._not_ready([node], ready=True)
        failures = self._nothing_happened(pods, [node])
        return self._row(
            "one node NotReady 5 s",
            f"{node} ({count} pool pods) NotReady {self.settings.blip_seconds:.0f} s, then Ready",
            window,
            failures,
        )

    def all_not_ready(self) -> Row:
        pods = self._serving()
        names = sorted(n.metadata.name for n in self.core.list_node().items)
        window = self.monitor.open(POOL, self._per_pod(), self._steady(self.target))
        started = time.monotonic()
        self._not_ready(names, ready=False)
        said = None
        while time.monotonic() - started < self.settings.all_not_ready_seconds:
            if said is None and self._degraded_for_nodes():
                said = time.monotonic() - started
            time.sleep(0.5)
        self._not_ready(names, ready=True)
        failures = self._nothing_happened(pods, names)
        if said is None:
            failures.append("the pool never said Degraded/NodesNotReady")
        shown = "never" if said is None else f"after {said:.0f} s"
        return self._row(
            "every node NotReady 60 s",
            f"all {len(names)} nodes NotReady {self.settings.all_not_ready_seconds:.0f} s "
            f"(pool Degraded/{constants.REASON_NODES_NOT_READY} {shown}), then Ready",
            window,
            failures,
        )

    def api_outage(self) -> Row:
        supervisor = self._supervisor()
        new = self.settings.after_outage_target
        window = self.monitor.open(POOL, self._per_pod(), self._steady(self.target))
        restarts = len(supervisor.restarts)
        if not processes.is_running(self.apiserver):
            raise RuntimeError(f"kube-apiserver (pid {self.apiserver.pid}) does not run")
        with _stopped(self.apiserver.pid):
            time.sleep(self.settings.outage_seconds)
        resumed = time.time()
        # The first renewal after the outage (each stays the Lease's record for a retry
        # period, 2 s, and this polls every 0.1 s from the moment the API answers).
        back = supervisor.renewed_after(resumed, LEADER_BACK_SECONDS)
        polling.wait_for(self._api_answers, 60, "the API server to answer again")
        self.monitor.set_limits(window, self._changing(self.target, new))
        changed = time.monotonic()
        self._set_target(new)
        settled = self._settle(new)
        failures = [] if settled is not None else [f"not settled at {new} sessions"]
        if back is None:
            failures.append("no replica renewed the lease after the outage")
        codes = Counter(r.exit_code for r in supervisor.restarts[restarts:])
        done = (
            f"kube-apiserver stopped {self.settings.outage_seconds:.0f} s; "
            f"{_restarts(codes)}; lease renewed {_seconds(back[0] if back else None)} after; "
            f"then target {self.target}->{new}: done in "
            f"{_seconds(None if settled is None else settled - changed)}"
        )
        self.target = new
        return self._row("API server outage 30 s", done, window, failures)

    def kills_while_scaling(self) -> Row:
        supervisor = self._supervisor()
        settings = self.settings
        steps = [
            settings.small_target if i % 2 == 0 else settings.target for i in range(settings.kills)
        ]
        window = self.monitor.open(
            POOL,
            self._per_pod(),
            self._changing(self.target, settings.small_target, settings.target),
        )
        failures: list[str] = []
        before = len(supervisor.restarts)
        for i, new in enumerate(steps):
            polling.wait_for(supervisor.all_running, 90, "every replica to run")
            polling.wait_for(supervisor.leader, 60, "a replica to lead")
            changed = time.monotonic()
            self._set_target(new)
            time.sleep(self.rng.uniform(0.0, 2.5))
            leader = polling.wait_for(supervisor.leader, 60, "a replica to lead")
            late = (i + 1) % settings.late_restart_every == 0
            restart_after = settings.late_restart_seconds if late else 0.0
            killed_at = time.monotonic()
            killed = supervisor.kill(leader, restart_after)
            back = supervisor.renewed_after(killed, LEADER_BACK_SECONDS)
            by = "-" if back is None else "restarted" if back[1] == leader.name else "standby"
            self.kills.append(
                Kill(new, killed_at - changed, back[0] if back else None, by, restart_after)
            )
            if self._settle(new) is None:
                failures.append(f"kill {i + 1}: not settled at {new} sessions")
            self.target = new
        polling.wait_for(supervisor.all_running, 90, "every replica to run")
        slowest = max((k.leader_back_seconds or 0.0) for k in self.kills)
        codes = Counter(r.exit_code for r in supervisor.restarts[before:])
        if any(k.leader_back_seconds is None for k in self.kills):
            failures.append("no lease renewal after a kill")
        standby = sum(1 for k in self.kills if k.by == "standby")
        done = (
            f"{len(steps)} SIGKILLs of the leader, 0-2.5 s into scaling "
            f"{settings.small_target}<->{settings.target}; {standby} taken over by the standby, "
            f"{len(steps) - standby} by the restarted replica; lease renewed <= "
            f"{slowest:.1f} s after a kill; {_restarts(codes)}"
        )
        return self._row("10 SIGKILLs while scaling", done, window, failures)

    def mass_spot_interruption(self) -> Row:
        want = planned(self.target)
        spot_nodes = sorted(
            n.metadata.name
            for n in self.core.list_node(
                label_selector=f"{constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE}={constants.CapacityType.SPOT}"
            ).items
        )
        pods = self._serving()
        used = sorted(
            {p.node for p in pods if p.capacity_type == constants.CapacityType.SPOT and p.node}
        )
        spare = [n for n in spot_nodes if n not in used][:SPOT_NODES_SPARED]
        hit = [n for n in spot_nodes if n not in spare]
        self.interrupted = hit
        surviving = self._per_pod() * sum(1 for p in pods if p.node not in hit)
        limits = Limits(
            target=self.target,
            floor=min(self.target, surviving),
            pods=want.replicas + want.spot_replicas,  # + an on-demand stand-in per spot pod
            spot=want.spot_replicas,
        )
        window = self.monitor.open(POOL, self._per_pod(), limits)
        started = time.monotonic()
        signals = [fleet.DRILL_SIGNALS[i % len(fleet.DRILL_SIGNALS)][1] for i in range(len(hit))]
        with concurrent.futures.ThreadPoolExecutor(len(hit)) as pool:
            list(pool.map(self.core.patch_node, hit, signals))
        signalled = time.monotonic() - started
        # First the reaction: every pod on those nodes marked draining (or deleted).
        leaving = {p.uid for p in pods if p.node in hit}
        reacted = poll(
            lambda: all(
                u in self.monitor.drain_marked or u in self.monitor.terminating for u in leaving
            ),
            30,
            0.05,
        )
        # Then back at the target: replacements on the spared spot nodes, and on-demand
        # stand-ins for the rest once the spot fallback has passed.
        restored = poll(
            lambda: self._capacity() >= self.target and not self._draining(),
            self.settings.spot_fallback_seconds + 60,
            0.1,
        )
        back = time.monotonic() - started if restored else None
        # Then steady: a serving on-demand stand-in for every spot pod that waits (the
        # waiting pods reach the fallback time one poll apart, so their stand-ins may too).
        poll(
            lambda: not self._draining() and self._stand_ins() == len(self._waiting()),
            self.settings.spot_fallback_seconds + 30,
            0.1,
        )
        stuck = self._waiting()
        stand_ins = self._stand_ins()
        fallback = self.settings.spot_fallback_seconds
        note = (
            f"no spot node left for {len(stuck)} pods: the nodes allowed {surviving} until "
            f"replacements ran; on-demand stand-ins after the {fallback} s spot fallback; "
            f"back at {self.target} after {_seconds(back)}"
        )
        failures = [] if reacted else [f"the pods on {len(hit)} signalled nodes were not drained"]
        fallback_bound = self.settings.spot_fallback_seconds + 15
        if window.below_target_seconds > fallback_bound:
            failures.append(
                f"below the target for {window.below_target_seconds:.1f} s "
                f"(> spot fallback + 15 s = {fallback_bound} s)"
            )
        if stand_ins < len(stuck):
            failures.append(f"{len(stuck)} spot pods wait but only {stand_ins} stand-ins run")
        kinds = len({s for s, _ in fleet.DRILL_SIGNALS[: len(hit)]})
        done = (
            f"{len(hit)} of {len(spot_nodes)} spot nodes signalled within {signalled:.1f} s "
            f"({kinds} kinds of signal), {len(used)} spot pods on them; then {len(stuck)} spot "
            f"pods wait, {stand_ins} on-demand stand-ins serve"
        )
        return self._row(
            "mass spot interruption",
            done,
            window,
            failures,
            notes=[note],
            unschedulable_expected=len(stuck),
            unschedulable_why="nodes still signalled",
        )

    def spot_recovery(self) -> Row:
        want = planned(self.target)
        hit = self.interrupted
        waiting = {p.uid for p in self._waiting()}
        stand_ins = self._stand_ins()
        window = self.monitor.open(
            POOL,
            self._per_pod(),
            Limits(
                self.target, self.target, want.replicas + want.spot_replicas, want.spot_replicas
            ),
        )
        changed = time.monotonic()
        for name in hit:
            fleet.clear_node(self.cluster, name)
        self.interrupted = []
        settled = self._settle(self.target)
        failures = [] if settled is not None else [f"not settled at {self.target} sessions"]
        remade = sum(1 for uid in waiting if uid in self.monitor.terminating)
        done = (
            f"signals cleared on {len(hit)} nodes: {remade} waiting spot pods remade, "
            f"{stand_ins} stand-ins given back once spot pods served; settled in "
            f"{_seconds(None if settled is None else settled - changed)}"
        )
        return self._row("recovery of the spot nodes", done, window, failures)

    def pool_burst(self) -> Row:
        count = self.settings.pools
        names = [f"{BURST_PREFIX}-{i:02d}" for i in range(count)]
        want = plan(VoiceAgentPoolSpec.model_validate(burst_spec()), catalog.builtin()).replicas
        added = self._add_nodes(BURST_NODES)
        window = self.monitor.open(POOL, self._per_pod(), self._steady(self.target))
        failures: list[str] = []
        try:
            created = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: self._apply(n, burst_spec()), names))

            def running() -> bool:
                return all(
                    sum(1 for p in self.monitor.pool_pods(n) if p.serving) == want for n in names
                )

            polling.wait_for(running, 180, f"{count} pools' pods to run")
            up = time.monotonic() - created
            pools = {
                str(b["metadata"]["name"]): str(b["metadata"]["uid"])
                for b in self.monitor.pools.copy().values()
                if str(b["metadata"]["name"]) in names
            }
            asked: dict[str, float] = {}

            def delete(name: str) -> None:
                asked[name] = time.monotonic()
                self.objects.delete_namespaced_custom_object(
                    constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL, name
                )

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(delete, names))
            polling.wait_for(
                lambda: all(self._deleted(n, uid) is not None for n, uid in pools.items()),
                120,
                f"{count} pools and their pods to go",
            )
            took = {n: (self._deleted(n, uid) or 0.0) - asked[n] for n, uid in pools.items()}
            pool_gone = max(self.monitor.pool_gone[uid] - asked[n] for n, uid in pools.items())
            polling.wait_for(
                lambda: not any(p.pool in names for p in self.monitor.pods.copy().values()),
                120,
                "the pools' pods to be gone",
            )
        finally:
            self._remove_nodes(added)
        slowest = max(took.values())
        if slowest > self.settings.delete_limit_seconds:
            late = sorted(n for n, s in took.items() if s > self.settings.delete_limit_seconds)
            failures.append(f"deletions over {self.settings.delete_limit_seconds:.0f} s: {late}")
        made = Counter(p.pool for p in self.monitor.names.copy().values() if p.pool in names)
        extra = sorted(n for n in names if made[n] != want)
        if extra:
            failures.append(f"pools with other than {want} pods ever: {extra}")
        row = self._row(
            "50 pools created and deleted",
            f"{count} pools created at once (all pods running after {up:.0f} s), then deleted "
            f"at once; the {self.target}-session pool beside them untouched",
            window,
            failures,
        )
        row.pods_max += sum(made.values())
        row.pods_expected += want * count
        row.deletion_max_seconds = slowest
        row.notes.append(
            f"pods max/expected: the big pool's plus every pod the {count} pools ever had; "
            f"deletion: delete call -> pool gone (<= {pool_gone:.1f} s) and its pods "
            "terminating or gone"
        )
        return row

    # --- measuring -----------------------------------------------------------------------

    def _row(  # noqa: PLR0917
        self,
        scenario: str,
        done: str,
        window: Window,
        failures: list[str],
        notes: Sequence[str] = (),
        unschedulable_expected: int = 0,
        unschedulable_why: str = "",
    ) -> Row:
        self.monitor.close(window)
        failures = list(failures)
        if window.over_limit:
            failures.append(f"more pods than planned: {window.over_limit[0]}")
        if window.margin_min is not None and window.margin_min < 0:
            failures.append(
                f"capacity {window.capacity_min} below what the nodes allowed "
                f"({window.floor_at_min})"
            )
        missing = []
        for uid in sorted(window.drained):
            record = self.kubelet.record(uid)
            if record is None or not record.acknowledged:
                missing.append(self.monitor.names[uid].name)
            elif not all(d["authorized"] for d in record.drains):
                failures.append(f"{self.monitor.names[uid].name}: a drain call with a wrong token")
        if missing:
            failures.append(f"drains not acknowledged by the runtime: {missing}")
        notes = list(notes)
        if window.over_seconds_max > 0 and not window.over_limit:
            lasted = max(window.over_seconds_max, 0.1)
            notes.append(
                f"pods above the plan for under {lasted:.1f} s: replacements made while the "
                "pods they replace were being marked or deleted (one pass)"
            )
        left = self._unscheduled()
        if left > unschedulable_expected:
            failures.append(f"{left} pods left unschedulable")
        target = window.limits.target
        return Row(
            scenario=scenario,
            done=done,
            pods_max=window.pods_max,
            pods_expected=window.pods_allowed,
            capacity_min=window.capacity_min,
            capacity_target=target,
            capacity_floor=window.floor_at_min,
            below_target_seconds=window.below_target_seconds,
            drains_acknowledged=len(window.drained) - len(missing),
            drains_made=len(window.drained),
            unschedulable_left=left,
            unschedulable_why="" if left == 0 else unschedulable_why,
            notes=notes,
            failures=failures,
        )

    def _nothing_happened(self, before: list[PodSeen], nodes_: list[str]) -> list[str]:
        """Once the nodes are Ready and untainted again and every runtime answered two more
        status polls (the operator looked again): the same pods, none drained."""
        polling.wait_for(lambda: self._nodes_clear(nodes_), 60, "the nodes to be Ready again")
        uids = [p.uid for p in before]
        polls = self.kubelet.status_calls(uids)
        polling.wait_for(
            lambda: self.kubelet.status_calls(uids) >= polls + 2, 60, "two more status polls"
        )
        failures = []
        if self._settle(self.target) is None:
            failures.append(f"not settled at {self.target} sessions")
        now = {p.uid for p in self._serving()}
        if now != set(uids):
            failures.append(
                f"pods changed: {len(set(uids) - now)} gone, {len(now - set(uids))} new"
            )
        return failures

    def _settle(self, target: int) -> float | None:
        """time.monotonic() once the pool runs exactly its plan for ``target`` (every pod
        serving, none draining or waiting); None after ``settle_seconds``."""
        want = planned(target)

        def done() -> bool:
            pods = self.monitor.pool_pods(POOL)
            if not all(p.serving for p in pods):
                return False
            kinds = Counter(p.capacity_type for p in pods)
            return (
                kinds[constants.CapacityType.ON_DEMAND] == want.on_demand_replicas
                and kinds[constants.CapacityType.SPOT] == want.spot_replicas
            )

        settled = polling.poll(done, self.settings.settle_seconds, 0.1)
        return time.monotonic() if settled else None

    def _must_settle(self, target: int, what: str) -> None:
        if self._settle(target) is None:
            pods = [
                f"{p.name}@{p.node} ready={p.ready} draining={p.draining}"
                for p in self.monitor.pool_pods(POOL)
            ]
            raise fleet.FleetError(f"{what}: not settled at {target} sessions: {pods}")

    def _unscheduled(self) -> int:
        """Pool pods (of any pool) not being deleted that no node took, as the API lists."""
        listed = self.core.list_namespaced_pod(NAMESPACE, label_selector=constants.LABEL_POOL)
        return sum(
            1
            for p in listed.items
            if not p.spec.node_name and p.metadata.deletion_timestamp is None
        )

    def _serving(self) -> list[PodSeen]:
        return [p for p in self.monitor.pool_pods(POOL) if p.serving]

    def _capacity(self) -> int:
        return self._per_pod() * len(self._serving())

    def _draining(self) -> list[PodSeen]:
        return [p for p in self.monitor.pool_pods(POOL) if p.draining]

    def _stand_ins(self) -> int:
        """Serving on-demand pods beyond the plan's."""
        want = planned(self.target).on_demand_replicas
        on_demand = [
            p
            for p in self.monitor.pool_pods(POOL)
            if p.capacity_type == constants.CapacityType.ON_DEMAND and p.serving
        ]
        return max(0, len(on_demand) - want)

    def _waiting(self) -> list[PodSeen]:
        """Pods of the pool that no node took."""
        return [p for p in self.monitor.pool_pods(POOL) if p.unscheduled]

    def _per_pod(self) -> int:
        return planned(self.target).sessions_per_pod

    def _steady(self, target: int) -> Limits:
        want = planned(target)
        return Limits(target, target, want.replicas, want.spot_replicas)

    def _changing(self, *targets: int) -> Limits:
        """While the target moves between ``targets``: the least of them must be served,
        the most planned pods of any of them may run."""
        plans = [planned(t) for t in targets]
        least = min(targets)
        return Limits(
            least, least, max(p.replicas for p in plans), max(p.spot_replicas for p in plans)
        )

    def _deleted(self, name: str, uid: str) -> float | None:
        """When pool ``name`` was gone with its pods terminating or gone, if it is."""
        gone = self.monitor.pool_gone.get(uid)
        if gone is None:
            return None
        pods = [p for p in self.monitor.names.copy().values() if p.owner == uid]
        ends = [self.monitor.terminating.get(p.uid) for p in pods]
        if any(end is None for end in ends):
            return None
        return max([gone, *(e for e in ends if e is not None)])

    def _degraded_for_nodes(self) -> bool:
        pool = kube_admin.get_pool(self.cluster.api, NAMESPACE, POOL)
        return any(
            c.get("type") == constants.CONDITION_DEGRADED
            and c.get("reason") == constants.REASON_NODES_NOT_READY
            for c in (pool.get("status") or {}).get("conditions") or []
        )

    def _nodes_clear(self, names: Sequence[str]) -> bool:
        """Ready, and without the not-ready taints of the node lifecycle controller."""
        for name in names:
            node = self.core.read_node(name)
            ready = any(
                c.type == "Ready" and c.status == "True" for c in node.status.conditions or []
            )
            tainted = any(t.key.startswith("node.kubernetes.io/") for t in node.spec.taints or [])
            if not ready or tainted:
                return False
        return True

    def _api_answers(self) -> bool:
        try:
            self.core.list_namespace(limit=1, _request_timeout=5)
        except Exception:  # not yet
            return False
        return True

    # --- acting --------------------------------------------------------------------------

    def _supervisor(self) -> Supervisor:
        if self.supervisor is None:
            raise RuntimeError("the operators are not running")
        return self.supervisor

    def _namespace(self) -> None:
        """The run's namespace, new (an earlier run's may still be terminating)."""

        def created() -> bool:
            try:
                self.core.create_namespace(
                    client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
                )
            except client.ApiException as exc:
                if exc.status == 409:
                    return False
                raise
            return True

        polling.wait_for(created, 120, f"namespace {NAMESPACE} to be made afresh")
        polling.wait_for(
            lambda: (
                self.core.list_namespaced_service_account(
                    NAMESPACE, field_selector="metadata.name=default"
                ).items
            ),
            60,
            f"the default service account in {NAMESPACE}",
        )

    def _apply(self, name: str, spec: dict[str, Any]) -> None:
        kube_admin.apply_manifest(self.cluster.api, _manifest(name, spec))

    def _set_target(self, target: int) -> None:
        self.objects.patch_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            NAMESPACE,
            constants.PLURAL,
            POOL,
            {"spec": {"sessions": {"target": target}}},
        )

    def _not_ready(self, names: Sequence[str], *, ready: bool) -> None:
        """NotReady (or Ready again) as a kubelet reports it, node by node."""
        for name in names:
            if not ready:
                self.not_ready.append(name)
            kube_admin.set_node_ready(self.core, name, ready)
            if ready:
                self.not_ready.remove(name)

    def _add_nodes(self, group: nodes.NodeGroup) -> list[str]:
        """``group``'s nodes, each with a /24 of the pod network no node uses; once Ready."""
        existing = self.core.list_node().items
        cidrs = {ipaddress.ip_network(n.spec.pod_cidr) for n in existing if n.spec.pod_cidr}
        network = next(iter(cidrs)).supernet(new_prefix=16)
        free = (s for s in list(network.subnets(new_prefix=24))[1:] if s not in cidrs)
        made = []
        for i in range(group.count):
            fake = nodes.FakeNode(f"{group.prefix}-{i}", group, str(next(free)))
            self.core.create_node(nodes.node_manifest(fake))
            made.append(fake.name)
            self.added.append(fake.name)
        polling.wait_for(lambda: self._nodes_clear(made), 60, "the added nodes to be Ready")
        return made

    def _remove_nodes(self, names: Sequence[str]) -> None:
        for name in list(names):
            self.core.delete_node(name)
            self.added.remove(name)

    def _teardown(self, replicas: operators.Replicas | None) -> None:
        """Leave the cluster as the run found it, every step tried whatever failed before
        (a failure is one of the run's problems)."""

        def delete_pool() -> None:
            try:
                self.objects.delete_namespaced_custom_object(
                    constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL, POOL
                )
            except client.ApiException as exc:
                if exc.status != 404:
                    raise

        def stop_operators() -> None:
            if self.supervisor is not None:
                self.supervisor.stop()
            elif replicas is not None:
                replicas.stop()

        def restore_nodes() -> None:
            for name in self.not_ready:
                kube_admin.set_node_ready(self.core, name, True)
            for name in self.interrupted:
                fleet.clear_node(self.cluster, name)
            self._remove_nodes(self.added)

        steps: list[Callable[[], object]] = [
            delete_pool,
            stop_operators,
            self.monitor.stop,
            self.kubelet.stop,
            restore_nodes,
            lambda: self.core.delete_namespace(NAMESPACE),
            lambda: fleet.uninstall_chart(self.cluster),
        ]
        for step in steps:
            try:
                step()
            except Exception as exc:  # every step is tried; the first failure is reported
                self.cleanup_problems.append(f"cleaning up: {exc!r}")
                self.log(self.cleanup_problems[-1])


@contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """The process frozen (SIGSTOP) until the block ends, whatever happens in it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _restarts(codes: Counter[int | None]) -> str:
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


# --- the report --------------------------------------------------------------------------

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
    kills = ", ".join(f"{_seconds(k.leader_back_seconds)} ({k.by})" for k in result.kills)
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


# --- standalone --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="a running sandbox's state directory to use (default: start one of its own)",
    )
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeat for more; default: all, in order)",
    )
    args = parser.parse_args(argv)
    settings = Settings(seed=args.seed, scenarios=tuple(args.scenario or SCENARIOS))
    own = args.state_dir is None
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="voicefleet-chaos-")) / "state"
    sandbox = manager.load(state_dir) if not own else None
    if sandbox is None:
        sandbox = manager.up(state_dir, fleet.E2E_NODES, log=print, tie_to_caller=True)
        own = True
    try:
        helm = binaries.cached("helm")
        kubectl = binaries.cached("kubectl")
        if helm is None or kubectl is None:
            print("no helm or kubectl: run e2e/build-sandbox.sh", file=sys.stderr)
            return 2
        api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
        cluster = fleet.Cluster(sandbox.kubeconfig, str(kubectl), str(helm), api)
        (apiserver,) = [p for p in sandbox.processes if p.name == "kube-apiserver"]
        with tempfile.TemporaryDirectory(prefix="voicefleet-chaos-") as workdir:
            result = Chaos(cluster, apiserver, Path(workdir), settings).run()
        print(summary(result))
        print(table(result))
        return 0 if result.ok else 1
    finally:
        if own:
            manager.down(state_dir, log=lambda _line: None)


if __name__ == "__main__":
    sys.exit(main())
