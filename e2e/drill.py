"""The interruption drill: one cloud's signal on one node, the pool's reaction timed from
outside (drain notice at a live conversation, serving replacements, the least capacity
meanwhile), the signal cleared again, and the drill's table."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from e2e.fleet import Callers, Cluster, FleetError, serving_pods
from voicefleet.testing import kube_admin
from voicefleet.testing.polling import poll

# One signal of each kind a cloud sends, in turn (REFERENCE.md's table).
DRILL_SIGNALS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "aws-node-termination-handler spot-itn taint",
        {"spec": {"taints": [{"key": "aws-node-termination-handler/spot-itn",
                              "effect": "NoSchedule"}]}},
    ),
    ("Karpenter disrupted taint",
     {"spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}}),
    (
        "GKE impending-termination taint",
        {"spec": {"taints": [{"key": "cloud.google.com/impending-node-termination",
                              "effect": "NoSchedule"}]}},
    ),
    ("cordon", {"spec": {"unschedulable": True}}),
)  # fmt: skip


@dataclass(frozen=True)
class DrillStep:
    """What happened when one node went away."""

    node: str
    signal: str
    pods: tuple[str, ...]  # the pool's pods on the node
    notice_seconds: float | None  # signal -> drain notice at a live conversation
    replaced_seconds: float  # signal -> as many serving pods as before
    min_capacity: int  # fewest sessions the serving pods held at any moment
    target: int


def _capacity(cluster: Cluster, namespace: str, pool: str, per_pod: int) -> int:
    return len(serving_pods(cluster, namespace, pool)) * per_pod


def interrupt_node(
    cluster: Cluster,
    namespace: str,
    pool: str,
    *,
    node: str,
    signal: tuple[str, dict[str, Any]],
    callers: Callers,
    timeout: float = 30,
) -> DrillStep:
    """Send one interruption signal to ``node`` and time the pool's reaction."""
    status = kube_admin.get_pool(cluster.api, namespace, pool)
    per_pod = int(status["status"]["plan"]["sessionsPerPod"])
    target = int(status["spec"]["sessions"]["target"])
    before = len(serving_pods(cluster, namespace, pool))
    on_node = [p for p in serving_pods(cluster, namespace, pool) if p.spec.node_name == node]
    ips = [p.status.pod_ip for p in on_node]
    names = {p.metadata.name for p in on_node}

    started = time.monotonic()
    client.CoreV1Api(cluster.api).patch_node(node, signal[1])
    min_capacity = _capacity(cluster, namespace, pool, per_pod)
    replaced: float | None = None

    def done() -> bool:
        """Replaced and every live caller noticed; samples the capacity each time."""
        nonlocal min_capacity, replaced
        serving = serving_pods(cluster, namespace, pool)
        min_capacity = min(min_capacity, len(serving) * per_pod)
        fresh = [p for p in serving if p.metadata.name not in names]
        if replaced is None and len(fresh) >= before:
            replaced = time.monotonic() - started
        noticed = all(ip in callers.notices for ip in ips if ip in callers.connected)
        return replaced is not None and noticed

    poll(done, timeout, 0.05)
    if replaced is None:
        now = [
            f"{p.metadata.name}@{p.spec.node_name or '-'} ready={kube_admin.is_ready(p)} "
            f"draining={kube_admin.draining(p)}"
            for p in kube_admin.pool_pods(cluster.api, namespace, pool)
        ]
        conditions = (
            kube_admin.get_pool(cluster.api, namespace, pool)
            .get("status", {})
            .get("conditions", [])
        )
        raise FleetError(
            f"{pool}: pods of {node} not replaced within {timeout:.0f} s; pods: {now}; "
            f"conditions: {conditions}"
        )
    notices = [callers.notices[ip] - started for ip in ips if ip in callers.notices]
    return DrillStep(
        node=node,
        signal=signal[0],
        pods=tuple(sorted(names)),
        notice_seconds=max(notices) if notices else None,
        replaced_seconds=replaced,
        min_capacity=min_capacity,
        target=target,
    )


def clear_node(cluster: Cluster, node: str) -> None:
    """Take every drill signal off ``node`` again."""
    drill_keys = {
        t["key"] for _, patch in DRILL_SIGNALS for t in patch.get("spec", {}).get("taints", [])
    }
    core = client.CoreV1Api(cluster.api)
    current = core.read_node(node)
    taints = [
        {"key": t.key, "value": t.value, "effect": t.effect}
        for t in current.spec.taints or []
        if t.key not in drill_keys
    ]
    core.patch_node(node, {"spec": {"taints": taints or None, "unschedulable": None}})


def drill_table(steps: Sequence[DrillStep]) -> str:
    """The drill report: per interrupted node, time to drain notices and to replacements."""
    header = ("NODE", "SIGNAL", "PODS", "DRAIN NOTICE", "REPLACED", "MIN CAPACITY / TARGET")
    rows = [header] + [
        (
            s.node,
            s.signal,
            str(len(s.pods)),
            "-" if s.notice_seconds is None else f"{s.notice_seconds * 1000:.0f} ms",
            f"{s.replaced_seconds * 1000:.0f} ms",
            f"{s.min_capacity} / {s.target}",
        )
        for s in steps
    ]
    return table(rows)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the header first) as aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
