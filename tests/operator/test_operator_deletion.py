"""Pool deletion: no finalizer, so a pool is gone within seconds with or without the
operator; its pods go within seconds too, without waiting for the garbage collector; and
pools that an older operator left with its finalizer are released when this one starts
(kopf removes a finalizer that no handler needs any more)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from kubernetes import client

from tests.fixtures.sandbox import Apply, Cluster, wait_until
from tests.operator import kit
from tests.operator.conftest import Operator
from voicefleet import constants

pytestmark = pytest.mark.sandbox

DELETE_SECONDS = 10.0


def _exists(kube_api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        kit.get_pool(kube_api, namespace, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _delete(kube_api: client.ApiClient, namespace: str, name: str) -> None:
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        *kit.GROUP_VERSION, namespace, constants.PLURAL, name
    )


def _seconds_until_gone(kube_api: client.ApiClient, namespace: str, name: str) -> float:
    return kit.elapsed_until(lambda: not _exists(kube_api, namespace, name), DELETE_SECONDS)


def _steady(operator: Operator, kube_api: client.ApiClient, namespace: str, name: str) -> None:
    """Ready, and ticking: three more periodic reconciles have run."""
    kit.wait_pool_ready(kube_api, namespace, name)
    done = operator.reconciles()
    wait_until(lambda: operator.reconciles() >= done + 3, what="three more reconciles")


def test_a_pool_carries_no_finalizer_and_is_gone_within_seconds(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    kit.make_pool(apply, "brief", sessions={"target": 40})
    _steady(live_operator, kube_api, namespace, "brief")
    assert not kit.get_pool(kube_api, namespace, "brief")["metadata"].get("finalizers")
    pools = live_operator.metric(f"{constants.OPERATOR_METRIC_PREFIX}pools")[""]
    _delete(kube_api, namespace, "brief")
    assert _seconds_until_gone(kube_api, namespace, "brief") < DELETE_SECONDS
    # The operator saw it go and forgot it (its ticker stopped with it).
    wait_until(
        lambda: live_operator.metric(f"{constants.OPERATOR_METRIC_PREFIX}pools")[""] == pools - 1,
        what="the operator to forget the pool",
    )


def test_a_deleted_pools_pods_are_deleted_at_once_without_the_garbage_collector(
    live_operator: Operator,
    sandbox: Cluster,
    kube_api: client.ApiClient,
    apply: Apply,
    namespace: str,
) -> None:
    """The chaos run deleted 50 pools at once: the last pools' pods waited up to 12 s for
    the garbage collector, which works behind the controller manager's client rate limit
    (20 requests/s by default, three per pod). With the controller manager frozen, the
    operator alone deletes them."""
    if sandbox.sandbox is None:
        pytest.skip("needs the sandbox's own controller manager")
    (manager,) = [p for p in sandbox.sandbox.processes if p.name == "kube-controller-manager"]
    spec = {"sessions": {"target": 80}}
    kit.make_pool(apply, "swept", **spec)
    pods = kit.wait_running(kube_api, namespace, "swept", kit.planned(**spec).replicas)
    core = client.CoreV1Api(kube_api)

    def terminating() -> bool:
        # Its runtime pods: the gateway's belong to a ReplicaSet, which the stopped
        # controller manager's garbage collector removes once it runs again.
        runtime = f"{constants.LABEL_POOL}=swept,{constants.LABEL_COMPONENT}=runtime"
        left = core.list_namespaced_pod(namespace, label_selector=runtime)
        return all(p.metadata.deletion_timestamp is not None for p in left.items)

    os.kill(manager.pid, signal.SIGSTOP)
    try:
        _delete(kube_api, namespace, "swept")
        took = kit.elapsed_until(terminating, DELETE_SECONDS)
    finally:
        os.kill(manager.pid, signal.SIGCONT)
    assert took < DELETE_SECONDS, f"{len(pods)} pods"


def test_with_the_operator_stopped_a_pool_is_still_gone_within_seconds(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    kit.make_pool(apply, "orphan", sessions={"target": 40})
    _steady(live_operator, kube_api, namespace, "orphan")
    live_operator.stop()  # as during a `helm uninstall`, or an outage of the operator
    _delete(kube_api, namespace, "orphan")
    assert _seconds_until_gone(kube_api, namespace, "orphan") < DELETE_SECONDS


def test_pools_an_older_operator_left_with_its_finalizer_are_released_on_start(
    live_operator: Operator, kube_api: client.ApiClient, apply: Apply, namespace: str
) -> None:
    for name in ("kept", "stuck"):
        kit.make_pool(apply, name, sessions={"target": 40})
        kit.wait_pool_ready(kube_api, namespace, name)
    live_operator.stop()
    # What the previous version left: its finalizer on every pool, one of them deleted
    # while no operator ran, and so stuck.
    for name in ("kept", "stuck"):
        kit.patch_pool(
            kube_api, namespace, name, {"metadata": {"finalizers": [constants.FINALIZER]}}
        )
    _delete(kube_api, namespace, "stuck")
    assert kit.get_pool(kube_api, namespace, "stuck")["metadata"]["deletionTimestamp"]

    started = time.monotonic()
    live_operator.start()
    assert _seconds_until_gone(kube_api, namespace, "stuck") < DELETE_SECONDS
    wait_until(
        lambda: not kit.get_pool(kube_api, namespace, "kept")["metadata"].get("finalizers"),
        timeout=DELETE_SECONDS - (time.monotonic() - started),
        what="the old finalizer to be removed from a live pool",
    )
    _steady(live_operator, kube_api, namespace, "kept")  # and it is reconciled as before
    _delete(kube_api, namespace, "kept")
    assert _seconds_until_gone(kube_api, namespace, "kept") < DELETE_SECONDS
