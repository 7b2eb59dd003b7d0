"""Pool deletion: no finalizer, so a pool is gone within seconds with or without the
operator; its pods go within seconds too, without waiting for the garbage collector; a pass
that read the pool before it was deleted makes no pod for it; and pools that an older
operator left with its finalizer are released when this one starts (kopf removes a
finalizer that no handler needs any more)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client

from tests.fixtures.sandbox import Apply, Cluster, wait_until
from tests.operator import kit
from tests.operator.conftest import Operator
from voicefleet import constants
from voicefleet.operator.config import OperatorConfig
from voicefleet.operator.fleet import Fleet
from voicefleet.operator.kube import Kube, load_credentials
from voicefleet.operator.reconcile import TRIGGER_POD
from voicefleet.operator.runtime_client import RuntimeClient
from voicefleet.operator.token_key import load_or_create_key
from voicefleet.testing.kube_admin import OPERATOR_NAMESPACE, service_account_kubeconfig

pytestmark = pytest.mark.sandbox

DELETE_SECONDS = 10.0
# A finalizer of the test's own: keeps a pod Terminating for as long as the test needs.
HOLD = "test.voicefleet.dev/hold"


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


@contextmanager
def _frozen(sandbox: Cluster, process: str) -> Iterator[None]:
    """One of the sandbox's processes stopped (SIGSTOP) for the block."""
    if sandbox.sandbox is None:
        pytest.skip(f"needs the sandbox's own {process}")
    (found,) = [p for p in sandbox.sandbox.processes if p.name == process]
    os.kill(found.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(found.pid, signal.SIGCONT)


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

    with _frozen(sandbox, "kube-controller-manager"):
        _delete(kube_api, namespace, "swept")
        took = kit.elapsed_until(terminating, DELETE_SECONDS)
    assert took < DELETE_SECONDS, f"{len(pods)} pods"


@pytest.mark.parametrize("its_pod", ["terminating", "gone"])
async def test_a_pass_that_read_the_pool_before_its_deletion_makes_no_pod_for_it(  # noqa: PLR0917
    its_pod: str,
    live_operator: Operator,
    sandbox: Cluster,
    kube_api: client.ApiClient,
    apply: Apply,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The chaos run's 50 pools deleted at once: two of them had a second runtime pod. A
    pass runs on the body it read before it started (kopf's index, a poke, a tick); the
    pool was deleted meanwhile and its pod with it (by the operator, or by the garbage
    collector before the operator's watch showed the deletion), so the pass listed the pod
    terminating, or no pod at all, and made a replacement owned by the deleted pool (which
    the garbage collector removed again). Here a pass of the operator's code, as its
    ServiceAccount, runs on the pool as read before its deletion, once the operator deleted
    the pod. The scheduler is frozen, so the pod stays unbound and out of kwok's hands (kwok
    removes a bound pod's finalizers): a finalizer of the test's keeps it Terminating, or
    without one it is gone at once. The controller manager is frozen too, so a pod made by
    mistake stays to be seen."""
    # One pod, as each of the chaos run's small pools has.
    spec = {"sessions": {"target": 10}, "capacity": {"strategy": "on-demand"}}
    core = client.CoreV1Api(kube_api)
    kubeconfig = service_account_kubeconfig(sandbox.kubeconfig, kube_api, tmp_path / "kubeconfig")
    kube = Kube(load_credentials(str(kubeconfig)))
    fleet = Fleet(
        kube,
        RuntimeClient(1.0, constants.RUNTIME_PORT),
        OperatorConfig(all_namespaces=True),
        await load_or_create_key(kube, OPERATOR_NAMESPACE),
        {},
        {},
    )

    def deleted() -> bool:
        left = kit.pool_pods(kube_api, namespace, "late", live=False)
        if its_pod == "gone":
            return not left
        return [p.metadata.deletion_timestamp is not None for p in left] == [True]

    with _frozen(sandbox, "kube-scheduler"):
        kit.make_pool(apply, "late", **spec)
        (pod,) = wait_until(
            lambda: kit.pool_pods(kube_api, namespace, "late"), what="the pool's pod"
        )
        assert kit.planned(**spec).replicas == 1
        read_before = kit.get_pool(kube_api, namespace, "late")
        if its_pod == "terminating":
            core.patch_namespaced_pod(
                pod.metadata.name, namespace, {"metadata": {"finalizers": [HOLD]}}
            )
        try:
            await fleet.start()
            with _frozen(sandbox, "kube-controller-manager"):
                _delete(kube_api, namespace, "late")
                wait_until(deleted, timeout=DELETE_SECONDS, what="the operator to delete the pod")
                await fleet.reconcile(read_before, trigger=TRIGGER_POD, poll=False)
                left = kit.pool_pods(kube_api, namespace, "late", live=False)
        finally:
            await fleet.close()
            if its_pod == "terminating":
                core.patch_namespaced_pod(
                    pod.metadata.name, namespace, {"metadata": {"finalizers": None}}
                )
    kept = [pod.metadata.uid] if its_pod == "terminating" else []
    made = [f"{p.metadata.name} ({p.metadata.uid})" for p in left if p.metadata.uid not in kept]
    assert not made, f"pods made for a deleted pool (its own was {pod.metadata.uid})"


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
