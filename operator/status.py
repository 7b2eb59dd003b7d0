"""The pool's status from what the reconcile observed: pure, no I/O.

``compute`` returns the whole ``status`` the operator wants; ``changed`` tells whether it
differs from the stored one, so the status is written only when something changed and the
operator never wakes itself up (KubeRay's ``inconsistentRayClusterStatus``). Condition
transition times are kept from the stored conditions while a condition's status stays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from voicefleet import constants
from voicefleet.api.status import (
    Condition,
    GatewayPoolStatus,
    PlanStatus,
    SessionsStatus,
    VoiceAgentPoolStatus,
)
from voicefleet.operator.scaling import PodView
from voicefleet.rfc3339 import format_time


@dataclass(frozen=True)
class Observation:
    """Everything the status is computed from."""

    generation: int
    selector: str
    pods: Sequence[PodView]
    plan: PlanStatus | None = None
    plan_error: str | None = None  # PlanInvalid message (what to change)
    prices_error: str | None = None
    desired_hashes: Mapping[str, str] | None = None
    spot_fallback: int = 0
    target_sessions: int = 0
    now: float = 0.0
    not_ready_timeout_seconds: float = 600.0
    # Pod creates the API server refused (admission, quota), in its words; retried with
    # back-off.
    create_error: str | None = None
    # Objects the pool would own but someone else does (never adopted).
    conflicts: Sequence[str] = ()
    # So many nodes NotReady at once that nothing is drained for it (see interruption.py).
    nodes_not_ready: str | None = None
    # The pool's gateway replicas and what they counted (None: the pool runs none).
    gateway: GatewayPoolStatus | None = None


def _condition(kind: str, ok: bool, reason: str, message: str, gen: int) -> Condition:
    return Condition(
        type=kind,
        status=constants.ConditionStatus.TRUE if ok else constants.ConditionStatus.FALSE,
        reason=reason,
        message=message,
        observed_generation=gen,
    )


def _degraded_reasons(obs: Observation, live: Sequence[PodView]) -> list[tuple[str, str]]:
    """Every reason the pool is degraded, (reason, message), the one that matters most
    first: what stops the pool from running at all, then what costs capacity now, then
    what only needs a look."""
    found: list[tuple[str, str]] = []
    if obs.plan_error is not None:
        found.append((constants.REASON_PLAN_INVALID, obs.plan_error))
    if obs.create_error is not None:
        found.append((constants.REASON_CREATE_FAILED, obs.create_error))
    if obs.conflicts:
        found.append((constants.REASON_NAME_CONFLICT, "; ".join(obs.conflicts)))
    if obs.nodes_not_ready is not None:
        found.append((constants.REASON_NODES_NOT_READY, obs.nodes_not_ready))
    if obs.spot_fallback:
        found.append(
            (
                constants.REASON_SPOT_UNAVAILABLE,
                f"{obs.spot_fallback} spot pod(s) unschedulable; running on-demand stand-ins",
            )
        )
    stuck = sorted(
        p.name for p in live if not p.ready and obs.now - p.created >= obs.not_ready_timeout_seconds
    )
    if stuck:
        found.append(
            (
                constants.REASON_PODS_NOT_READY,
                f"{len(stuck)} pod(s) not ready after {obs.not_ready_timeout_seconds:.0f} s: "
                f"{', '.join(stuck[:5])}; check their events and logs",
            )
        )
    unreachable = sorted(p.name for p in live if p.ready and p.sessions_active is None)
    if unreachable:
        found.append(
            (
                constants.REASON_RUNTIME_UNREACHABLE,
                f"{len(unreachable)} ready pod(s) do not answer {constants.PATH_STATUS}: "
                f"{', '.join(unreachable[:5])}",
            )
        )
    if obs.prices_error is not None:
        found.append(
            (
                constants.REASON_PRICES_INVALID,
                f"{obs.prices_error}; planning with the default prices",
            )
        )
    return found


def _degraded(obs: Observation, live: Sequence[PodView]) -> Condition:
    """The first reason, its message, and the names of the others (none is hidden)."""
    reasons = _degraded_reasons(obs, live)
    if not reasons:
        return _condition(
            constants.CONDITION_DEGRADED, False, constants.REASON_HEALTHY, "", obs.generation
        )
    (reason, message), rest = reasons[0], reasons[1:]
    if rest:
        message += f" (also: {', '.join(r for r, _ in rest)})"
    return _condition(constants.CONDITION_DEGRADED, True, reason, message, obs.generation)


def _progressing(obs: Observation, live: Sequence[PodView], draining: int) -> Condition:
    gen = obs.generation
    hashes = obs.desired_hashes or {}
    outdated = sum(1 for p in live if hashes and p.spec_hash != hashes.get(p.capacity_type))
    if outdated:
        return _condition(
            constants.CONDITION_PROGRESSING,
            True,
            constants.REASON_ROLLING,
            f"{outdated} pod(s) to replace with the new template",
            gen,
        )
    want = obs.plan.replicas if obs.plan else len(live)
    starting = sum(1 for p in live if not p.serving)
    if starting or len(live) != want:
        return _condition(
            constants.CONDITION_PROGRESSING,
            True,
            constants.REASON_SCALING,
            f"{len(live) - starting} of {want} pod(s) serving",
            gen,
        )
    if draining:
        return _condition(
            constants.CONDITION_PROGRESSING,
            True,
            constants.REASON_DRAINING,
            f"{draining} pod(s) draining live sessions",
            gen,
        )
    return _condition(constants.CONDITION_PROGRESSING, False, constants.REASON_STABLE, "", gen)


def _ready(obs: Observation, serving: int, capacity: int) -> Condition:
    gen = obs.generation
    if obs.plan is None:
        return _condition(
            constants.CONDITION_READY,
            False,
            constants.REASON_PLAN_INVALID,
            obs.plan_error or "no plan",
            gen,
        )
    # Ready means the target is covered: a pool can hold its target with fewer pods than
    # planned serving (the plan has headroom), and the missing ones show as Progressing.
    if capacity >= obs.target_sessions:
        return _condition(
            constants.CONDITION_READY,
            True,
            constants.REASON_ALL_READY,
            f"{serving} of {obs.plan.replicas} pod(s) serving, {capacity} session slots for "
            f"a target of {obs.target_sessions}",
            gen,
        )
    return _condition(
        constants.CONDITION_READY,
        False,
        constants.REASON_CAPACITY_SHORTFALL,
        f"{serving} of {obs.plan.replicas} pod(s) serving, {capacity} session slots for a "
        f"target of {obs.target_sessions}",
        gen,
    )


def compute(obs: Observation, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The status to store (wire form), transition times carried over from ``previous``."""
    pods = [p for p in obs.pods if not p.deleting]
    draining = [p for p in pods if p.draining]
    live = [p for p in pods if not p.draining]
    serving = [p for p in live if p.serving]
    per_pod = obs.plan.sessions_per_pod if obs.plan else 0
    capacity = len(serving) * per_pod
    status = VoiceAgentPoolStatus(
        observed_generation=obs.generation,
        plan=obs.plan,
        replicas=len(pods),
        # As `kubectl get pods` shows READY: a full pod is serving (its slots count in the
        # capacity) but its readiness probe fails until a slot frees.
        ready_replicas=sum(1 for p in live if p.ready and p.running),
        starting_replicas=len(live) - len(serving),
        draining_replicas=len(draining),
        spot_replicas=sum(1 for p in pods if p.capacity_type == constants.CapacityType.SPOT),
        on_demand_replicas=sum(
            1 for p in pods if p.capacity_type == constants.CapacityType.ON_DEMAND
        ),
        sessions=SessionsStatus(
            active=sum(p.sessions_active or 0 for p in pods), capacity=capacity
        ),
        gateway=obs.gateway,
        selector=obs.selector,
        conditions=[
            _ready(obs, len(serving), capacity),
            _progressing(obs, live, len(draining)),
            _degraded(obs, live),
        ],
    )
    wire = status.wire()
    old_times = {
        c.get("type"): (c.get("status"), c.get("lastTransitionTime"))
        for c in (previous or {}).get("conditions") or []
    }
    for condition in wire["conditions"]:
        old_status, old_time = old_times.get(condition["type"], (None, None))
        condition["lastTransitionTime"] = (
            old_time if old_status == condition["status"] and old_time else format_time(obs.now)
        )
    if obs.gateway is None and (previous or {}).get("gateway") is not None:
        wire["gateway"] = None  # a merge patch removes a key only when told null
    return wire


def changed(new: Mapping[str, Any], stored: Mapping[str, Any] | None) -> bool:
    """True when writing ``new`` would change the stored status."""
    return bool(_normal(new) != _normal(stored or {}))


def _normal(status: Mapping[str, Any]) -> Any:
    # Round-trip through the model so defaults and absent optionals compare equal; a stored
    # status the model refuses (written by someone else) simply differs.
    try:
        return VoiceAgentPoolStatus.model_validate(dict(status)).wire()
    except ValidationError:
        return dict(status)
