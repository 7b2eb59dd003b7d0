"""The pool's two Services: one for callers (the gateway's ready replicas, or without a
gateway the ready runtime pods) and one headless for per-pod DNS names (every runtime pod,
ready or not, so a draining pod stays addressable and pods stay reachable directly)."""

from __future__ import annotations

from typing import Any

from voicefleet import constants
from voicefleet.operator.builders.common import (
    PoolRef,
    metadata,
    selector_labels,
    with_applied_hash,
)
from voicefleet.operator.builders.gateway import gateway_selector


def service_name(pool: PoolRef) -> str:
    return pool.name


def headless_service_name(pool: PoolRef) -> str:
    return pool.name + constants.SUFFIX_HEADLESS_SERVICE


def _port() -> dict[str, Any]:
    return {
        "name": constants.RUNTIME_PORT_NAME,
        "port": constants.RUNTIME_PORT,
        "targetPort": constants.RUNTIME_PORT_NAME,
        "protocol": "TCP",
    }


def build_service(pool: PoolRef, *, gateway: bool) -> dict[str, Any]:
    """ClusterIP Service on the runtime port. With the ``gateway``: its ready replicas.
    Without: the runtime pods, only ready ones not marked draining (the serving label flips
    with the drain mark, before the runtime hears of it)."""
    selector = (
        gateway_selector(pool)
        if gateway
        else {**selector_labels(pool), constants.LABEL_SERVING: constants.SERVING_YES}
    )
    return with_applied_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(pool, service_name(pool)),
            "spec": {"type": "ClusterIP", "selector": selector, "ports": [_port()]},
        }
    )


def build_headless_service(pool: PoolRef) -> dict[str, Any]:
    """Headless Service: DNS records for every pod, ready or not (reconnect targets)."""
    return with_applied_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(pool, headless_service_name(pool)),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": selector_labels(pool),
                "ports": [_port()],
            },
        }
    )
