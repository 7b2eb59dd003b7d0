"""The chaos run of issue 9 (``e2e/chaos/``): the chart's two operator replicas and a
400-session pool through a NotReady blip, every node NotReady for 60 s, a 30 s API server
outage, 10 SIGKILLs of the leader while scaling, a mass spot interruption and its recovery,
and 50 pools created and deleted at once. The run prints its table; these tests assert on
what it measured from outside (pod and pool watches, the Lease, the stand-in runtimes'
records).

It runs first in the suite, on the shared sandbox, and leaves it as it found it: the chart
uninstalled, its namespace deleted, every node Ready and without signals.
"""

from __future__ import annotations

import signal

import pytest
from kubernetes import client

from e2e import fleet
from e2e.chaos.report import Result, Row, summary, table
from e2e.chaos.run import Chaos
from tests.fixtures.sandbox import Cluster
from voicefleet.sandbox import binaries

pytestmark = pytest.mark.sandbox

# The chart's leader election: a standby takes a dead leader's lease once it has not been
# renewed for the lease duration (15 s), on its next try (2 s); slack for two loaded cores.
TAKEOVER_SECONDS = 15 + 2 + 5
SCENARIOS = [
    "one node NotReady 5 s",
    "every node NotReady 60 s",
    "API server outage 30 s",
    "10 SIGKILLs while scaling",
    "mass spot interruption",
    "recovery of the spot nodes",
    "50 pools created and deleted",
]


@pytest.fixture(scope="module")
def result(
    sandbox: Cluster, kube_api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Result:
    if sandbox.sandbox is None:
        pytest.skip("the chaos run stops the sandbox's own API server: not on another cluster")
    helm = binaries.cached("helm")
    if helm is None:
        pytest.fail("no helm: run e2e/build-sandbox.sh", pytrace=False)
    cluster = fleet.Cluster(sandbox.kubeconfig, sandbox.kubectl, str(helm), kube_api)
    (apiserver,) = [p for p in sandbox.sandbox.processes if p.name == "kube-apiserver"]
    workdir = tmp_path_factory.mktemp("chaos")
    return Chaos(cluster, apiserver, workdir, log=lambda _line: None).run()


def _row(result: Result, scenario: str) -> Row:
    (found,) = [r for r in result.rows if r.scenario == scenario]
    return found


def test_the_run_prints_its_table(result: Result, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\n\n" + summary(result))
        print(table(result), "\n")
    assert [r.scenario for r in result.rows] == SCENARIOS
    assert not result.problems, result.problems
    assert not result.tracebacks, result.tracebacks
    assert all(r.ok for r in result.rows), table(result)


def test_no_duplicate_pod(result: Result) -> None:
    for row in result.rows:
        assert row.pods_max <= row.pods_expected, row
        assert not [f for f in row.failures if f.startswith("more pods")], row


def test_capacity_never_below_the_target_where_the_nodes_allow_it(result: Result) -> None:
    for row in result.rows:
        assert row.capacity_min is not None and row.capacity_floor is not None, row
        assert row.capacity_min >= row.capacity_floor, row
        if row.capacity_floor == row.capacity_target:
            assert row.below_target_seconds == 0, row
    # Only the mass interruption takes away more than the headroom, and only until the
    # replacements (and the stand-ins, after the spot fallback) serve.
    mass = _row(result, "mass spot interruption")
    assert mass.capacity_floor is not None and mass.capacity_target is not None
    assert mass.capacity_floor < mass.capacity_target
    assert mass.below_target_seconds < result.settings.spot_fallback_seconds + 15, mass
    assert [r.scenario for r in result.rows if r.capacity_floor != r.capacity_target] == [
        mass.scenario
    ]


def test_every_drain_is_acknowledged_by_the_runtime(result: Result) -> None:
    for row in result.rows:
        assert row.drains_acknowledged == row.drains_made, row
    # NotReady, however widespread, drains nothing; scale-ins and interruptions do.
    assert _row(result, "one node NotReady 5 s").drains_made == 0
    assert _row(result, "every node NotReady 60 s").drains_made == 0
    assert _row(result, "10 SIGKILLs while scaling").drains_made > 0
    assert _row(result, "mass spot interruption").drains_made > 0
    assert _row(result, "recovery of the spot nodes").drains_made > 0  # the stand-ins


def test_no_pod_is_left_unschedulable_once_the_nodes_are_back(result: Result) -> None:
    for row in result.rows:
        if row.scenario != "mass spot interruption":  # its nodes are still signalled
            assert row.unschedulable_left == 0, row
    assert _row(result, "mass spot interruption").unschedulable_left > 0


def test_every_pool_is_deleted_within_10_s(result: Result) -> None:
    burst = _row(result, "50 pools created and deleted")
    assert burst.deletion_max_seconds is not None
    assert burst.deletion_max_seconds <= result.settings.delete_limit_seconds, burst


def test_a_leader_is_back_after_every_kill(result: Result) -> None:
    assert len(result.kills) == result.settings.kills == 10
    for kill in result.kills:
        assert kill.leader_back_seconds is not None, kill
        assert kill.leader_back_seconds < TAKEOVER_SECONDS, kill
    # Both ways a replica takes over: a restarted one takes its own lease back, a standby
    # takes a lease that ran out.
    assert {k.by for k in result.kills} == {"restarted", "standby"}
    killed = [r for r in result.restarts if r[1] == -signal.SIGKILL]
    assert len(killed) == len(result.kills)
