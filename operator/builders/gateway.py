"""The pool's session gateway: a Deployment of CPU-only ``voicefleet gateway`` replicas and
their PodDisruptionBudget.

The gateway runs from the operator's image (it needs no torch) on on-demand nodes (a spot
reclaim of a gateway would cut every conversation it relays; ``gateway.capacityType: any``
lifts that), spread over nodes, with the pool's token from the pool's Secret: it checks the
operator's signed backend sets with it and moves conversations with it. It reads no
Kubernetes API (no ServiceAccount token), so a pool's gateway can do nothing its author
could not. Its drain lasts as long as a conversation may (``maxSessionSeconds``): a replica
being replaced keeps its live conversations until they end. Rollouts add a replica before
removing one, and the PDB keeps all but one.
"""

from __future__ import annotations

from typing import Any, Final

from voicefleet import constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.operator.builders.common import (
    PoolRef,
    common_labels,
    metadata,
    with_applied_hash,
)
from voicefleet.operator.builders.pod import (
    CONTAINER_SECURITY_CONTEXT,
    DEFAULT_POD_SETTINGS,
    POD_SECURITY_CONTEXT,
    SCRATCH_MOUNT,
    SCRATCH_VOLUME,
    PodSettings,
    container_ports,
    placement,
    probe,
    token_env,
)
from voicefleet.operator.builders.secret import secret_name

GATEWAY_COMMAND: Final = ("voicefleet", "gateway")
# A relay costs little (about 750 conversations per core at <= 1 ms p95, measured): a
# quarter core and a little memory per replica hold a pool of a few hundred conversations.
GATEWAY_RESOURCES: Final[dict[str, Any]] = {
    "requests": {"cpu": "250m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}
# After the drain, time to close sockets and exit.
GATEWAY_GRACE_MARGIN_SECONDS: Final = 15


def gateway_name(pool: PoolRef) -> str:
    return pool.name + constants.SUFFIX_GATEWAY


def gateway_selector(pool: PoolRef) -> dict[str, str]:
    """Labels that select the pool's gateway pods (its Deployment, PDB and Service)."""
    return {constants.LABEL_POOL: pool.name, constants.LABEL_COMPONENT: constants.COMPONENT_GATEWAY}


def gateway_args(spec: VoiceAgentPoolSpec) -> list[str]:
    return [
        "--backends-pushed",
        "--host=0.0.0.0",
        f"--port={constants.RUNTIME_PORT}",
        f"--drain-seconds={spec.sessions.max_session_seconds}",
    ]


def _container(spec: VoiceAgentPoolSpec, pool: PoolRef, image: str) -> dict[str, Any]:
    return {
        "name": constants.GATEWAY_CONTAINER,
        "image": image,
        "command": list(GATEWAY_COMMAND),
        "args": gateway_args(spec),
        "ports": container_ports(),
        "env": [token_env(secret_name(pool))],
        "resources": GATEWAY_RESOURCES,
        "readinessProbe": probe(constants.PATH_READYZ, 2, 1),
        "livenessProbe": probe(constants.PATH_HEALTHZ, 10, 3),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "volumeMounts": [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_MOUNT}],
    }


def build_gateway_deployment(
    pool: PoolRef, spec: VoiceAgentPoolSpec, settings: PodSettings = DEFAULT_POD_SETTINGS
) -> dict[str, Any]:
    wanted = spec.gateway
    capacity = constants.CapacityType.ON_DEMAND if wanted.capacity_type == "on-demand" else None
    pod_spec: dict[str, Any] = {
        "containers": [_container(spec, pool, settings.gateway_image)],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY_CONTEXT,
        "terminationGracePeriodSeconds": spec.sessions.max_session_seconds
        + GATEWAY_GRACE_MARGIN_SECONDS,
        "volumes": [{"name": SCRATCH_VOLUME, "emptyDir": {}}],
    }
    # Replicas on different nodes where possible: one node lost takes one replica.
    affinity: dict[str, Any] = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": constants.NODE_LABEL_HOSTNAME,
                        "labelSelector": {"matchLabels": gateway_selector(pool)},
                    },
                }
            ]
        }
    }
    if capacity is not None:
        on_demand, tolerations = placement(capacity, None, settings, gpu=False)
        affinity.update(on_demand)
        pod_spec["tolerations"] = tolerations
    pod_spec["affinity"] = affinity
    pull_secrets = spec.template.spec.image_pull_secrets
    if pull_secrets:
        # The pool's registry credentials, for a mirror of the operator's image.
        pod_spec["imagePullSecrets"] = [secret.wire() for secret in pull_secrets]
    labels = gateway_selector(pool)
    return with_applied_hash(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(pool, gateway_name(pool), labels),
            "spec": {
                "replicas": wanted.replicas,
                "selector": {"matchLabels": labels},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "template": {
                    "metadata": {"labels": {**common_labels(pool), **labels}},
                    "spec": pod_spec,
                },
            },
        }
    )


def build_gateway_pdb(pool: PoolRef) -> dict[str, Any]:
    return with_applied_hash(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(pool, gateway_name(pool), gateway_selector(pool)),
            "spec": {
                "maxUnavailable": 1,
                "selector": {"matchLabels": gateway_selector(pool)},
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            },
        }
    )
