"""voicefleet on real pods: the sandbox's real node (a kubelet with containerd and runc)
runs the operator from its image, installed by helm, and a tiny pool's runtime pods from
the runtime image, in namespaces that enforce Pod Security "restricted".

In file order, on one installation: the chart's operator runs in a container and leads ->
a tiny pool (no GPU) becomes Ready with real pods whose startup, readiness and liveness
probes are the kubelet's -> a live conversation through the pool's Service (kube-proxy) ->
a full pod turns unready -> an interruption drill on the real node: its signal, the drain
notice on the live conversations, replacements serving elsewhere, and the old pods'
preStop hook and exit 0 within their grace period.

Needs the images (scripts/build-images.sh) and the Debian packages the real node uses
(containerd, runc, containernetworking-plugins); scripts/test.sh sees to both.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

from e2e import fleet
from tests.fixtures.sandbox import wait_until
from tests.operator import harness
from voicefleet import constants, images
from voicefleet.sandbox import binaries, manager, netns, node, nodes

pytestmark = pytest.mark.sandbox

APPS = "voice"
POOL = "tiny"
DRAIN_SECONDS = 20
GRACE_MARGIN_SECONDS = 30  # the operator's default --grace-margin-seconds
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
POOL_MANIFEST = {
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
    },
}
# Where replacements go once the real node is interrupted: a fake spot node, created only
# then, so the pool's first pods all land on the real node.
STANDBY_NODES = (nodes.NodeGroup(count=1, capacity_type=constants.CAPACITY_SPOT, gpus=0, cpu=16),)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[manager.Sandbox]:
    missing = node.missing_tools()
    if missing:
        pytest.fail(f"the real node needs {', '.join(missing)}", pytrace=False)
    built = {Path(oci).name for oci, _tag, _digest in node.layout_images(images.default_out())}
    if not {"operator", "runtime"} <= built:
        pytest.fail("no images: run scripts/build-images.sh --base debian", pytrace=False)
    state = tmp_path_factory.mktemp("real") / "state"
    try:
        sandbox = manager.up(state, (), log=print, tie_to_caller=True, real_node=True)
    except manager.SandboxError as exc:
        pytest.fail(f"the real node did not start: {exc}", pytrace=False)
    try:
        yield sandbox
    finally:
        manager.down(state, log=lambda _line: None)


@pytest.fixture(scope="module")
def cluster(real: manager.Sandbox) -> fleet.Cluster:
    tools = binaries.resolve(["kubectl", "helm"])
    api = config.new_client_from_config(config_file=str(real.kubeconfig))
    return fleet.Cluster(real.kubeconfig, str(tools["kubectl"]), str(tools["helm"]), api)


@pytest.fixture(scope="module")
def callers(real: manager.Sandbox) -> Iterator[fleet.Callers]:
    # Pod and Service addresses exist only inside the real node's network namespace.
    live = fleet.Callers(netns_name=real.real_node_netns)
    yield live
    live.close()


def _restricted_namespace(cluster: fleet.Cluster, name: str) -> None:
    meta = client.V1ObjectMeta(name=name, labels=RESTRICTED)
    client.CoreV1Api(cluster.api).create_namespace(client.V1Namespace(metadata=meta))


def _pods(cluster: fleet.Cluster) -> list[client.V1Pod]:
    return harness.pool_pods(cluster.api, APPS, POOL)


def test_helm_install_runs_the_operator_from_its_image_on_the_real_node(
    cluster: fleet.Cluster,
) -> None:
    _restricted_namespace(cluster, fleet.OPERATOR_NAMESPACE)
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
    assert pod.spec.node_name == node.NODE_NAME
    (status,) = pod.status.container_statuses
    assert status.ready and status.image == images.image_ref("operator")
    assert status.image_id  # a real container, not a fake
    # It leads: the Lease names it (it reached the API server through the kubernetes
    # Service, from inside its restricted pod).
    leases = client.CoordinationV1Api(cluster.api)
    wait_until(
        lambda: (
            leases.read_namespaced_lease(
                constants.OPERATOR_LEASE, fleet.OPERATOR_NAMESPACE
            ).spec.holder_identity
            == pod.metadata.name
        ),
        timeout=90,
        what="the operator in its pod to lead",
    )


def test_a_tiny_pool_runs_real_runtime_pods_without_a_gpu(cluster: fleet.Cluster) -> None:
    _restricted_namespace(cluster, APPS)
    wait_until(
        lambda: (
            client.CoreV1Api(cluster.api)
            .list_namespaced_service_account(APPS, field_selector="metadata.name=default")
            .items
        ),
        what="the default ServiceAccount",
    )
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        constants.GROUP, constants.VERSION, APPS, constants.PLURAL, POOL_MANIFEST
    )
    fleet.wait_ready(cluster, APPS, POOL, timeout=240)
    # One pod covers the target, the spare so that losing a spot node still does.
    pods = wait_until(
        lambda: (
            (found := _pods(cluster))
            and len(found) == 2
            and all(map(harness.is_ready, found))
            and found
        ),
        timeout=120,
        what="both runtime pods Ready",
    )
    for pod in pods:
        assert pod.spec.node_name == node.NODE_NAME
        (container,) = pod.spec.containers
        assert container.image == images.image_ref("runtime")
        assert constants.RESOURCE_GPU not in (container.resources.requests or {})
        assert pod.status.qos_class == "Burstable"  # CPU and memory requested
        (status,) = pod.status.container_statuses
        # The kubelet's probes passed: started (startup probe), ready (readiness probe).
        assert status.started and status.ready and status.restart_count == 0


def test_a_live_conversation_through_the_pools_service(
    cluster: fleet.Cluster, callers: fleet.Callers
) -> None:
    service = client.CoreV1Api(cluster.api).read_namespaced_service(POOL, APPS)
    ip = service.spec.cluster_ip
    wait_until(
        lambda: _endpoint_addresses(cluster) == {p.status.pod_ip for p in _pods(cluster)},
        what="both pods behind the Service",
    )
    callers.call(ip)
    assert callers.open[ip] == 1


def _endpoint_addresses(cluster: fleet.Cluster) -> set[str]:
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


def test_a_full_pod_turns_unready_and_leaves_the_service(
    cluster: fleet.Cluster, real: manager.Sandbox, callers: fleet.Callers
) -> None:
    # The Service's conversation took one slot of one pod; fill the other pod (2 slots).
    assert real.real_node_netns is not None
    per_pod = harness.get_pool(cluster.api, APPS, POOL)["status"]["plan"]["sessionsPerPod"]
    target = min(_pods(cluster), key=lambda p: _active(str(real.real_node_netns), p))
    assert _active(str(real.real_node_netns), target) == 0
    for _ in range(per_pod):
        callers.call(target.status.pod_ip)
    wait_until(
        lambda: not harness.is_ready(client.CoreV1Api(cluster.api).read_namespaced_pod(
            target.metadata.name, APPS)),
        what=f"{target.metadata.name} to turn unready when full",
    )  # fmt: skip
    wait_until(
        lambda: target.status.pod_ip not in _endpoint_addresses(cluster),
        what="the full pod to leave the Service",
    )


def _active(netns_name: str, pod: client.V1Pod) -> int:
    """Live sessions the pod's runtime reports (asked from inside the node's namespace)."""
    url = f"http://{pod.status.pod_ip}:{constants.RUNTIME_PORT}{constants.PATH_STATUS}"
    with netns.inside(netns_name), urllib.request.urlopen(url, timeout=5) as response:
        return int(json.loads(response.read())["sessions"]["active"])


def test_interruption_drill_on_the_real_node(
    cluster: fleet.Cluster, real: manager.Sandbox, callers: fleet.Callers
) -> None:
    core = client.CoreV1Api(cluster.api)
    old = {p.metadata.name: p for p in _pods(cluster)}
    ended: dict[str, Any] = {}
    deadlines: dict[str, Any] = {}
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch_endings, args=(cluster, set(old), ended, deadlines, stop), daemon=True
    )
    watcher.start()
    # Where the replacements can go: a spot node of kwok's (the real node is going away).
    for manifest in nodes.manifests(STANDBY_NODES, real.pod_network):
        core.create_node(manifest)
    started = time.monotonic()
    core.patch_node(
        node.NODE_NAME,
        {"spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}},
    )
    try:
        # Every live conversation (through the Service and on the full pod) hears the drain.
        wait_until(
            lambda: callers.notices and all(ip in callers.notices for ip in callers.connected),
            what="drain notices on every live conversation",
        )
        notice = max(callers.notices.values()) - started
        wait_until(
            lambda: len([p for p in fleet.serving_pods(cluster, APPS, POOL)
                         if p.metadata.name not in old]) >= 1,
            timeout=60, what="a replacement serving",
        )  # fmt: skip
        replaced = time.monotonic() - started
        # The callers hung up on the notice: the emptied old pods are deleted, their preStop
        # hook runs, and the runtime exits 0 within the grace period.
        wait_until(lambda: set(ended) == set(old), timeout=120, what="the old pods to end")
    finally:
        stop.set()
        core.patch_node(node.NODE_NAME, {"spec": {"taints": None}})
    print(f"\nreal node drill: drain notice {notice * 1000:.0f} ms, replacement {replaced:.1f} s")
    for name, terminated in ended.items():
        assert terminated.exit_code == 0, (name, terminated)
        # The pod's deletionTimestamp is its deletion plus its grace period: the kubelet
        # would have killed it then. It exited on its own before.
        assert terminated.finished_at <= deadlines[name], (name, terminated, deadlines[name])
    grace = {p.spec.termination_grace_period_seconds for p in old.values()}
    assert grace == {DRAIN_SECONDS + GRACE_MARGIN_SECONDS}
    assert notice < 2.0
    hooks = core.list_namespaced_event(APPS, field_selector="reason=FailedPreStopHook").items
    assert hooks == [], [e.message for e in hooks]


def _watch_endings(
    cluster: fleet.Cluster,
    names: set[str],
    ended: dict[str, Any],
    deadlines: dict[str, Any],
    stop: threading.Event,
) -> None:
    """Record each old pod's deletion deadline and its container's final state."""
    core = client.CoreV1Api(cluster.api)
    while not stop.is_set():
        stream = watch.Watch().stream(core.list_namespaced_pod, APPS, timeout_seconds=5)
        for event in stream:
            pod = event["object"]
            name = pod.metadata.name
            if name not in names:
                continue
            if pod.metadata.deletion_timestamp and name not in deadlines:
                deadlines[name] = pod.metadata.deletion_timestamp
            for status in pod.status.container_statuses or []:
                if status.state and status.state.terminated and name in deadlines:
                    ended[name] = status.state.terminated
            if stop.is_set():
                return
