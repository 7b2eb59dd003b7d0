"""Leader election against the real API server: the Lease protocol of operator/leader.py,
with electors in this process (as admin, on a Lease of the test's own) and short timings.
The operator processes that use it are tested in test_operator_ha.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.sandbox import Cluster
from voicefleet.operator.kube import Kube, load_credentials
from voicefleet.operator.leader import LeaderElector, LeaseLost, LeaseSettings
from voicefleet.testing.loopback import free_port
from voicefleet.testing.polling import until

pytestmark = pytest.mark.sandbox

LEASE = "test-lease"
DURATION, DEADLINE, RETRY = 3.0, 2.0, 0.2


@pytest.fixture
async def kube(sandbox: Cluster) -> AsyncIterator[Kube]:
    api = Kube(load_credentials(str(sandbox.kubeconfig)))
    yield api
    await api.close()


def elector(kube: Kube, namespace: str, identity: str) -> LeaderElector:
    settings = LeaseSettings(
        namespace=namespace,
        identity=identity,
        name=LEASE,
        lease_duration=DURATION,
        renew_deadline=DEADLINE,
        retry_period=RETRY,
    )
    return LeaderElector(kube, settings)


def read_lease(kube_api: client.ApiClient, namespace: str) -> Any:
    return client.CoordinationV1Api(kube_api).read_namespaced_lease(LEASE, namespace)


async def leading(kube: Kube, namespace: str) -> tuple[LeaderElector, asyncio.Task[None]]:
    """An elector that leads, and the task that holds its lease."""
    leader = elector(kube, namespace, "leader")
    await leader.acquire()
    return leader, asyncio.create_task(leader.hold())


def who_leads(*electors: LeaderElector) -> list[str]:
    return [e.settings.identity for e in electors if e.leading]


async def renewals(kube_api: client.ApiClient, namespace: str, count: int) -> None:
    """Wait until the Lease's renewTime has changed ``count`` times."""
    seen = {read_lease(kube_api, namespace).spec.renew_time}

    def renewed() -> bool:
        seen.add(read_lease(kube_api, namespace).spec.renew_time)
        return len(seen) > count

    await until(renewed, timeout=10)


async def test_of_two_candidates_one_leads_and_a_release_hands_over_at_once(
    kube: Kube, kube_api: client.ApiClient, namespace: str
) -> None:
    a, b = elector(kube, namespace, "a"), elector(kube, namespace, "b")
    # Both start at once: the create (then the update) lets exactly one through.
    tries = {asyncio.create_task(a.acquire()): a, asyncio.create_task(b.acquire()): b}
    done, pending = await asyncio.wait(tries, return_when=asyncio.FIRST_COMPLETED)
    (leader,) = [tries[t] for t in done]
    (standby,) = [tries[t] for t in pending]
    (waiting,) = pending
    holding = asyncio.create_task(leader.hold())

    await renewals(kube_api, namespace, 3)  # the leader renewed three times meanwhile
    assert who_leads(leader, standby) == [leader.settings.identity]
    assert not waiting.done()
    spec = read_lease(kube_api, namespace).spec
    assert (spec.holder_identity, spec.lease_duration_seconds) == (leader.settings.identity, 3)

    holding.cancel()  # without waiting for it, as a renewal may be in flight
    await leader.release()
    handover = await until(waiting.done, timeout=5)
    assert who_leads(leader, standby) == [standby.settings.identity]
    assert handover < RETRY * 1.2 + 0.5  # its next try, not the lease running out
    spec = read_lease(kube_api, namespace).spec
    assert spec.holder_identity == standby.settings.identity
    assert spec.lease_transitions == 1


async def test_a_dead_leaders_lease_is_taken_once_it_ran_out(
    kube: Kube, kube_api: client.ApiClient, namespace: str
) -> None:
    dead, standby = elector(kube, namespace, "dead"), elector(kube, namespace, "standby")
    await dead.acquire()  # and never renews: as a SIGKILL leaves it
    started = time.monotonic()
    await asyncio.wait_for(standby.acquire(), DURATION + 5)
    waited = time.monotonic() - started
    # Not before the lease ran out on the standby's own clock, and not much later.
    assert DURATION <= waited < DURATION + RETRY * 1.2 + 1.0
    assert read_lease(kube_api, namespace).spec.holder_identity == "standby"


async def test_the_same_identity_takes_its_own_lease_back_at_once(
    kube: Kube, namespace: str
) -> None:
    # A restarted container of the same pod: its lease is its own, nobody else's to wait for.
    await elector(kube, namespace, "pod-0").acquire()
    started = time.monotonic()
    await asyncio.wait_for(elector(kube, namespace, "pod-0").acquire(), DURATION)
    assert time.monotonic() - started < RETRY * 1.2 + 0.5


async def test_a_leader_that_sees_another_holder_has_lost_at_once(
    kube: Kube, kube_api: client.ApiClient, namespace: str
) -> None:
    leader, holding = await leading(kube, namespace)
    # Another replica's record, as after the leader was cut off for longer than the lease.
    client.CoordinationV1Api(kube_api).patch_namespaced_lease(
        LEASE, namespace, {"spec": {"holderIdentity": "intruder"}}
    )
    lost = await until(holding.done, timeout=5)
    assert lost < RETRY * 2 + 0.5
    with pytest.raises(LeaseLost, match="held by intruder"):
        holding.result()
    assert who_leads(leader) == []


async def test_a_leader_cut_off_from_the_api_has_lost_by_the_renew_deadline(
    kube: Kube, kube_api: client.ApiClient, namespace: str
) -> None:
    leader, holding = await leading(kube, namespace)
    await renewals(kube_api, namespace, 1)
    # A network partition: from now on every renewal fails. The leader must stop before
    # the lease runs out for the others (DURATION), that is by its renew deadline.
    # (The open connection stays with the real server; requests go to the new address.)
    kube.credentials = replace(kube.credentials, server=f"https://127.0.0.1:{free_port()}")
    cut = time.monotonic()
    await until(holding.done, timeout=DURATION + 2)
    assert DEADLINE - RETRY <= time.monotonic() - cut < DURATION
    with pytest.raises(LeaseLost, match="not renewed for 2 s"):
        holding.result()
    assert who_leads(leader) == []
