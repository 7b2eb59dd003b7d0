"""voicefleet on the sandbox's real node, step by step, for the real-pod suite and the demo:
install the chart (its operator runs from its image), apply a tiny pool (its runtime pods
run the runtime image), and interrupt the node while conversations are live.

No pytest here: ``e2e/real/test_real_pods.py`` asserts on what these steps return,
``e2e/demo.py`` prints it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch

from e2e import fleet
from voicefleet import constants
from voicefleet.sandbox import node, nodes
from voicefleet.sandbox.state import Sandbox
from voicefleet.testing import kube_admin
from voicefleet.testing.polling import wait_for

APPS = "voice"
POOL = "tiny"
DRAIN_SECONDS = 20
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
POOL_MANIFEST: dict[str, Any] = {
    "apiVersion": constants.API_VERSION,
    "kind": constants.KIND,
    "metadata": {"name": POOL, "namespace": APPS},
    "spec": {
        "model": {"name": "tiny"},
        "sessions": {"target": 1, "headroomPercent": 0, "maxSessionSeconds": 120},
        "capacity": {
            "strategy": "spot-first",
            "spotPercentage": 100,
            "interruption": {"drainSeconds": DRAIN_SECONDS},
        },
        # The real node is the sandbox's only one, and a spot node: the gateway may run there.
        "gateway": {"capacityType": "any"},
    },
}
# Where replacements go once the real node is interrupted: a fake spot node, created only
# then, so the pool's first pods all land on the real node.
STANDBY_NODES = (
    nodes.NodeGroup(count=1, capacity_type=constants.CapacityType.SPOT, gpus=0, cpu=16),
)
SIGNAL = {"spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}}


def restricted_namespace(cluster: fleet.Cluster, name: str) -> None:
    """A namespace that enforces Pod Security "restricted", ready for pods."""
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=RESTRICTED))
    )
    wait_for(
        lambda: (
            core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
        ),
        60,
        f"the default ServiceAccount in {name}",
    )


def install_operator(cluster: fleet.Cluster) -> client.V1Pod:
    """``helm install`` onto the real node; returns the operator's pod once it leads."""
    restricted_namespace(cluster, fleet.OPERATOR_NAMESPACE)
    cluster.helm_run(
        "install",
        fleet.RELEASE,
        str(fleet.CHART),
        f"--namespace={fleet.OPERATOR_NAMESPACE}",
        # One replica: two cores run the control plane, the node and the pods.
        "--set=replicaCount=1",
        f"--set=nodeSelector.kubernetes\\.io/hostname={node.NODE_NAME}",
        "--wait",
        "--timeout=5m",
    )
    (pod,) = client.CoreV1Api(cluster.api).list_namespaced_pod(fleet.OPERATOR_NAMESPACE).items
    leases = client.CoordinationV1Api(cluster.api)
    wait_for(
        lambda: (
            leases.read_namespaced_lease(
                constants.OPERATOR_LEASE, fleet.OPERATOR_NAMESPACE
            ).spec.holder_identity
            == pod.metadata.name
        ),
        90,
        "the operator in its pod to lead",
    )
    return pod


def pods(cluster: fleet.Cluster) -> list[client.V1Pod]:
    return kube_admin.pool_pods(cluster.api, APPS, POOL)


def apply_pool(cluster: fleet.Cluster) -> list[client.V1Pod]:
    """The tiny pool, Ready with both its pods (one for the target, one spare so that
    losing a spot node still covers it)."""
    restricted_namespace(cluster, APPS)
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        constants.GROUP, constants.VERSION, APPS, constants.PLURAL, POOL_MANIFEST
    )
    fleet.wait_ready(cluster, APPS, POOL, timeout=240)
    found: list[client.V1Pod] = wait_for(
        lambda: (
            (now := pods(cluster)) and len(now) == 2 and all(map(kube_admin.is_ready, now)) and now
        ),
        120,
        "both runtime pods Ready",
    )
    wait_for(
        lambda: kube_admin.get_pool(cluster.api, APPS, POOL)["status"].get("readyReplicas") == 2,
        60,
        "the pool's status to count both pods ready",
    )
    wait_for(
        lambda: (
            (kube_admin.get_pool(cluster.api, APPS, POOL)["status"].get("gateway") or {}).get(
                "readyReplicas"
            )
            == 2
        ),
        180,
        "the pool's status to count both gateway replicas ready",
    )
    return found


def gateway_pods(cluster: fleet.Cluster) -> list[client.V1Pod]:
    return kube_admin.gateway_pods(cluster.api, APPS, POOL)


def endpoint_addresses(cluster: fleet.Cluster) -> set[str]:
    """Addresses the pool's Service sends callers to (ready endpoints)."""
    slices = client.DiscoveryV1Api(cluster.api).list_namespaced_endpoint_slice(
        APPS, label_selector=f"kubernetes.io/service-name={POOL}"
    )
    return {
        address
        for item in slices.items
        for endpoint in item.endpoints or []
        if endpoint.conditions and endpoint.conditions.ready
        for address in endpoint.addresses
    }


@dataclass
class Drill:
    """The real node interrupted: what the live conversations and the old pods saw."""

    notice_seconds: float
    replaced_seconds: float
    ended: dict[str, Any] = field(default_factory=dict)  # pod -> its container's final state
    deadlines: dict[str, Any] = field(default_factory=dict)  # pod -> deletionTimestamp
    grace_seconds: set[int] = field(default_factory=set)


def interrupt(cluster: fleet.Cluster, sandbox: Sandbox, callers: fleet.Callers) -> Drill:
    """Karpenter's signal on the real node; returns once every old pod has ended."""
    core = client.CoreV1Api(cluster.api)
    old = {p.metadata.name: p for p in pods(cluster)}
    drill = Drill(
        0.0, 0.0, grace_seconds={p.spec.termination_grace_period_seconds for p in old.values()}
    )
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(cluster, set(old), drill, stop), daemon=True)
    watcher.start()
    for manifest in nodes.manifests(STANDBY_NODES, sandbox.pod_network):
        core.create_node(manifest)
    started = time.monotonic()
    core.patch_node(node.NODE_NAME, SIGNAL)
    try:
        wait_for(
            lambda: callers.notices and all(ip in callers.notices for ip in callers.connected),
            60,
            "drain notices on every live conversation",
        )
        drill.notice_seconds = max(callers.notices.values()) - started
        wait_for(
            lambda: [
                p for p in fleet.serving_pods(cluster, APPS, POOL) if p.metadata.name not in old
            ],
            60,
            "a replacement serving",
        )
        drill.replaced_seconds = time.monotonic() - started
        # The callers hung up on the notice: the emptied old pods are deleted, their preStop
        # hook runs, and the runtime exits.
        wait_for(lambda: set(drill.ended) == set(old), 120, "the old pods to end")
    finally:
        stop.set()
        core.patch_node(node.NODE_NAME, {"spec": {"taints": None}})
    return drill


def _watch(cluster: fleet.Cluster, names: set[str], drill: Drill, stop: threading.Event) -> None:
    """Record each old pod's deletion deadline and its container's final state."""
    core = client.CoreV1Api(cluster.api)
    while not stop.is_set():
        for event in watch.Watch().stream(core.list_namespaced_pod, APPS, timeout_seconds=5):
            pod = event["object"]
            name = pod.metadata.name
            if name in names and pod.metadata.deletion_timestamp:
                drill.deadlines.setdefault(name, pod.metadata.deletion_timestamp)
                for status in pod.status.container_statuses or []:
                    if status.state and status.state.terminated:
                        drill.ended[name] = status.state.terminated
            if stop.is_set():
                return
