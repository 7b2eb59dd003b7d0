"""The fleet on in-memory fakes of the API server and the runtimes (the unit tier of the
reconcile, as KubeRay's fake-client tests are): what a pass writes, what a second pass does
not, a node reaction, API trouble logged once per change, and nothing kept for a pool once
it is gone, over a thousand pools."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.operator.fakes import FakeGateways, FakeKube, FakeRuntimes
from voicefleet import catalog, constants
from voicefleet.api.gateway import GatewayStatus
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator import builders, metrics
from voicefleet.operator.config import OperatorConfig
from voicefleet.operator.fleet import Fleet
from voicefleet.operator.kube import KubeError
from voicefleet.operator.planner import plan
from voicefleet.operator.reconcile import TRIGGER_CREATE, TRIGGER_POD, TRIGGER_SPEC, TRIGGER_TIMER

NS = "voice"
SPEC: dict[str, Any] = {"sessions": {"target": 100}}
H100 = {
    constants.NODE_LABEL_GPU_PRODUCT: "NVIDIA-H100-80GB-HBM3",
    constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE: constants.CapacityType.ON_DEMAND,
}


async def fleet_on(
    kube: FakeKube, runtimes: FakeRuntimes, gateways: FakeGateways | None = None
) -> Fleet:
    fleet = Fleet(
        kube,
        runtimes,
        OperatorConfig(all_namespaces=True),
        b"key",
        kube.pool_bodies(),
        kube.pods_by_node(),
        gateways or FakeGateways(),
    )
    await fleet.start()
    return fleet


def run_all(kube: FakeKube, runtimes: FakeRuntimes, node: str = "n0") -> None:
    """Every pending pod scheduled, running a runtime that answers with no session."""
    for pod in kube.pods():
        if pod["status"].get("phase") == "Pending":
            meta = pod["metadata"]
            runtimes.active[kube.run_pod(meta["namespace"], meta["name"], node)] = 0


async def test_a_pass_makes_the_pools_objects_and_a_second_pass_writes_nothing() -> None:
    kube, runtimes = FakeKube(), FakeRuntimes()
    kube.node("n0", H100)
    fleet = await fleet_on(kube, runtimes)
    body = kube.pool(NS, "support", SPEC)
    await fleet.reconcile(body, trigger=TRIGGER_CREATE)
    want = plan(VoiceAgentPoolSpec.model_validate(SPEC), catalog.builtin())
    assert len(kube.pods(NS)) == want.replicas
    kinds = {k for k, ns, _ in kube.objects if ns == NS}
    assert kinds == {
        "Pod",
        "Secret",
        "Service",
        "PodDisruptionBudget",
        "Deployment",  # the gateway
        constants.KIND,
    }
    run_all(kube, runtimes)
    for _ in range(2):  # the first polls nothing yet (its pods were pending last time)
        await fleet.reconcile(kube.objects[(constants.KIND, NS, "support")], trigger=TRIGGER_TIMER)
    stored = kube.objects[(constants.KIND, NS, "support")]
    assert stored["status"]["readyReplicas"] == want.replicas
    writes = len(kube.writes)
    await fleet.reconcile(stored, trigger=TRIGGER_TIMER)
    assert kube.writes[writes:] == []
    await fleet.close()


def gateway_pod(kube: FakeKube, name: str, pool: str) -> None:
    """A replica of the pool's gateway, as its Deployment's ReplicaSet would make it."""
    kube.objects[("Pod", NS, name)] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "labels": builders.gateway_selector(builders.PoolRef(pool, NS, "")),
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": f"{pool}-gateway-5d9c", "uid": "rs"}
            ],
        },
        "spec": {},
        "status": {"phase": "Pending"},
    }


async def test_the_gateway_is_told_the_pools_pods_and_its_counts_reach_the_status() -> None:
    kube, runtimes, gateways = FakeKube(), FakeRuntimes(), FakeGateways()
    kube.node("n0", H100)
    fleet = await fleet_on(kube, runtimes, gateways)
    body = kube.pool(NS, "support", SPEC)
    await fleet.reconcile(body, trigger=TRIGGER_CREATE)
    service = kube.objects[("Service", NS, "support")]
    assert service["spec"]["selector"][constants.LABEL_COMPONENT] == constants.COMPONENT_GATEWAY
    run_all(kube, runtimes)
    for name in ("support-gateway-5d9c-a", "support-gateway-5d9c-b"):
        gateway_pod(kube, name, "support")
        ip = kube.run_pod(NS, name, "n0")
        gateways.answering[ip] = GatewayStatus.model_validate(
            {"ready": True, "draining": False, "active": 3, "queue": {"length": 0, "max": 8,
             "waitSeconds": 30}, "backends": [], "moved": 2, "cut": {"pod_lost": 1}}
        )  # fmt: skip
    for _ in range(2):  # the first pass sees the replicas, the next poll tells them
        await fleet.reconcile(kube.objects[(constants.KIND, NS, "support")], trigger=TRIGGER_TIMER)
    runtime_urls = sorted(
        f"http://{p['status']['podIP']}:{constants.RUNTIME_PORT}"
        for p in kube.pods(NS)
        if p["metadata"]["labels"].get(constants.LABEL_COMPONENT) == constants.COMPONENT_RUNTIME
    )
    token = builders.pool_token(b"key", builders.PoolRef.from_body(body))
    assert {(ip, t) for ip, t, _ in gateways.pushes} == {(ip, token) for ip in gateways.answering}
    assert all(backends == runtime_urls for _, _, backends in gateways.pushes)
    await fleet.reconcile(kube.objects[(constants.KIND, NS, "support")], trigger=TRIGGER_TIMER)
    stored = kube.objects[(constants.KIND, NS, "support")]["status"]
    assert stored["gateway"] == {
        "replicas": 2, "readyReplicas": 2, "moved": 4, "cut": {"pod_lost": 2}
    }  # fmt: skip
    # The runtime pod counts never include a gateway replica.
    want = plan(VoiceAgentPoolSpec.model_validate(SPEC), catalog.builtin())
    assert stored["replicas"] == want.replicas

    # Turned off: the gateway's Deployment and PDB go, callers reach the runtime pods again.
    pool = kube.objects[(constants.KIND, NS, "support")]
    pool["spec"] = {**SPEC, "gateway": {"enabled": False}}
    pool["metadata"]["generation"] = 2
    await fleet.reconcile(pool, trigger=TRIGGER_SPEC)
    assert ("Deployment", NS, "support-gateway") not in kube.objects
    assert ("PodDisruptionBudget", NS, "support-gateway") not in kube.objects
    assert ("PodDisruptionBudget", NS, "support") in kube.objects
    service = kube.objects[("Service", NS, "support")]
    assert service["spec"]["selector"][constants.LABEL_COMPONENT] == constants.COMPONENT_RUNTIME
    assert "gateway" not in kube.objects[(constants.KIND, NS, "support")]["status"]
    await fleet.close()


async def test_a_node_signal_drains_its_pods_and_replaces_them_in_one_pass() -> None:
    kube, runtimes = FakeKube(), FakeRuntimes()
    kube.node("n0", H100)
    kube.node("n1", H100)
    fleet = await fleet_on(kube, runtimes)
    body = kube.pool(NS, "support", SPEC)
    await fleet.reconcile(body, trigger=TRIGGER_CREATE)
    run_all(kube, runtimes, node="n1")
    before = {p["metadata"]["name"] for p in kube.pods(NS)}
    node = kube.objects[("Node", "", "n1")]
    node["spec"]["unschedulable"] = True
    await fleet.on_node("MODIFIED", node)
    pods = kube.pods(NS)
    drained = {
        p["metadata"]["name"]
        for p in pods
        if constants.ANNOTATION_DRAINING in (p["metadata"].get("annotations") or {})
    }
    assert drained == before
    assert len(pods) == 2 * len(before)  # a replacement each, in the same pass
    assert len(runtimes.drains) == len(before)
    for pod in pods:
        if pod["metadata"]["name"] in drained:
            assert pod["metadata"]["labels"][constants.LABEL_SERVING] == constants.SERVING_NO
    await fleet.close()


@pytest.mark.parametrize("since", ["deleted", "made again"])
async def test_a_pass_on_a_pool_read_before_its_deletion_makes_no_pod(since: str) -> None:
    """A pass runs on the body it read before it started; the pool was deleted meanwhile
    (and perhaps made again under its name) and its pods with it: the pass must not
    replace them with pods owned by the deleted pool (the chaos run's 50 pools deleted at
    once had two such pods)."""
    kube, runtimes = FakeKube(), FakeRuntimes()
    kube.node("n0", H100)
    fleet = await fleet_on(kube, runtimes)
    read_before = kube.pool(NS, "brief", SPEC)
    await fleet.reconcile(read_before, trigger=TRIGGER_CREATE)
    assert kube.pods(NS)
    kube.drop((constants.KIND, NS, "brief"))
    fleet.forget(NS, "brief")
    await fleet.remove_pods(read_before)  # as the operator does when its watch shows it
    assert not kube.pods(NS)
    if since == "made again":
        kube.pool(NS, "brief", SPEC)
    await fleet.reconcile(read_before, trigger=TRIGGER_POD, poll=False)
    deleted = builders.PoolRef.from_body(read_before)
    assert not [p["metadata"]["name"] for p in kube.pods(NS) if builders.owned_by(p, deleted)]


async def test_api_trouble_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, runtimes = FakeKube(), FakeRuntimes()
    kube.node("n0", H100)
    fleet = await fleet_on(kube, runtimes)
    body = kube.pool(NS, "support", SPEC)
    await fleet.reconcile(body, trigger=TRIGGER_CREATE)
    kube.unreachable = True
    caplog.set_level(logging.INFO, logger="voicefleet.operator.fleet")
    for _ in range(5):
        with pytest.raises(KubeError):
            await fleet.reconcile(body, trigger=TRIGGER_TIMER)
    kube.unreachable = False
    await fleet.reconcile(body, trigger=TRIGGER_TIMER)
    await fleet.reconcile(body, trigger=TRIGGER_TIMER)
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "reconcile failed" in m]) == 1
    assert len([m for m in lines if "work again" in m]) == 1
    await fleet.close()


async def test_a_thousand_pools_made_and_deleted_leave_nothing_behind() -> None:
    kube, runtimes = FakeKube(), FakeRuntimes()
    kube.node("n0", H100)
    fleet = await fleet_on(kube, runtimes)
    spec: dict[str, Any] = {"sessions": {"target": 10}}
    bodies = [kube.pool(f"ns{i % 7}", f"pool-{i}", spec) for i in range(1000)]
    await asyncio.gather(*(fleet.reconcile(b, trigger=TRIGGER_CREATE) for b in bodies))
    run_all(kube, runtimes)
    for pod in kube.pods():
        fleet.pod_changed("MODIFIED", pod)  # as kopf's pod watch would
    await asyncio.gather(*(fleet.reconcile(b, trigger=TRIGGER_TIMER) for b in bodies))
    assert len(fleet.kept_pools()) == 1000

    for body in bodies:
        meta = body["metadata"]
        kube.drop((constants.KIND, meta["namespace"], meta["name"]))
        fleet.forget(meta["namespace"], meta["name"])
        await fleet.remove_pods(body)
    await fleet.background.wait_idle()  # the pokes of the pod events above find no pool
    assert fleet.kept_pools() == set()
    assert kube.pods() == []
    for gauge in (metrics.PODS, metrics.POOL_REPLICAS, metrics.POOL_COST_PER_SESSION_HOUR):
        left = {
            s.labels["pool"]
            for family in gauge.collect()
            for s in family.samples
            if s.labels.get("pool", "").startswith("pool-")
        }
        assert left == set(), gauge
    await fleet.close()
