"""Status computation: counts, sessions, conditions and "written only when changed"."""

from __future__ import annotations

from typing import Any

from voicefleet import catalog, constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator import status
from voicefleet.operator.planner import plan
from voicefleet.operator.scaling import PodView

NOW = 2_000_000_000.0
SPEC = VoiceAgentPoolSpec.model_validate({"sessions": {"target": 100}})
PLAN = plan(SPEC, catalog.builtin())


def pod(name: str, **kw: object) -> PodView:
    base: dict[str, object] = {
        "capacity_type": constants.CapacityType.ON_DEMAND,
        "spec_hash": "h",
        "phase": "Running",
        "ip": "127.0.0.9",
        "ready": True,
        "created": NOW - 10,
        "sessions_active": 4,
    }
    base.update(kw)
    return PodView(name=name, **base)  # type: ignore[arg-type]


def observe(pods: list[PodView], **kw: object) -> status.Observation:
    base: dict[str, object] = {
        "generation": 2,
        "selector": "a=b",
        "pods": pods,
        "plan": PLAN,
        "desired_hashes": {constants.CapacityType.ON_DEMAND: "h"},
        "target_sessions": 100,
        "now": NOW,
    }
    base.update(kw)
    return status.Observation(**base)  # type: ignore[arg-type]


def conditions(wire: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in wire["conditions"]}


def test_all_serving_is_ready_and_stable() -> None:
    pods = [pod(f"p{i}") for i in range(PLAN.replicas)]
    wire = status.compute(observe(pods))
    assert wire["observedGeneration"] == 2
    assert wire["readyReplicas"] == PLAN.replicas
    assert wire["sessions"] == {"active": 4 * PLAN.replicas, "capacity": PLAN.session_capacity}
    assert conditions(wire) == {
        constants.CONDITION_READY: ("True", constants.REASON_ALL_READY),
        constants.CONDITION_PROGRESSING: ("False", constants.REASON_STABLE),
        constants.CONDITION_DEGRADED: ("False", constants.REASON_HEALTHY),
    }


def test_counts_by_state_and_capacity_type() -> None:
    pods = [
        pod("r"),
        pod("s", ready=False, phase="Pending", ip=None, sessions_active=None),
        pod("d", draining=True, capacity_type=constants.CapacityType.SPOT),
        pod("gone", deleting=True),
    ]
    wire = status.compute(observe(pods))
    assert (wire["replicas"], wire["readyReplicas"], wire["startingReplicas"]) == (3, 1, 1)
    assert (wire["drainingReplicas"], wire["spotReplicas"], wire["onDemandReplicas"]) == (1, 1, 2)
    assert conditions(wire)[constants.CONDITION_READY][1] == constants.REASON_CAPACITY_SHORTFALL


def test_plan_invalid_is_degraded_with_the_message() -> None:
    wire = status.compute(observe([pod("p0")], plan=None, plan_error="raise maxReplicas"))
    degraded = next(c for c in wire["conditions"] if c["type"] == constants.CONDITION_DEGRADED)
    assert (degraded["status"], degraded["reason"]) == ("True", constants.REASON_PLAN_INVALID)
    assert degraded["message"] == "raise maxReplicas"
    assert wire["replicas"] == 1  # what runs is still counted


def test_pods_never_ready_and_unreachable_runtimes_are_degraded() -> None:
    stuck = pod("stuck", ready=False, created=NOW - 3600, sessions_active=None)
    assert conditions(status.compute(observe([stuck])))[constants.CONDITION_DEGRADED] == (
        "True",
        constants.REASON_PODS_NOT_READY,
    )
    silent = pod("silent", sessions_active=None)
    assert conditions(status.compute(observe([silent])))[constants.CONDITION_DEGRADED] == (
        "True",
        constants.REASON_RUNTIME_UNREACHABLE,
    )


def test_outdated_pods_mean_a_rollout_is_progressing() -> None:
    wire = status.compute(observe([pod("p0", spec_hash="old")]))
    assert conditions(wire)[constants.CONDITION_PROGRESSING] == ("True", constants.REASON_ROLLING)


def test_unchanged_status_is_not_rewritten_and_times_are_kept() -> None:
    pods = [pod(f"p{i}") for i in range(PLAN.replicas)]
    first = status.compute(observe(pods))
    later = status.compute(observe(pods, now=NOW + 500), previous=first)
    assert not status.changed(later, first)
    assert later == first
    more = status.compute(observe([*pods, pod("x", ready=False)], now=NOW + 600), previous=first)
    assert status.changed(more, first)
    progressing = next(c for c in more["conditions"] if c["type"] == "Progressing")
    assert progressing["lastTransitionTime"] != first["conditions"][1]["lastTransitionTime"]


def degraded(wire: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in wire["conditions"] if c["type"] == constants.CONDITION_DEGRADED)


def test_ready_replicas_match_kubectl_and_full_pods_still_count_as_capacity() -> None:
    """A full pod fails its readiness probe (no free slot) but serves: READY as kubectl shows
    it, capacity from the runtime's report (issue 9, item 12)."""
    full = pod("full", ready=False, runtime_loaded=True, sessions_active=PLAN.sessions_per_pod)
    pods = [*(pod(f"p{i}") for i in range(PLAN.replicas - 1)), full]
    wire = status.compute(observe(pods))
    assert wire["readyReplicas"] == PLAN.replicas - 1
    assert wire["sessions"]["capacity"] == PLAN.session_capacity
    assert conditions(wire)[constants.CONDITION_READY] == ("True", constants.REASON_ALL_READY)


def test_ready_when_the_slots_cover_the_target_even_with_pods_missing() -> None:
    """640 slots for a target of 400 is not a shortfall, whatever the pod count."""
    short = [pod(f"p{i}") for i in range(PLAN.replicas - 1)]
    covered = (PLAN.replicas - 1) * PLAN.sessions_per_pod
    wire = status.compute(observe(short, target_sessions=covered))
    assert conditions(wire)[constants.CONDITION_READY] == ("True", constants.REASON_ALL_READY)
    assert conditions(wire)[constants.CONDITION_PROGRESSING] == ("True", constants.REASON_SCALING)
    one = status.compute(observe([pod("p0")], target_sessions=PLAN.sessions_per_pod + 1))
    assert conditions(one)[constants.CONDITION_READY] == (
        "False",
        constants.REASON_CAPACITY_SHORTFALL,
    )


def test_the_reason_that_matters_most_comes_first_and_the_rest_are_named() -> None:
    stuck_spot = pod(
        "s0",
        capacity_type=constants.CapacityType.SPOT,
        ready=False,
        phase="Pending",
        ip=None,
        created=NOW - 3600,
        sessions_active=None,
    )
    wire = status.compute(observe([stuck_spot], spot_fallback=1, prices_error="bad prices"))
    found = degraded(wire)
    assert found["reason"] == constants.REASON_SPOT_UNAVAILABLE
    assert found["message"].endswith(
        f"(also: {constants.REASON_PODS_NOT_READY}, {constants.REASON_PRICES_INVALID})"
    )
    refused = status.compute(
        observe(
            [stuck_spot],
            spot_fallback=1,
            create_error="creating pod x-1 was refused: quota",
            conflicts=("Service voice/x exists and is not owned by this pool",),
        )
    )
    assert degraded(refused)["reason"] == constants.REASON_CREATE_FAILED
    assert degraded(refused)["message"].startswith("creating pod x-1 was refused: quota (also: ")


def test_a_mass_outage_is_said_on_the_pool() -> None:
    wire = status.compute(observe([pod("p0")], nodes_not_ready="7 of 7 nodes are NotReady"))
    assert degraded(wire)["reason"] == constants.REASON_NODES_NOT_READY
