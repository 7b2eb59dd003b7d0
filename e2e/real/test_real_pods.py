"""voicefleet on real pods: the sandbox's real node (a kubelet with containerd and runc)
runs the operator from its image, installed by helm, and a tiny pool's runtime pods from
the runtime image, in namespaces that enforce Pod Security "restricted".

In file order, on one installation: the chart's operator runs in a container and leads ->
a tiny pool (no GPU) becomes Ready with real pods whose startup, readiness and liveness
probes are the kubelet's -> a live conversation through the pool's Service (kube-proxy) and
its gateway (two replicas from the operator's image, told of the runtime pods by the
operator) -> a full pod turns unready and the gateway sends the next caller to the other
pod -> an interruption drill on the real node (every pod of the pool is on it, so the
gateway has nowhere to move a conversation and passes the pod's drain notice on):
its signal, the drain notice on the live conversations, a replacement serving elsewhere,
and the old pods' preStop hook and exit 0 within their grace period.

Needs the images (scripts/build-images.sh) and the Debian packages the real node uses
(containerd, runc, containernetworking-plugins); scripts/test.sh sees to both.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from e2e import fleet, realpods
from e2e.realpods import APPS, POOL
from tests.fixtures.sandbox import wait_until
from voicefleet import constants, image_store, images
from voicefleet.sandbox import binaries, manager, netns, node, node_host, node_images
from voicefleet.sandbox.state import Sandbox, SandboxError
from voicefleet.testing import kube_admin

pytestmark = pytest.mark.sandbox

GRACE_MARGIN_SECONDS = 30  # the operator's default --grace-margin-seconds


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    missing = node_host.missing_tools()
    if missing:
        pytest.fail(f"the real node needs {', '.join(missing)}", pytrace=False)
    built = {
        Path(oci).name
        for oci, _tag, _digest in node_images.layout_images(image_store.default_out())
    }
    if not {"operator", "runtime"} <= built:
        pytest.fail("no images: run scripts/build-images.sh --base debian", pytrace=False)
    state = tmp_path_factory.mktemp("real") / "state"
    try:
        sandbox = manager.up(state, (), log=print, tie_to_caller=True, real_node=True)
    except SandboxError as exc:
        pytest.fail(f"the real node did not start: {exc}", pytrace=False)
    try:
        yield sandbox
    finally:
        manager.down(state, log=lambda _line: None)


@pytest.fixture(scope="module")
def cluster(real: Sandbox) -> fleet.Cluster:
    tools = binaries.resolve(["kubectl", "helm"])
    api = config.new_client_from_config(config_file=str(real.kubeconfig))
    return fleet.Cluster(real.kubeconfig, str(tools["kubectl"]), str(tools["helm"]), api)


@pytest.fixture(scope="module")
def callers(real: Sandbox) -> Iterator[fleet.Callers]:
    # Pod and Service addresses exist only inside the real node's network namespace.
    live = fleet.Callers(netns_name=real.real_node_netns)
    yield live
    live.close()


def test_helm_install_runs_the_operator_from_its_image_on_the_real_node(
    cluster: fleet.Cluster,
) -> None:
    # It leads (install_operator waits for the Lease): it reached the API server through
    # the `kubernetes` Service, from inside its restricted pod.
    pod = realpods.install_operator(cluster)
    assert pod.spec.node_name == node.NODE_NAME
    (status,) = (
        client.CoreV1Api(cluster.api)
        .read_namespaced_pod(pod.metadata.name, fleet.OPERATOR_NAMESPACE)
        .status.container_statuses
    )
    assert status.ready and status.image == images.image_ref("operator")
    assert status.image_id.startswith("sha256:")  # a container of the imported image


def test_a_tiny_pool_runs_real_runtime_pods_without_a_gpu(cluster: fleet.Cluster) -> None:
    for pod in realpods.apply_pool(cluster):
        assert pod.spec.node_name == node.NODE_NAME
        (container,) = pod.spec.containers
        assert container.image == images.image_ref("runtime")
        assert constants.RESOURCE_GPU not in (container.resources.requests or {})
        assert pod.status.qos_class == "Burstable"  # CPU and memory requested
        (status,) = pod.status.container_statuses
        # The kubelet's probes passed: started (startup probe), ready (readiness probe).
        assert status.started and status.ready and status.restart_count == 0


def test_a_live_conversation_through_the_pools_service_and_gateway(
    cluster: fleet.Cluster, real: Sandbox, callers: fleet.Callers
) -> None:
    service = client.CoreV1Api(cluster.api).read_namespaced_service(POOL, APPS)
    ip = service.spec.cluster_ip
    # The Service leads to the pool's gateway (from the operator's image), which relays to
    # the runtime pods it was told of by the operator.
    gateways = realpods.gateway_pods(cluster)
    assert len(gateways) == 2
    for pod in gateways:
        (container,) = pod.spec.containers
        assert container.image == images.image_ref("operator")
        assert container.command == ["voicefleet", "gateway"]
    wait_until(
        lambda: realpods.endpoint_addresses(cluster) == {p.status.pod_ip for p in gateways},
        what="both gateway replicas behind the Service",
    )
    callers.call(ip)
    assert callers.open[ip] == 1
    inside = str(real.real_node_netns)
    assert sorted(_active(inside, p) for p in realpods.pods(cluster)) == [0, 1]


def _active(netns_name: str, pod: client.V1Pod) -> int:
    """Live sessions the pod's runtime reports (asked from inside the node's namespace)."""
    url = f"http://{pod.status.pod_ip}:{constants.RUNTIME_PORT}{constants.PATH_STATUS}"
    with netns.inside(netns_name), urllib.request.urlopen(url, timeout=5) as response:
        return int(json.loads(response.read())["sessions"]["active"])


def test_a_full_pod_turns_unready_and_leaves_the_service(
    cluster: fleet.Cluster, real: Sandbox, callers: fleet.Callers
) -> None:
    # The Service's conversation took a slot of one pod; fill the other one.
    inside = str(real.real_node_netns)
    per_pod = kube_admin.get_pool(cluster.api, APPS, POOL)["status"]["plan"]["sessionsPerPod"]
    target = min(realpods.pods(cluster), key=lambda p: _active(inside, p))
    assert _active(inside, target) == 0
    for _ in range(per_pod):
        callers.call(target.status.pod_ip)
    core = client.CoreV1Api(cluster.api)
    wait_until(
        lambda: not kube_admin.is_ready(core.read_namespaced_pod(target.metadata.name, APPS)),
        what=f"{target.metadata.name} to turn unready when full",
    )
    # The next caller of the Service gets the slot left on the other pod, not a refusal.
    (other,) = [p for p in realpods.pods(cluster) if p.metadata.name != target.metadata.name]
    service_ip = client.CoreV1Api(cluster.api).read_namespaced_service(POOL, APPS)
    callers.call(service_ip.spec.cluster_ip)
    assert _active(inside, other) == 2


def test_interruption_drill_on_the_real_node(
    cluster: fleet.Cluster, real: Sandbox, callers: fleet.Callers
) -> None:
    drill = realpods.interrupt(cluster, real, callers)
    print(
        f"\nreal node drill: drain notice {drill.notice_seconds * 1000:.0f} ms, "
        f"replacement serving {drill.replaced_seconds:.1f} s"
    )
    assert drill.notice_seconds < 2.0
    assert drill.grace_seconds == {realpods.DRAIN_SECONDS + GRACE_MARGIN_SECONDS}
    assert set(drill.ended) == set(drill.deadlines)
    for name, terminated in drill.ended.items():
        assert terminated.exit_code == 0, (name, terminated)
        # The deletionTimestamp is the deletion plus the grace period: the kubelet would
        # have killed the container then. It exited on its own before.
        assert terminated.finished_at <= drill.deadlines[name], (name, terminated)
    # The preStop hook ran and succeeded (the kubelet reports a failed one as an event).
    events = client.CoreV1Api(cluster.api).list_namespaced_event(APPS)
    assert [e.message for e in events.items if e.reason == "FailedPreStopHook"] == []
