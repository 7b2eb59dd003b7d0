"""The chaos pool as the run sees it from outside: its pods on the watches, when it has
settled on its plan, and the nodes and API server as the API shows them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from kubernetes import client

from e2e import fleet
from e2e.chaos.settings import NAMESPACE, POOL, planned
from e2e.observe import Monitor, PodSeen
from voicefleet import constants
from voicefleet.testing import kube_admin, polling


@dataclass
class PoolView:
    monitor: Monitor
    api: client.ApiClient
    settle_seconds: float

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def serving(self) -> list[PodSeen]:
        return [p for p in self.monitor.pool_pods(POOL) if p.serving]

    def draining(self) -> list[PodSeen]:
        return [p for p in self.monitor.pool_pods(POOL) if p.draining]

    def waiting(self) -> list[PodSeen]:
        """Pods of the pool that no node took."""
        return [p for p in self.monitor.pool_pods(POOL) if p.unscheduled]

    def capacity(self, target: int) -> int:
        return planned(target).sessions_per_pod * len(self.serving())

    def stand_ins(self, target: int) -> int:
        """Serving on-demand pods beyond the plan's."""
        want = planned(target).on_demand_replicas
        on_demand = [
            p
            for p in self.monitor.pool_pods(POOL)
            if p.capacity_type == constants.CapacityType.ON_DEMAND and p.serving
        ]
        return max(0, len(on_demand) - want)

    def settle(self, target: int) -> float | None:
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

        settled = polling.poll(done, self.settle_seconds, 0.1)
        return time.monotonic() if settled else None

    def must_settle(self, target: int, what: str) -> None:
        if self.settle(target) is None:
            pods = [
                f"{p.name}@{p.node} ready={p.ready} draining={p.draining}"
                for p in self.monitor.pool_pods(POOL)
            ]
            raise fleet.FleetError(f"{what}: not settled at {target} sessions: {pods}")

    def unscheduled(self) -> int:
        """Runtime pods (of any pool) not being deleted that no node took, as the API lists."""
        runtime = (
            f"{constants.LABEL_POOL},{constants.LABEL_COMPONENT}={constants.COMPONENT_RUNTIME}"
        )
        listed = self.core.list_namespaced_pod(NAMESPACE, label_selector=runtime)
        return sum(
            1
            for p in listed.items
            if not p.spec.node_name and p.metadata.deletion_timestamp is None
        )

    def deleted(self, uid: str) -> float | None:
        """When the pool of ``uid`` was gone with its pods terminating or gone, if it is."""
        gone = self.monitor.pool_gone.get(uid)
        if gone is None:
            return None
        pods = [p for p in self.monitor.names.copy().values() if p.owner == uid]
        ends = [self.monitor.terminating.get(p.uid) for p in pods]
        if any(end is None for end in ends):
            return None
        return max([gone, *(e for e in ends if e is not None)])

    def degraded_for_nodes(self) -> bool:
        pool = kube_admin.get_pool(self.api, NAMESPACE, POOL)
        return any(
            c.get("type") == constants.CONDITION_DEGRADED
            and c.get("reason") == constants.REASON_NODES_NOT_READY
            for c in (pool.get("status") or {}).get("conditions") or []
        )

    def nodes_clear(self, names: Sequence[str]) -> bool:
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

    def api_answers(self) -> bool:
        try:
            self.core.list_namespace(limit=1, _request_timeout=5)
        except Exception:  # not yet
            return False
        return True
