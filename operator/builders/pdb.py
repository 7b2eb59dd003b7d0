"""The pool's PodDisruptionBudget.

One pod at a time may be evicted voluntarily, so a node drain cannot take a whole pool at
once. ``unhealthyPodEvictionPolicy: AlwaysAllow`` keeps pods that never got ready (or are
draining and so unready) from blocking node drains forever (kubernetes#72320).
"""

from __future__ import annotations

from typing import Any

from voicefleet.operator.builders.common import (
    PoolRef,
    metadata,
    selector_labels,
    with_applied_hash,
)


def pdb_name(pool: PoolRef) -> str:
    return pool.name


def build_pdb(pool: PoolRef) -> dict[str, Any]:
    return with_applied_hash(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(pool, pdb_name(pool)),
            "spec": {
                "maxUnavailable": 1,
                "selector": {"matchLabels": selector_labels(pool)},
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            },
        }
    )
