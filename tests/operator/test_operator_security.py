"""A pool grants nothing its author does not have (issue 9, items 2, 3 and 7), with the real
operator as its own ServiceAccount: runtime pods pass Pod Security "restricted", and a pool
that reached storage without the CRD's checks gets no pod at all until it is fixed."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.sandbox import Apply, wait_until
from tests.hostile import DRAINING, HOSTILE
from tests.operator import kit
from tests.operator.conftest import Operator
from voicefleet import constants

pytestmark = pytest.mark.sandbox

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def test_runtime_pods_are_admitted_where_pod_security_is_restricted(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="weights-reader"))
    )
    kit.make_pool(apply, "plain", sessions={"target": 40})
    kit.make_pool(
        apply, "reader", sessions={"target": 40}, runtime={"serviceAccountName": "weights-reader"}
    )
    for name in ("plain", "reader"):
        kit.wait_pool_ready(kube_api, namespace, name)

    plain = kit.pool_pods(kube_api, namespace, "plain")
    assert len(plain) == kit.planned(sessions={"target": 40}).replicas
    for pod in plain:
        assert pod.spec.security_context.run_as_non_root is True
        assert pod.spec.security_context.run_as_user == constants.RUNTIME_UID
        (container,) = pod.spec.containers
        assert container.security_context.capabilities.drop == ["ALL"]
        # No ServiceAccount token: no projected kube-api-access volume, no mount.
        assert pod.spec.automount_service_account_token is False
        assert not [v for v in pod.spec.volumes or [] if v.projected is not None]
    for pod in kit.pool_pods(kube_api, namespace, "reader"):
        assert pod.spec.service_account_name == "weights-reader"
        assert [v for v in pod.spec.volumes if v.projected is not None]


def pod_writes(operator: Operator, namespace: str) -> float:
    samples = operator.metric(f"{constants.OPERATOR_METRIC_PREFIX}api_writes_total")
    return sum(v for k, v in samples.items() if 'kind="Pod"' in k and f'"{namespace}"' in k)


def reconciles(operator: Operator) -> float:
    samples = operator.metric(f"{constants.OPERATOR_METRIC_PREFIX}reconcile_duration_seconds_count")
    return sum(samples.values())


def plan_invalid(kube_api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        c = kit.condition(kit.get_pool(kube_api, namespace, name), constants.CONDITION_DEGRADED)
        return c if c.get("reason") == constants.REASON_PLAN_INVALID else None

    result: dict[str, Any] = wait_until(found, what=f"{name}: Degraded/PlanInvalid")
    return result


def test_a_pool_stored_past_the_crd_checks_gets_no_pod_until_fixed(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    # Written through the CRD as it was before the allowlist: issue 9's template (another
    # namespace, privilege, the host's namespaces and root), and item 7's drain annotation,
    # which made every pod born draining (2466 creates, 2323 deletes in 90 s).
    with kit.pre_upgrade_crd(kube_api):
        kit.make_pool(apply, "hostile", sessions={"target": 40}, template=HOSTILE)
        kit.make_pool(
            apply,
            "draining",
            sessions={"target": 40},
            template={"metadata": {"annotations": DRAINING}},
        )
    hostile = plan_invalid(kube_api, namespace, "hostile")
    assert hostile["message"].startswith("spec.template.")
    draining = plan_invalid(kube_api, namespace, "draining")
    assert draining["message"].startswith(
        'spec.template.metadata.annotations: Invalid value: "object": annotations under '
        "voicefleet.dev/"
    )

    # Three more passes of the operator over the pools, and still no pod anywhere.
    seen = reconciles(live_operator)
    wait_until(lambda: reconciles(live_operator) >= seen + 3, what="three more reconciles")
    assert pod_writes(live_operator, namespace) == 0
    assert pod_writes(live_operator, "kube-system") == 0
    ours = f"{constants.LABEL_POOL} in (hostile,draining)"
    assert client.CoreV1Api(kube_api).list_pod_for_all_namespaces(label_selector=ours).items == []

    # Fixed (a write the new CRD checks), the pool gets its pods, none of them draining.
    kit.patch_pool(kube_api, namespace, "draining", {"spec": {"template": None}})
    want = kit.planned(sessions={"target": 40}).replicas
    pods = kit.wait_running(kube_api, namespace, "draining", want)
    assert not any(kit.draining(p) for p in pods)


def test_a_pool_stored_with_a_name_nothing_can_be_named_after_is_told_and_left_alone(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    """Item 9: over-long and dotted names were accepted, got no condition, and were retried
    every 2 s forever (~470 ERROR lines)."""
    dotted, long_name = "support.en", "x" * 60
    with kit.pre_upgrade_crd(kube_api):
        for name in (dotted, long_name):
            kit.make_pool(apply, name, sessions={"target": 40})
    assert "no dots" in plan_invalid(kube_api, namespace, dotted)["message"]
    assert "at most 58 characters" in plan_invalid(kube_api, namespace, long_name)["message"]
    seen = reconciles(live_operator)
    wait_until(lambda: reconciles(live_operator) >= seen + 6, what="six more reconciles")
    writes = live_operator.metric(f"{constants.OPERATOR_METRIC_PREFIX}api_writes_total")
    kinds = {k for k, v in writes.items() if f'namespace="{namespace}"' in k and v}
    # Only the pools' status and the events that say why.
    assert all('kind="VoiceAgentPool/status"' in k or 'kind="Event"' in k for k in kinds), kinds
    assert not any("Traceback" in log.read_text() for log in live_operator.logs)
