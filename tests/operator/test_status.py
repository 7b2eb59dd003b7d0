"""Status computation: counts, sessions, conditions and "written only when changed"."""

from __future__ import annotations

from typing import Any

from voicefleet import constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator import status
from voicefleet.operator.planner import plan
from voicefleet.operator.scaling import PodView

NOW = 2_000_000_000.0
SPEC = VoiceAgentPoolSpec.model_validate({"sessions": {"target": 100}})
PLAN = plan(SPEC)


def pod(name: str, **kw: object) -> PodView:
    base: dict[str, object] = {
        "capacity_type": constants.CAPACITY_ON_DEMAND,
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
        "desired_hashes": {constants.CAPACITY_ON_DEMAND: "h"},
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
        pod("d", draining=True, capacity_type=constants.CAPACITY_SPOT),
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
