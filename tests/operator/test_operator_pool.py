"""The operator against the sandbox: a pool's objects, status, scale, bad input, restarts,
RBAC and deletion. The operator runs as its own ServiceAccount (see conftest)."""

from __future__ import annotations

import signal

import pytest
from kubernetes import client

from tests.fixtures.sandbox import Apply, Cluster, wait_until
from tests.operator import kit
from tests.operator.conftest import OPERATOR_NAMESPACE, Operator
from voicefleet import constants
from voicefleet.operator import rbac

pytestmark = pytest.mark.sandbox

COORDINATION = "coordination.k8s.io"
SPOT_FIRST = {"strategy": "spot-first", "onDemandBase": 1, "spotPercentage": 50}


def test_a_pool_gets_its_secret_services_pdb_and_pods(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    spec = {"sessions": {"target": 100}, "capacity": SPOT_FIRST}
    kit.make_pool(apply, "support", **spec)
    want = kit.planned(**spec)
    pool = kit.wait_pool_ready(kube_api, namespace, "support")
    uid = pool["metadata"]["uid"]

    core = client.CoreV1Api(kube_api)
    owned = [
        core.read_namespaced_secret("support-token", namespace),
        core.read_namespaced_service("support", namespace),
        core.read_namespaced_service("support-pods", namespace),
        client.PolicyV1Api(kube_api).read_namespaced_pod_disruption_budget("support", namespace),
        *kit.pool_pods(kube_api, namespace, "support"),
    ]
    for obj in owned:
        (owner,) = obj.metadata.owner_references
        assert (owner.kind, owner.uid, owner.controller) == (constants.KIND, uid, True)
    assert core.read_namespaced_service("support-pods", namespace).spec.cluster_ip == "None"

    pods = kit.pool_pods(kube_api, namespace, "support")
    assert len(pods) == want.replicas
    kinds = [p.metadata.labels[constants.LABEL_CAPACITY_TYPE] for p in pods]
    assert kinds.count(constants.CapacityType.SPOT) == want.spot_replicas
    nodes = {n.metadata.name: n for n in core.list_node().items}
    for pod in pods:
        node_labels = nodes[pod.spec.node_name].metadata.labels
        on_spot = node_labels[constants.NODE_LABEL_KARPENTER_CAPACITY_TYPE] == "spot"
        assert on_spot == (pod.metadata.labels[constants.LABEL_CAPACITY_TYPE] == "spot")
        container = pod.spec.containers[0]
        assert container.resources.limits[constants.RESOURCE_GPU] == "1"
        assert pod.spec.termination_grace_period_seconds == 100 + 30
        assert str(want.sessions_per_pod) in container.args

    status = pool["status"]
    assert status["observedGeneration"] == pool["metadata"]["generation"]
    assert status["plan"]["replicas"] == want.replicas
    assert status["readyReplicas"] == want.replicas
    assert status["spotReplicas"] == want.spot_replicas
    assert status["sessions"]["capacity"] == want.session_capacity
    assert status["selector"] == (
        f"{constants.LABEL_COMPONENT}=runtime,{constants.LABEL_POOL}=support"
    )


def test_kubectl_wait_and_printer_columns_show_real_values(
    live_operator: Operator,
    sandbox: Cluster,
    kube_api: client.ApiClient,
    apply: Apply,
    namespace: str,
) -> None:
    kit.make_pool(apply, "columns", sessions={"target": 40})
    waited = sandbox.run_kubectl(
        "wait", "--for=condition=Ready", "vap/columns", "-n", namespace, "--timeout=60s"
    )
    assert "condition met" in waited.stdout
    table = sandbox.run_kubectl("get", "vap", "columns", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    cells = dict(zip(header.split(), row.split(), strict=False))
    want = kit.planned(sessions={"target": 40})
    assert cells["MODEL"] == "moshi"
    assert cells["GPU"] == want.gpu
    assert cells["PODS"] == str(want.replicas)
    assert cells["READY"] == str(want.replicas)


def test_a_second_reconcile_of_an_unchanged_pool_writes_nothing(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    kit.make_pool(apply, "steady", sessions={"target": 60})
    kit.wait_pool_ready(kube_api, namespace, "steady")

    def stable() -> bool:
        pool = kit.get_pool(kube_api, namespace, "steady")
        return kit.condition(pool, constants.CONDITION_PROGRESSING).get("status") == "False"

    wait_until(stable, what="a stable pool")
    live_operator.wait_passes(2)  # the pod events of the creation have settled

    def versions() -> dict[str, str]:
        core = client.CoreV1Api(kube_api)
        objs = [
            *kit.pool_pods(kube_api, namespace, "steady"),
            core.read_namespaced_service("steady", namespace),
            core.read_namespaced_service("steady-pods", namespace),
            core.read_namespaced_secret("steady-token", namespace),
        ]
        out = {o.metadata.name: o.metadata.resource_version for o in objs}
        out["pool-status"] = str(kit.get_pool(kube_api, namespace, "steady")["status"])
        return out

    before, writes = versions(), live_operator.writes(namespace)
    # A metadata change runs the update handler: a full reconcile of an unchanged spec.
    kit.patch_pool(kube_api, namespace, "steady", {"metadata": {"labels": {"touched": "yes"}}})
    live_operator.wait_passes(3)  # three timer passes too
    assert versions() == before
    assert live_operator.writes(namespace) == writes


def test_kubectl_scale_sets_the_session_target(
    live_operator: Operator,
    sandbox: Cluster,
    kube_api: client.ApiClient,
    apply: Apply,
    namespace: str,
) -> None:
    kit.make_pool(apply, "scaled", sessions={"target": 40})
    kit.wait_pool_ready(kube_api, namespace, "scaled")
    sandbox.run_kubectl("scale", "vap/scaled", "--replicas=200", "-n", namespace)
    pool = kit.get_pool(kube_api, namespace, "scaled")
    assert pool["spec"]["sessions"]["target"] == 200
    want = kit.planned(sessions={"target": 200})
    kit.wait_running(kube_api, namespace, "scaled", want.replicas)
    pool = kit.wait_pool_ready(kube_api, namespace, "scaled")
    assert pool["status"]["sessions"]["capacity"] == want.session_capacity


def test_an_unplannable_spec_is_degraded_and_deletes_nothing(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    kit.make_pool(apply, "bad", sessions={"target": 120})
    kit.wait_pool_ready(kube_api, namespace, "bad")
    names = [p.metadata.name for p in kit.pool_pods(kube_api, namespace, "bad")]
    kit.patch_pool(
        kube_api, namespace, "bad", {"spec": {"sessions": {"target": 5000, "maxReplicas": 2}}}
    )

    def degraded() -> dict[str, str] | None:
        c = kit.condition(kit.get_pool(kube_api, namespace, "bad"), "Degraded")
        return c if c.get("reason") == constants.REASON_PLAN_INVALID else None

    found = wait_until(degraded, what="Degraded/PlanInvalid")
    assert found["status"] == "True"
    assert "maxReplicas" in found["message"]
    live_operator.wait_passes(2)
    assert [p.metadata.name for p in kit.pool_pods(kube_api, namespace, "bad")] == names
    wait_until(
        lambda: kit.events(kube_api, namespace, constants.EVENT_PLAN_INVALID),
        what="event constants.EVENT_PLAN_INVALID",
    )


def test_a_gpu_too_small_for_the_model_is_plan_invalid_with_what_to_change(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    kit.make_pool(apply, "tiny-gpu", gpu={"product": "NVIDIA-L4"})

    def degraded() -> dict[str, str] | None:
        c = kit.condition(kit.get_pool(kube_api, namespace, "tiny-gpu"), "Degraded")
        return c if c.get("reason") == constants.REASON_PLAN_INVALID else None

    assert "GPU with more memory" in wait_until(degraded, what="PlanInvalid")["message"]
    assert kit.pool_pods(kube_api, namespace, "tiny-gpu") == []


def test_gpu_auto_is_resolved_from_the_nodes_labels(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    kit.make_pool(apply, "auto", gpu={"product": "auto"}, sessions={"target": 40})
    pool = kit.wait_pool_ready(kube_api, namespace, "auto")
    assert pool["status"]["plan"]["gpu"] == "H100-80GB"
    pod = kit.pool_pods(kube_api, namespace, "auto")[0]
    terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    expr = terms.node_selector_terms[0].match_expressions[0]
    assert (expr.key, expr.values) == (constants.NODE_LABEL_GPU_PRODUCT, ["NVIDIA-H100-80GB-HBM3"])


def test_prices_come_from_the_pools_config_map(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "prices"},
            "data": {"prices.yaml": "gpus:\n  NVIDIA-H100-80GB-HBM3:\n    onDemandPerHour: 10.0\n"},
        }
    )
    kit.make_pool(
        apply,
        "priced",
        sessions={"target": 40},
        capacity={"pricing": {"configMapName": "prices"}},
    )
    pool = kit.wait_pool_ready(kube_api, namespace, "priced")
    replicas = pool["status"]["plan"]["replicas"]
    assert pool["status"]["plan"]["costPerHour"] == pytest.approx(10.0 * replicas)


def test_killed_mid_reconcile_the_restarted_operator_makes_no_duplicates(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    spec = {"sessions": {"target": 300}}
    want = kit.planned(**spec)
    kit.make_pool(apply, "crashy", **spec)
    # Kill as soon as the first pod exists: the rest of the creates are cut off.
    wait_until(lambda: kit.pool_pods(kube_api, namespace, "crashy"), timeout=30, what="a pod")
    live_operator.stop(signal.SIGKILL)
    live_operator.start()
    kit.wait_pool_ready(kube_api, namespace, "crashy")
    live_operator.wait_passes(2)
    names = [p.metadata.name for p in kit.pool_pods(kube_api, namespace, "crashy", live=False)]
    assert names == [f"crashy-{i}" for i in range(want.replicas)]


def test_deleting_the_pool_removes_everything_it_owned(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    kit.make_pool(apply, "doomed", sessions={"target": 40})
    kit.wait_pool_ready(kube_api, namespace, "doomed")
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        *kit.GROUP_VERSION, namespace, constants.PLURAL, "doomed"
    )
    core = client.CoreV1Api(kube_api)

    def all_gone() -> bool:
        label = f"{constants.LABEL_POOL}=doomed"
        return not (
            core.list_namespaced_pod(namespace, label_selector=label).items
            or core.list_namespaced_service(namespace, label_selector=label).items
            or core.list_namespaced_secret(namespace, label_selector=label).items
            or client.PolicyV1Api(kube_api)
            .list_namespaced_pod_disruption_budget(namespace, label_selector=label)
            .items
        )

    wait_until(all_gone, what="the pool's objects to be garbage-collected")


def test_the_operator_cannot_read_secrets_elsewhere_nor_write_nodes(
    operator_rbac: None, kube_api: client.ApiClient, namespace: str
) -> None:
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{rbac.SERVICE_ACCOUNT}"
    authz = client.AuthorizationV1Api(kube_api)

    def allowed(
        verb: str, resource: str, ns: str | None, name: str | None = None, group: str = ""
    ) -> bool:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb, resource=resource, namespace=ns, name=name, group=group
                ),
            )
        )
        return bool(authz.create_subject_access_review(review).status.allowed)

    for verb in ("get", "list", "watch"):
        assert not allowed(verb, "secrets", namespace)
    assert allowed("create", "secrets", namespace)
    assert allowed("get", "secrets", OPERATOR_NAMESPACE, constants.OPERATOR_KEY_SECRET)
    assert not allowed("get", "secrets", OPERATOR_NAMESPACE, "someone-elses")
    for verb in ("patch", "update", "delete", "create"):
        assert not allowed(verb, "nodes", None)
    assert allowed("watch", "nodes", None)
    assert allowed("delete", "pods", namespace)
    # The leader election Lease: its own, by name, in its own namespace; never created.
    lease = constants.OPERATOR_LEASE
    for verb in ("get", "update"):
        assert allowed(verb, "leases", OPERATOR_NAMESPACE, lease, group=COORDINATION)
        assert not allowed(verb, "leases", OPERATOR_NAMESPACE, "other", group=COORDINATION)
        assert not allowed(verb, "leases", namespace, lease, group=COORDINATION)
    assert not allowed("create", "leases", OPERATOR_NAMESPACE, group=COORDINATION)


def test_pods_that_never_get_ready_make_the_pool_degraded_without_churn(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    # A node selector no node matches: the pods never run, so never become Ready (kwok
    # marks every running pod Ready, readiness gates included).
    kit.make_pool(
        apply,
        "stuck",
        sessions={"target": 40},
        template={"spec": {"nodeSelector": {"example.com/no-such-node": "x"}}},
    )
    want = kit.planned(sessions={"target": 40}).replicas
    wait_until(lambda: len(kit.pool_pods(kube_api, namespace, "stuck")) == want, what="the pods")
    uids = {p.metadata.uid for p in kit.pool_pods(kube_api, namespace, "stuck")}

    def degraded() -> dict[str, str] | None:
        c = kit.condition(kit.get_pool(kube_api, namespace, "stuck"), "Degraded")
        return c if c.get("reason") == constants.REASON_PODS_NOT_READY else None

    found = wait_until(degraded, timeout=60, what="Degraded/PodsNotReady")
    assert "not ready after" in found["message"]
    pool = kit.get_pool(kube_api, namespace, "stuck")
    assert kit.condition(pool, "Ready")["status"] == "False"
    assert {p.metadata.uid for p in kit.pool_pods(kube_api, namespace, "stuck")} == uids
