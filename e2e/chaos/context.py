"""What the scenarios of one chaos run share (the cluster, its watches, the stand-ins, the
supervised operators, the pool's target), and how a scenario's window becomes its row."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from e2e import fleet
from e2e.chaos.changes import Changes
from e2e.chaos.report import Kill, Row
from e2e.chaos.settings import NAMESPACE, Settings, per_pod
from e2e.chaos.view import PoolView
from e2e.observe import Monitor, PodSeen, Window
from e2e.standins import Kubelet
from e2e.supervise import Supervisor
from voicefleet.sandbox import processes
from voicefleet.testing import polling

Log = Callable[[str], None]


@dataclass
class Run:
    cluster: fleet.Cluster
    apiserver: processes.Process
    settings: Settings
    log: Log
    monitor: Monitor
    kubelet: Kubelet
    view: PoolView
    changes: Changes
    target: int
    rng: random.Random
    supervisor: Supervisor | None = None
    kills: list[Kill] = field(default_factory=list)

    @classmethod
    def new(
        cls,
        cluster: fleet.Cluster,
        apiserver: processes.Process,
        settings: Settings,
        log: Log,
    ) -> Run:
        monitor = Monitor(cluster.api, NAMESPACE)
        view = PoolView(monitor, cluster.api, settings.settle_seconds)
        return cls(
            cluster=cluster,
            apiserver=apiserver,
            settings=settings,
            log=log,
            monitor=monitor,
            kubelet=Kubelet(cluster.api, NAMESPACE),
            view=view,
            changes=Changes(cluster, view),
            target=settings.target,
            rng=random.Random(settings.seed),
        )

    @property
    def per_pod(self) -> int:
        return per_pod(self.target)

    def operators(self) -> Supervisor:
        if self.supervisor is None:
            raise RuntimeError("the operators are not running")
        return self.supervisor

    def row(  # noqa: PLR0917
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
        left = self.view.unscheduled()
        if left > unschedulable_expected:
            failures.append(f"{left} pods left unschedulable")
        return Row(
            scenario=scenario,
            done=done,
            pods_max=window.pods_max,
            pods_expected=window.pods_allowed,
            capacity_min=window.capacity_min,
            capacity_target=window.limits.target,
            capacity_floor=window.floor_at_min,
            below_target_seconds=window.below_target_seconds,
            drains_acknowledged=len(window.drained) - len(missing),
            drains_made=len(window.drained),
            unschedulable_left=left,
            unschedulable_why="" if left == 0 else unschedulable_why,
            notes=notes,
            failures=failures,
        )

    def nothing_happened(self, before: list[PodSeen], nodes_: list[str]) -> list[str]:
        """Once the nodes are Ready and untainted again and every runtime answered two more
        status polls (the operator looked again): the same pods, none drained."""
        polling.wait_for(lambda: self.view.nodes_clear(nodes_), 60, "the nodes to be Ready again")
        uids = [p.uid for p in before]
        polls = self.kubelet.status_calls(uids)
        polling.wait_for(
            lambda: self.kubelet.status_calls(uids) >= polls + 2, 60, "two more status polls"
        )
        failures = []
        if self.view.settle(self.target) is None:
            failures.append(f"not settled at {self.target} sessions")
        now = {p.uid for p in self.view.serving()}
        if now != set(uids):
            failures.append(
                f"pods changed: {len(set(uids) - now)} gone, {len(now - set(uids))} new"
            )
        return failures
