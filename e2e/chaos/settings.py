"""What a chaos run does and to which pools: its settings, the pools' specs, and the
limits their plans set on what the watches may see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from e2e.observe import Limits
from voicefleet import catalog, constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.api.status import PlanStatus
from voicefleet.operator.planner import plan
from voicefleet.sandbox import nodes

NAMESPACE: Final = "chaos"
POOL: Final = "chaos"
BURST_PREFIX: Final = "burst"
# The 50 pools get GPUs of their own for the scenario (added, then removed), so they run
# beside the big pool without taking its nodes.
BURST_PRODUCT: Final = "NVIDIA-H200"
BURST_NODES: Final = nodes.NodeGroup(
    count=7, capacity_type=constants.CapacityType.ON_DEMAND, gpus=8, product=BURST_PRODUCT
)
# Spot nodes that a mass interruption leaves alone: fewer than the pool's spot pods, so some
# replacements find spot capacity and the rest need on-demand stand-ins.
SPOT_NODES_SPARED: Final = 4
# The renewal the run waits for after a kill: a lease (15 s), a retry, and a slow start.
LEADER_BACK_SECONDS: Final = 45.0


@dataclass(frozen=True)
class Settings:
    kills: int = 10
    outage_seconds: float = 30.0
    blip_seconds: float = 5.0
    all_not_ready_seconds: float = 60.0
    pools: int = 50
    target: int = 400
    small_target: int = 40
    after_outage_target: int = 480
    # The chart's `interruption.spotFallbackSeconds` (its default, 120 s, would make the
    # stand-ins of a mass interruption wait two minutes): the one value the run sets.
    spot_fallback_seconds: int = 10
    drain_seconds: int = 30
    # Every fourth kill restarts the replica only after its lease ran out, so the standby
    # takes over; the others restart at once and take their own lease back.
    late_restart_every: int = 4
    late_restart_seconds: float = 20.0
    settle_seconds: float = 90.0
    delete_limit_seconds: float = 10.0
    seed: int = 9
    # The scenarios to run, by name (``e2e.chaos.run.SCENARIOS``; empty: all, in order).
    scenarios: tuple[str, ...] = ()


DEFAULTS: Final = Settings()


def planned(target: int) -> PlanStatus:
    return plan(VoiceAgentPoolSpec.model_validate(pool_spec(target)), catalog.builtin())


def per_pod(target: int) -> int:
    return planned(target).sessions_per_pod


def pool_spec(target: int, drain_seconds: int = Settings.drain_seconds) -> dict[str, Any]:
    return {
        "sessions": {"target": target},
        "gpu": {"product": nodes.DEFAULT_GPU_PRODUCT},
        "capacity": {
            "strategy": constants.Strategy.SPOT_FIRST,
            "onDemandBase": 1,
            "spotPercentage": 80,
            "interruption": {"drainSeconds": drain_seconds},
        },
    }


def burst_spec() -> dict[str, Any]:
    return {
        "sessions": {"target": 10},
        "gpu": {"product": BURST_PRODUCT},
        "capacity": {"strategy": constants.Strategy.ON_DEMAND},
    }


def manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def steady(target: int) -> Limits:
    want = planned(target)
    return Limits(target, target, want.replicas, want.spot_replicas)


def changing(*targets: int) -> Limits:
    """While the target moves between ``targets``: the least of them must be served, the
    most planned pods of any of them may run."""
    plans = [planned(t) for t in targets]
    least = min(targets)
    return Limits(least, least, max(p.replicas for p in plans), max(p.spot_replicas for p in plans))
