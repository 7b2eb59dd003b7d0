"""High availability, with the chart's own arguments: two operator processes, started as the
chart's two replicas would run (``helm template``'s Deployment, ``$(POD_NAME)`` expanded),
elect one leader; it alone acts; a SIGKILLed leader is replaced once its lease has run out, a
SIGTERMed one hands over at once; a leader that loses its lease exits at once."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from tests.fixtures.sandbox import Apply, wait_until
from tests.operator import kit
from tests.operator.conftest import OPERATOR_NAMESPACE, Operator
from voicefleet import constants
from voicefleet.operator.process import EXIT_LEASE_LOST
from voicefleet.testing import kube_admin, operators, polling

pytestmark = pytest.mark.sandbox

POOL = "ha"
LEASE = constants.OPERATOR_LEASE


@dataclass(frozen=True)
class Failover:
    how: str
    lease_seconds: float  # signal -> the standby holds the lease
    reconciled_seconds: float  # signal -> the pool change it made meanwhile is carried out


def _flag(args: list[str], name: str) -> float:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    return float(value)


def _failover(
    kube_api: client.ApiClient,
    namespace: str,
    old: Operator,
    new: Operator,
    *,
    sig: int,
    target: int,
) -> Failover:
    """Stop ``old`` with ``sig``, change the pool at once, and time ``new`` taking over."""
    want = kit.planned(sessions={"target": target}).replicas
    assert len(kit.pool_pods(kube_api, namespace, POOL)) < want
    stopped = time.monotonic()
    old.stop(sig)
    kit.patch_pool(kube_api, namespace, POOL, {"spec": {"sessions": {"target": target}}})
    polling.wait_for(new.leading, 90, "the standby to take the lease")
    leading = time.monotonic() - stopped
    polling.wait_for(
        lambda: len(kit.pool_pods(kube_api, namespace, POOL)) == want, 90, f"{want} pods"
    )
    return Failover(signal.Signals(sig).name, leading, time.monotonic() - stopped)


def _more_reconciles(operator: Operator, count: int) -> None:
    done = operator.reconciles()
    wait_until(lambda: operator.reconciles() >= done + count, what=f"{count} more reconciles")


def test_two_replicas_elect_one_that_acts_and_a_standby_takes_over(  # noqa: PLR0917
    live_operator: Operator,
    kube_api: client.ApiClient,
    apply: Apply,
    namespace: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deployment = operators.chart_deployment()
    replicas = operators.chart_replicas(live_operator.kubeconfig, tmp_path, deployment)
    assert len(replicas.operators) == 2  # the chart's default
    args = replicas.operators[0].args
    duration = _flag(args, "--leader-elect-lease-duration")
    retry = _flag(args, "--leader-elect-retry-period")
    # The session's operator would be a third candidate for the same Lease; it releases the
    # lease on SIGTERM, and the next test's live_operator starts it again.
    live_operator.stop()
    replicas.start()
    try:
        leader = replicas.leader()
        (standby,) = replicas.standbys()
        kit.make_pool(apply, POOL, sessions={"target": 40})
        kit.wait_pool_ready(kube_api, namespace, POOL)
        _more_reconciles(leader, 3)
        # Exactly one acts: the standby watched nothing, reconciled nothing, wrote nothing.
        assert standby.reconciles() == 0
        assert standby.writes(namespace) == 0 < leader.writes(namespace)
        assert not standby.leading() and standby.healthy()  # alive while it waits

        killed = _failover(kube_api, namespace, leader, standby, sig=signal.SIGKILL, target=200)
        leader.start()  # the kubelet's restart: back as a standby, the lease is taken
        _more_reconciles(standby, 3)
        assert leader.reconciles() == 0 and not leader.leading()

        terminated = _failover(kube_api, namespace, standby, leader, sig=signal.SIGTERM, target=300)
        _more_reconciles(leader, 3)
        assert not replicas.tracebacks(), replicas.tracebacks()
    finally:
        replicas.stop()
    with capsys.disabled():
        print(f"\n\nfailover, 2 replicas with the chart's arguments (lease {duration:g} s)")
        print(f"{'STOPPED WITH':<14}{'STANDBY LEADS':>15}{'POOL CHANGE DONE':>18}")
        for row in (killed, terminated):
            print(f"{row.how:<14}{row.lease_seconds:>13.1f} s{row.reconciled_seconds:>16.1f} s")

    assert standby.exit_codes == [0]  # a graceful stop (it released the lease)
    # A SIGKILLed leader's lease runs out one lease after its last renewal (made up to a
    # retry period before the kill), on the standby's clock, which saw that renewal up to a
    # retry later; plus slack for this loaded machine.
    assert duration - retry - 1 <= killed.lease_seconds < duration + 2 * retry + 5
    assert killed.reconciled_seconds < killed.lease_seconds + 15
    # A SIGTERMed leader releases it: the standby takes it on its next try.
    assert terminated.lease_seconds < 2 * retry + 5
    assert terminated.reconciled_seconds < terminated.lease_seconds + 15


def _seconds_to_exit(operator: Operator, cause: Callable[[], object]) -> float:
    """Seconds from ``cause()``, done while ``operator`` leads, until its process exits."""
    polling.wait_for(operator.leading, 60, "the operator to lead")
    process = operator.process
    assert process is not None
    started = time.monotonic()
    cause()
    polling.wait_for(lambda: process.poll() is not None, 30, "the operator to exit")
    seconds = time.monotonic() - started
    operator.stop()  # notes its exit code
    return seconds


def test_a_leader_that_loses_its_lease_stops_at_once_and_exits_nonzero(
    live_operator: Operator, kube_api: client.ApiClient
) -> None:
    leases = client.CoordinationV1Api(kube_api)
    # Another replica's record, as when the leader was cut off for longer than the lease.
    other = {"spec": {"holderIdentity": "other"}}
    try:
        seconds = _seconds_to_exit(
            live_operator,
            lambda: leases.patch_namespaced_lease(LEASE, OPERATOR_NAMESPACE, other),
        )
    finally:
        # Free the lease again, so the next test's operator need not wait for it to run out.
        free = {"spec": {"holderIdentity": None}}
        leases.patch_namespaced_lease(LEASE, OPERATOR_NAMESPACE, free)
    assert live_operator.exit_codes[-1] == EXIT_LEASE_LOST
    assert seconds < 2 * 2.0 + 2  # its next renewal (every 2 s) saw it
    log = live_operator.logs[-1].read_text()
    assert re.search(r"lost the lease \(Lease \S+ is held by other\)", log)


def test_a_deleted_lease_is_never_recreated_and_its_leader_stops(
    live_operator: Operator, kube_api: client.ApiClient
) -> None:
    leases = client.CoordinationV1Api(kube_api)
    try:
        # As in a `helm uninstall`, which deletes the chart's Lease before the Deployment:
        # the operator may not create it again (no create right; an update that would
        # create it is refused too), so nothing is left behind, and it stops acting.
        seconds = _seconds_to_exit(
            live_operator, lambda: leases.delete_namespaced_lease(LEASE, OPERATOR_NAMESPACE)
        )
        left = leases.list_namespaced_lease(OPERATOR_NAMESPACE).items
        assert LEASE not in [lease.metadata.name for lease in left]
    finally:
        kube_admin.install_rbac(kube_api)  # the Lease again, for the next tests
    assert live_operator.exit_codes[-1] == EXIT_LEASE_LOST
    assert seconds < 10.0 + 2.0 + 3  # the renew deadline, one retry, and slack
    assert "Forbidden" in live_operator.logs[-1].read_text()
