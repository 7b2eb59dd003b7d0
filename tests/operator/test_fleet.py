"""The fleet on in-memory fakes of the API server and the runtimes (the unit tier of the
reconcile, as KubeRay's fake-client tests are): what a pass writes, what a second pass does
not, a node reaction, API trouble logged once per change, and nothing kept for a pool once
it is gone, over a thousand pools."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.operator.fakes import FakeKube, FakeRuntimes
from voicefleet import catalog, constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator import metrics
from voicefleet.operator.config import OperatorConfig
from voicefleet.operator.fleet import Fleet
from voicefleet.operator.kube import KubeError
from voicefleet.operator.planner import plan
from voicefleet.operator.reconcile import TRIGGER_CREATE, TRIGGER_TIMER

NS = "voice"
SPEC: dict[str, Any] = {"sessions": {"target": 100}}
H100 = {
    constants.NODE_LABEL_GPU_PRODUCT: "NVIDIA-H100-80GB-HBM3",
    constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE: constants.CapacityType.ON_DEMAND,
}


async def fleet_on(kube: FakeKube, runtimes: FakeRuntimes) -> Fleet:
    fleet = Fleet(
        kube,
        runtimes,
        OperatorConfig(all_namespaces=True),
        b"key",
        kube.pool_bodies(),
        kube.pods_by_node(),
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
    assert kinds == {"Pod", "Secret", "Service", "PodDisruptionBudget", constants.KIND}
    run_all(kube, runtimes)
    for _ in range(2):  # the first polls nothing yet (its pods were pending last time)
        await fleet.reconcile(kube.objects[(constants.KIND, NS, "support")], trigger=TRIGGER_TIMER)
    stored = kube.objects[(constants.KIND, NS, "support")]
    assert stored["status"]["readyReplicas"] == want.replicas
    writes = len(kube.writes)
    await fleet.reconcile(stored, trigger=TRIGGER_TIMER)
    assert kube.writes[writes:] == []
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
