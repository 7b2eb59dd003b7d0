"""The sandbox is a real Kubernetes control plane: each test exercises a behaviour that only
a real kube-apiserver, controller manager, scheduler and kwok produce together.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.fixtures.sandbox import Apply, Cluster, PodProcesses, wait_pod_ready, wait_until
from voicefleet.constants import (
    API_VERSION,
    CRD_NAME,
    GROUP,
    KIND,
    NODE_LABEL_EKS_CAPACITY_TYPE,
    NODE_LABEL_GPU_COUNT,
    NODE_LABEL_GPU_MEMORY,
    NODE_LABEL_GPU_PRODUCT,
    NODE_LABEL_KARPENTER_CAPACITY_TYPE,
    PLURAL,
    RESOURCE_GPU,
    SINGULAR,
    VERSION,
    CapacityType,
    Strategy,
)
from voicefleet.sandbox.nodes import DEFAULT_GPU_PRODUCT, GPU_MEMORY_MIB, KWOK_NODE_ANNOTATION

pytestmark = pytest.mark.sandbox

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def _pool(name: str, namespace: str) -> dict[str, Any]:
    """A valid pool, as in DESIGN.md: 200 conversations of Moshi on H100s, spot-first."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "moshi", "variant": "moshiko-bf16"},
            "sessions": {"target": 200, "maxSessionSeconds": 240, "headroomPercent": 15},
            "gpu": {"product": DEFAULT_GPU_PRODUCT},
            "capacity": {
                "strategy": Strategy.SPOT_FIRST,
                "onDemandBase": 1,
                "spotPercentage": 80,
                "interruption": {"drainSeconds": 100},
            },
        },
    }


def _pod(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": PAUSE_IMAGE}], **spec},
    }


def _gpu_pod(name: str, capacity_type: str, **metadata: Any) -> dict[str, Any]:
    pod = _pod(
        name,
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": NODE_LABEL_KARPENTER_CAPACITY_TYPE,
                                    "operator": "In",
                                    "values": [capacity_type],
                                }
                            ]
                        }
                    ]
                }
            }
        },
    )
    pod["spec"]["containers"][0]["resources"] = {"limits": {RESOURCE_GPU: "1"}}
    pod["metadata"].update(metadata)
    return pod


def test_fake_gpu_nodes_are_shaped_like_a_gpu_cluster(kube_api: client.ApiClient) -> None:
    nodes = client.CoreV1Api(kube_api).list_node().items
    fake = [n for n in nodes if (n.metadata.annotations or {}).get(KWOK_NODE_ANNOTATION)]
    gpu = [n for n in fake if n.metadata.labels.get(NODE_LABEL_GPU_PRODUCT)]
    by_capacity = {
        kind: [n for n in gpu if n.metadata.labels[NODE_LABEL_KARPENTER_CAPACITY_TYPE] == kind]
        for kind in (CapacityType.ON_DEMAND, CapacityType.SPOT)
    }
    assert len(by_capacity[CapacityType.ON_DEMAND]) == 2
    assert len(by_capacity[CapacityType.SPOT]) == 4
    assert len(fake) - len(gpu) == 1  # the CPU node
    for node in gpu:
        labels = node.metadata.labels
        assert labels[NODE_LABEL_GPU_PRODUCT] == DEFAULT_GPU_PRODUCT
        assert labels[NODE_LABEL_GPU_MEMORY] == str(GPU_MEMORY_MIB[DEFAULT_GPU_PRODUCT])
        assert node.status.allocatable[RESOURCE_GPU] == labels[NODE_LABEL_GPU_COUNT]
        spot = labels[NODE_LABEL_KARPENTER_CAPACITY_TYPE] == CapacityType.SPOT
        assert labels[NODE_LABEL_EKS_CAPACITY_TYPE] == ("SPOT" if spot else "ON_DEMAND")
    for node in fake:
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name


def test_every_fake_node_keeps_a_lease_like_a_kubelet(kube_api: client.ApiClient) -> None:
    # Without leases the node lifecycle controller sees stale heartbeats under load and marks
    # every node NotReady, which the operator takes for an interruption of all of them.
    nodes = client.CoreV1Api(kube_api).list_node().items
    fake = {
        n.metadata.name for n in nodes if (n.metadata.annotations or {}).get(KWOK_NODE_ANNOTATION)
    }
    coordination = client.CoordinationV1Api(kube_api)

    def leased() -> bool:
        leases = coordination.list_namespaced_lease("kube-node-lease").items
        return fake <= {lease.metadata.name for lease in leases}

    wait_until(leased, timeout=30, what="a Lease for every fake node")
    lease = coordination.read_namespaced_lease(sorted(fake)[0], "kube-node-lease")
    assert lease.spec.lease_duration_seconds == 40
    assert lease.spec.renew_time is not None


def test_crds_are_established(kube_api: client.ApiClient, voicefleet_crds: list[str]) -> None:
    crd = client.ApiextensionsV1Api(kube_api).read_custom_resource_definition(CRD_NAME)
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert crd.status.accepted_names.kind == KIND


def test_example_pool_is_accepted(
    kube_api: client.ApiClient, voicefleet_crds: list[str], namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _pool("support-en", namespace)
    )
    assert created["spec"]["capacity"]["spotPercentage"] == 80


def test_invalid_pool_is_rejected_naming_the_field(
    kube_api: client.ApiClient, voicefleet_crds: list[str], namespace: str
) -> None:
    pool = _pool("too-much-spot", namespace)
    pool["spec"]["capacity"]["spotPercentage"] = 150
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, pool
        )
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert "spec.capacity.spotPercentage" in message
    assert "100" in message  # the bound it broke


def test_kubectl_explain_shows_descriptions(sandbox: Cluster, voicefleet_crds: list[str]) -> None:
    # The API server publishes CRD schemas through OpenAPI a moment after Established.
    def explained() -> str:
        result = sandbox.run_kubectl("explain", f"{SINGULAR}.spec.sessions", check=False)
        return result.stdout if result.returncode == 0 else ""

    text = wait_until(explained, what="kubectl explain to know the CRD")
    assert "How many concurrent conversations the pool must hold" in text
    assert "maxSessionSeconds" in text
    assert "Concurrent conversations the pool must hold" in text


def test_gpu_pod_with_spot_affinity_runs_on_a_spot_node(
    kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    apply(_gpu_pod("spot-worker", CapacityType.SPOT))
    pod = wait_pod_ready(kube_api, namespace, "spot-worker")
    node = client.CoreV1Api(kube_api).read_node(pod.spec.node_name)
    assert node.metadata.labels[NODE_LABEL_KARPENTER_CAPACITY_TYPE] == CapacityType.SPOT
    assert pod.status.phase == "Running"
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(node.spec.pod_cidr)


def test_pod_that_asks_for_more_gpus_than_any_node_stays_pending(
    kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    pod = _gpu_pod("greedy", CapacityType.SPOT)
    pod["spec"]["containers"][0]["resources"] = {"limits": {RESOURCE_GPU: "64"}}
    apply(pod)
    core = client.CoreV1Api(kube_api)

    def refusal() -> str:
        conditions = core.read_namespaced_pod("greedy", namespace).status.conditions or []
        for condition in conditions:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                return str(condition.message)
        return ""

    message = wait_until(refusal, what="the scheduler to refuse the pod")
    assert f"Insufficient {RESOURCE_GPU}" in message


def test_deleting_the_owner_garbage_collects_dependents(
    kube_api: client.ApiClient, voicefleet_crds: list[str], apply: Apply, namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    owner = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _pool("owner", namespace)
    )
    reference = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    apply(_gpu_pod("dependent", CapacityType.ON_DEMAND, ownerReferences=[reference]))
    wait_pod_ready(kube_api, namespace, "dependent")
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "owner")
    core = client.CoreV1Api(kube_api)
    wait_until(
        lambda: not core.list_namespaced_pod(namespace).items,
        what="the garbage collector to delete the pod",
    )


def _evict(kube_api: client.ApiClient, namespace: str, name: str) -> None:
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
    client.CoreV1Api(kube_api).create_namespaced_pod_eviction(name, namespace, eviction)


def test_eviction_that_breaks_a_disruption_budget_is_refused(
    kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    labels = {"app": "voice"}
    for name in ("voice-0", "voice-1"):
        apply(_pod(name, labels=labels))
        wait_pod_ready(kube_api, namespace, name)
    apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "voice"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": labels}},
        }
    )
    policy = client.PolicyV1Api(kube_api)

    def counted() -> bool:
        status = policy.read_namespaced_pod_disruption_budget("voice", namespace).status
        return bool(status and status.current_healthy == 2 and status.observed_generation)

    # Only once the disruption controller counted the pods is a refusal the budget's doing.
    wait_until(counted, what="the disruption controller to count the pods")
    with pytest.raises(ApiException) as refused:
        _evict(kube_api, namespace, "voice-0")
    assert refused.value.status == 429
    assert "disruption budget" in refused.value.body

    # The same eviction goes through once the budget allows one pod to go.
    apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "voice"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
        }
    )
    wait_until(
        lambda: (
            policy.read_namespaced_pod_disruption_budget(
                "voice", namespace
            ).status.disruptions_allowed
            == 1
        ),
        what="the budget to allow one disruption",
    )
    _evict(kube_api, namespace, "voice-0")


def test_stale_resource_version_is_a_conflict(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    created = core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="state"), data={"step": "1"}),
    )
    first = core.read_namespaced_config_map("state", namespace)
    first.data = {"step": "2"}
    core.replace_namespaced_config_map("state", namespace, first)
    stale = created
    stale.data = {"step": "stale"}
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("state", namespace, stale)
    assert conflict.value.status == 409
    assert core.read_namespaced_config_map("state", namespace).data == {"step": "2"}


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_process_on_the_pod_ip_is_reachable(
    kube_api: client.ApiClient, apply: Apply, namespace: str, pod_processes: PodProcesses
) -> None:
    apply(_gpu_pod("runtime-0", CapacityType.SPOT))
    pod = wait_pod_ready(kube_api, namespace, "runtime-0")
    ip = pod.status.pod_ip
    assert ipaddress.ip_address(ip).is_loopback
    port = _free_port(ip)
    pod_processes.start(
        ip,
        [sys.executable, "-m", "http.server", "--bind", "{ip}", str(port)],
        cwd=Path(__file__).parent,
    )

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=2) as response:
                return int(response.status) == 200
        except OSError:
            return False

    wait_until(answers, timeout=15, what=f"the stand-in process on {ip}:{port}")
