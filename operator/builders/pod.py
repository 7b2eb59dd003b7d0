"""The runtime pod of a pool: one GPU, one runtime process, its slots and its drain.

Built in four layers, in this order (later wins):

1. the operator's defaults: container, probes, preStop, GPU request, grace period;
2. capacity placement: node affinity and tolerations for spot or on-demand nodes;
3. what ``spec.template`` may change (``template.allowed_overrides``: labels, annotations,
   scheduling, the runtime container's resources and env) merged over both (``merge``), so
   a user can add tolerations, env, resources or a node selector without losing the rest;
4. what is the operator's whatever the stored pool says: the namespace, owner and selector
   labels, the ServiceAccount and its token, and a security context that passes Pod
   Security "restricted" (the preStop hook and the probes need no privilege: the hook is a
   Python client of the runtime's own port, above 1024, and the probes are the kubelet's).

The pod's spec hash (annotation) covers everything but its name and the nodes it must
avoid, so a changed image, model or slot count is seen as "needs new pods" (a rollout),
while a changed session target is not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Final

from voicefleet import catalog, constants
from voicefleet.api.pool import VoiceAgentPoolSpec
from voicefleet.api.status import PlanStatus
from voicefleet.operator import interruption
from voicefleet.operator.builders.common import PoolRef, content_hash, metadata, selector_labels
from voicefleet.operator.builders.merge import merge
from voicefleet.operator.builders.secret import secret_name
from voicefleet.operator.builders.template import allowed_overrides
from voicefleet.operator.planner import resolve_model

CONTAINER_NAME: Final = constants.RUNTIME_CONTAINER
RUNTIME_COMMAND: Final = ("voicefleet", "runtime", "serve")
MODELS_MOUNT: Final = "/var/lib/voicefleet/models"
MODELS_VOLUME: Final = "models"
PROMPT_MOUNT: Final = "/var/lib/voicefleet/prompt"
PROMPT_VOLUME: Final = "prompt"
# Time after the drain deadline for the process to close sockets and exit.
DEFAULT_GRACE_MARGIN_SECONDS: Final = 30
# The NVIDIA device plugin's conventional taint on GPU nodes.
GPU_TAINT: Final = constants.RESOURCE_GPU
# Taints that spot nodes carry on GKE (optional) and AKS (always).
SPOT_TAINTS: Final[tuple[tuple[str, str], ...]] = (
    (constants.NODE_LABEL_GKE_SPOT, "true"),
    (constants.NODE_LABEL_AKS_PRIORITY, constants.CapacityType.SPOT),
)
# preStop: start the drain through the runtime's own API, so it begins before the
# endpoints controller and SIGTERM race; SIGTERM then joins the same drain.
PRESTOP_SCRIPT: Final = (
    "import json,os,sys,urllib.request as u\n"
    "r=u.Request('http://127.0.0.1:%d%s',data=json.dumps({'deadlineSeconds':int(sys.argv[1]),"
    "'reason':'preStop'}).encode(),method='POST',headers={'Content-Type':'application/json',"
    "'Authorization':'Bearer '+os.environ.get('%s','')})\n"
    "u.urlopen(r,timeout=5)\n"
)
# Pod Security "restricted": non-root (the image's numeric user, so the kubelet can check
# it), the runtime's default seccomp profile, no privilege escalation, no capabilities.
POD_SECURITY_CONTEXT: Final[dict[str, Any]] = {
    "runAsNonRoot": True,
    "runAsUser": constants.RUNTIME_UID,
    "runAsGroup": constants.RUNTIME_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# A read-only root: the runtime writes only to /tmp (its home; Hugging Face downloads and
# torch's caches), a volume of the pod's own.
CONTAINER_SECURITY_CONTEXT: Final[dict[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
SCRATCH_VOLUME: Final = "tmp"
SCRATCH_MOUNT: Final = "/tmp"


@dataclass(frozen=True)
class PodSettings:
    """Operator-wide choices that shape every pod."""

    grace_margin_seconds: int = DEFAULT_GRACE_MARGIN_SECONDS
    spot_labels: tuple[tuple[str, str], ...] = interruption.SPOT_LABELS
    # For pools whose spec.runtime.image is empty: the runtime of the operator's version.
    runtime_image: str = constants.DEFAULT_RUNTIME_IMAGE
    # The gateway's image: the operator's own (it has the gateway, and no torch).
    gateway_image: str = constants.DEFAULT_GATEWAY_IMAGE


# What every pod gets when the operator is run with its defaults (a default argument).
DEFAULT_POD_SETTINGS: Final = PodSettings()


def pod_name(pool: PoolRef, ordinal: int) -> str:
    """Pods are named by ordinal: a create after a crash hits "already exists", not a twin."""
    return f"{pool.name}-{ordinal}"


def ordinal_of(pool: PoolRef, name: str) -> int | None:
    prefix = f"{pool.name}-"
    rest = name.removeprefix(prefix)
    return int(rest) if name.startswith(prefix) and rest.isdigit() else None


def weights_source(spec: VoiceAgentPoolSpec) -> str:
    _profile, variant = resolve_model(spec.model, catalog.models())
    return spec.model.source or variant.source


def _mounted(
    source: str, volume: str, mount_path: str
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """(the source as the runtime sees it, volumes, mounts): ``pvc://claim/path`` becomes a
    path under ``mount_path`` in a read-only volume of its own (``pvc://claim`` alone: the
    claim's root); any other source is passed as is."""
    if not source.startswith("pvc://"):
        return source, [], []
    claim, _, path = source.removeprefix("pvc://").partition("/")
    volumes = [{"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}]
    mounts = [{"name": volume, "mountPath": mount_path, "readOnly": True}]
    return f"{mount_path}/{path}".rstrip("/"), volumes, mounts


def _prompt(
    spec: VoiceAgentPoolSpec,
) -> tuple[str | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """(--prompt value, volumes, mounts); a claim may hold both the weights and the prompt,
    each mounted in its own volume."""
    if spec.model.prompt is None:
        return None, [], []
    return _mounted(spec.model.prompt, PROMPT_VOLUME, PROMPT_MOUNT)


def runtime_args(
    spec: VoiceAgentPoolSpec, plan: PlanStatus, weights: str, prompt: str | None = None
) -> list[str]:
    """The runtime's command-line settings: slots, session cap, model, prompt, drain."""
    profile, variant = resolve_model(spec.model, catalog.models())
    # A CPU model has no precision variants to pick, and must not look for a GPU.
    model = (
        ["--device", "cpu"] if profile.on_cpu else ["--variant", variant.name.rsplit("-", 1)[-1]]
    )
    if prompt is not None:
        model += ["--prompt", prompt]
    if spec.model.kv_cache_dtype != constants.KvCacheDtype.BF16:
        model += ["--kv-cache-dtype", spec.model.kv_cache_dtype]
    return [
        "--backend",
        spec.model.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(constants.RUNTIME_PORT),
        "--max-sessions",
        str(plan.sessions_per_pod),
        "--max-session-seconds",
        str(spec.sessions.max_session_seconds),
        "--weights",
        weights,
        *model,
        "--drain-seconds",
        str(spec.capacity.interruption.drain_seconds),
    ]


def container_ports() -> list[dict[str, Any]]:
    """The one port of a runtime or gateway container (the Services target it by name)."""
    return [
        {
            "name": constants.RUNTIME_PORT_NAME,
            "containerPort": constants.RUNTIME_PORT,
            "protocol": "TCP",
        }
    ]


def token_env(secret: str) -> dict[str, Any]:
    """The pool token, from the pool's Secret ``secret``, as the runtime and gateway read it."""
    return {
        "name": constants.ENV_POOL_TOKEN,
        "valueFrom": {"secretKeyRef": {"name": secret, "key": constants.POOL_TOKEN_KEY}},
    }


def probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": constants.RUNTIME_PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def resources(spec: VoiceAgentPoolSpec) -> dict[str, Any]:
    """Requests and limits from the model's catalog entry: CPU and memory requested (so the
    pod is not BestEffort, evicted first), memory limited, one GPU unless the model runs on
    the CPU. No CPU limit: throttling would make the frame clock late. ``spec.template``'s
    resources are merged over these."""
    profile, variant = resolve_model(spec.model, catalog.models())
    wanted = variant.resources
    requests = {"cpu": wanted.cpu, "memory": wanted.memory}
    limits = {"memory": wanted.memory_limit}
    if not profile.on_cpu:
        requests[constants.RESOURCE_GPU] = limits[constants.RESOURCE_GPU] = "1"
    return {"requests": requests, "limits": limits}


def _container(
    spec: VoiceAgentPoolSpec, plan: PlanStatus, settings: PodSettings
) -> tuple[dict[str, Any], list[Any]]:
    weights, volumes, mounts = _mounted(weights_source(spec), MODELS_VOLUME, MODELS_MOUNT)
    prompt, prompt_volumes, prompt_mounts = _prompt(spec)
    volumes, mounts = [*volumes, *prompt_volumes], [*mounts, *prompt_mounts]
    drain = spec.capacity.interruption.drain_seconds
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.runtime.image or settings.runtime_image,
        "command": list(RUNTIME_COMMAND),
        "args": runtime_args(spec, plan, weights, prompt),
        "ports": container_ports(),
        "env": [token_env("")],
        "resources": resources(spec),
        "readinessProbe": probe(constants.PATH_READYZ, 2, 1),
        # Loading weights takes minutes; the startup probe covers it so liveness stays tight.
        "startupProbe": probe(constants.PATH_HEALTHZ, 5, 120),
        "livenessProbe": probe(constants.PATH_HEALTHZ, 10, 3),
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "python",
                        "-c",
                        PRESTOP_SCRIPT
                        % (constants.RUNTIME_PORT, constants.PATH_DRAIN, constants.ENV_POOL_TOKEN),
                        str(drain),
                    ]
                }
            }
        },
    }
    container["volumeMounts"] = [*mounts, {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_MOUNT}]
    return container, [*volumes, {"name": SCRATCH_VOLUME, "emptyDir": {}}]


def _spot_terms(product_expr: list[dict[str, Any]], settings: PodSettings) -> list[dict[str, Any]]:
    """One node-selector term per spot label: the terms are ORed, so any cloud's label fits."""
    return [
        {"matchExpressions": [*product_expr, {"key": k, "operator": "In", "values": [v]}]}
        for k, v in settings.spot_labels
    ]


def _on_demand_terms(
    product_expr: list[dict[str, Any]], settings: PodSettings
) -> list[dict[str, Any]]:
    """One term that excludes every spot label (NotIn also matches nodes without the label)."""
    return [
        {
            "matchExpressions": [
                *product_expr,
                *({"key": k, "operator": "NotIn", "values": [v]} for k, v in settings.spot_labels),
            ]
        }
    ]


def placement(
    capacity_type: str,
    gpu_product: str | None,
    settings: PodSettings = PodSettings(),
    *,
    gpu: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(affinity, tolerations) that put a pod on ``capacity_type`` nodes with the GPU
    (without ``gpu``: any node of that capacity type, GPU taints not tolerated)."""
    product_expr: list[dict[str, Any]] = []
    if gpu_product:
        product_expr = [
            {"key": constants.NODE_LABEL_GPU_PRODUCT, "operator": "In", "values": [gpu_product]}
        ]
    if capacity_type == constants.CapacityType.SPOT:
        terms = _spot_terms(product_expr, settings)
    else:
        terms = _on_demand_terms(product_expr, settings)
    tolerations: list[dict[str, Any]] = (
        [{"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"}] if gpu else []
    )
    if capacity_type == constants.CapacityType.SPOT:
        tolerations += [
            {"key": k, "operator": "Equal", "value": v, "effect": "NoSchedule"}
            for k, v in SPOT_TAINTS
        ]
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }
    return affinity, tolerations


def build_pod_template(
    pool: PoolRef,
    spec: VoiceAgentPoolSpec,
    plan: PlanStatus,
    capacity_type: str,
    gpu_product: str | None,
    *,
    settings: PodSettings = PodSettings(),
) -> dict[str, Any]:
    """The pod without its name: defaults, placement, then ``spec.template`` over them.

    The ``pod-spec-hash`` annotation is the hash of everything else here.
    """
    container, volumes = _container(spec, plan, settings)
    container["env"][0]["valueFrom"]["secretKeyRef"]["name"] = secret_name(pool)
    profile, _variant = resolve_model(spec.model, catalog.models())
    if profile.on_cpu:
        gpu_product = None
    affinity, tolerations = placement(capacity_type, gpu_product, settings, gpu=not profile.on_cpu)
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "affinity": affinity,
        "tolerations": tolerations,
        "terminationGracePeriodSeconds": spec.capacity.interruption.drain_seconds
        + settings.grace_margin_seconds,
        # The operator, not the kubelet, replaces a runtime: a crashed one restarts in place.
        "restartPolicy": "Always",
        "enableServiceLinks": False,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": constants.NODE_LABEL_HOSTNAME,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(pool)},
            }
        ],
    }
    pod_spec["volumes"] = volumes
    labels = {
        **selector_labels(pool),
        constants.LABEL_CAPACITY_TYPE: capacity_type,
    }
    meta = metadata(pool, "", labels)
    del meta["name"]
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
    override = allowed_overrides(spec.template.wire())
    pod["metadata"] = merge(pod["metadata"], override["metadata"])
    pod["spec"] = merge(pod["spec"], override["spec"])
    _claim_operator_fields(pod, meta, spec)
    annotations = dict(pod["metadata"].get("annotations") or {})
    annotations[constants.ANNOTATION_SPEC_HASH] = content_hash(pod)
    pod["metadata"]["annotations"] = annotations
    return pod


def _claim_operator_fields(
    pod: dict[str, Any], meta: dict[str, Any], spec: VoiceAgentPoolSpec
) -> None:
    """Set, last, what is the operator's whatever the template says (layer 4)."""
    pod["metadata"]["namespace"] = meta["namespace"]
    pod["metadata"]["ownerReferences"] = copy.deepcopy(meta["ownerReferences"])
    pod["metadata"]["labels"].update(meta["labels"])
    pod_spec = pod["spec"]
    pod_spec["securityContext"] = copy.deepcopy(POD_SECURITY_CONTEXT)
    for container in pod_spec["containers"]:
        container["securityContext"] = copy.deepcopy(CONTAINER_SECURITY_CONTEXT)
    account = spec.runtime.service_account_name
    if account:
        pod_spec["serviceAccountName"] = account
    # The runtime never calls the API server: a token is mounted only for an account the
    # pool names (e.g. workload identity to reach weights in a bucket).
    pod_spec["automountServiceAccountToken"] = bool(account)


def build_pod(
    template: dict[str, Any], pool: PoolRef, ordinal: int, avoid_nodes: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A pod from ``template``: its name, and the nodes it must not land on (interrupted
    nodes whose notice is a label only, with no taint to keep the scheduler away)."""
    pod = copy.deepcopy(template)
    pod["metadata"]["name"] = pod_name(pool, ordinal)
    # Outside the spec hash: a new pod takes callers; a drain flips this (see services).
    pod["metadata"]["labels"][constants.LABEL_SERVING] = constants.SERVING_YES
    if avoid_nodes:
        # Remembered, so the pod can be remade once these nodes recover (scaling).
        pod["metadata"]["annotations"][constants.ANNOTATION_AVOID_NODES] = ",".join(
            sorted(avoid_nodes)
        )
        avoid = {
            "key": constants.NODE_LABEL_HOSTNAME,
            "operator": "NotIn",
            "values": sorted(avoid_nodes),
        }
        node_affinity = pod["spec"].setdefault("affinity", {}).setdefault("nodeAffinity", {})
        required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        terms = required.setdefault("nodeSelectorTerms", [])
        if not terms:
            terms.append({})
        for term in terms:
            term.setdefault("matchExpressions", []).append(avoid)
    return pod
