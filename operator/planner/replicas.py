"""How many pods a pool runs, and how they split between on-demand and spot capacity.

The split follows the mixed-instances convention of AWS Auto Scaling groups and Karpenter: a
fixed on-demand base, then a percentage of the rest on spot. On top of that the planner adds
spot pods until losing the spot node that holds the most of them still leaves the session
target covered: a spot interruption then costs headroom, never conversations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from voicefleet.constants import Strategy


@dataclass(frozen=True)
class Replicas:
    total: int
    on_demand: int
    spot: int


def needed_pods(target: int, headroom_percent: int, sessions_per_pod: int) -> int:
    """Pods that hold ``target x (1 + headroom)`` sessions."""
    # Integer arithmetic: 200 x 115 / 100 is exactly 230, with no float rounding up to 231.
    sessions = math.ceil(target * (100 + headroom_percent) / 100)
    return math.ceil(sessions / sessions_per_pod)


def split(
    pods: int,
    strategy: str,
    on_demand_base: int,
    spot_percentage: int,
) -> Replicas:
    """On-demand and spot pods for ``pods`` in total (the base always runs)."""
    if strategy == Strategy.ON_DEMAND:
        total = max(pods, on_demand_base)
        return Replicas(total=total, on_demand=total, spot=0)
    if strategy == Strategy.SPOT_ONLY:
        return Replicas(total=pods, on_demand=0, spot=pods)
    total = max(pods, on_demand_base)
    spot = (total - on_demand_base) * spot_percentage // 100
    return Replicas(total=total, on_demand=total - spot, spot=spot)


def with_spot_surplus(
    replicas: Replicas, target: int, sessions_per_pod: int, pods_per_node: int
) -> Replicas:
    """Adds spot pods until losing the fullest spot node still covers ``target``.

    The worst case is a node packed with as many of the pool's spot pods as it has GPUs.
    """
    spot = replicas.spot
    total = replicas.total
    while spot > 0 and (total - min(spot, pods_per_node)) * sessions_per_pod < target:
        spot += 1
        total += 1
    return Replicas(total=total, on_demand=replicas.on_demand, spot=spot)
