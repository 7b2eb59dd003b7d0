"""Every name that more than one part of voicefleet spells: API group, label and annotation
keys, condition types and reasons, event reasons, ports, metric prefixes.

One module, so no string literal appears twice (KubeRay's ``utils/constant.go`` habit).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from voicefleet import __version__

# --- API ---------------------------------------------------------------------------------
GROUP: Final = "voicefleet.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "VoiceAgentPool"
PLURAL: Final = "voiceagentpools"
SINGULAR: Final = "voiceagentpool"
SHORT_NAMES: Final = ("vap", "voicepool")
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# --- Labels and annotations the operator puts on what it owns -------------------------------
LABEL_POOL: Final = f"{GROUP}/pool"
LABEL_COMPONENT: Final = f"{GROUP}/component"
LABEL_CAPACITY_TYPE: Final = f"{GROUP}/capacity-type"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "voicefleet"
ANNOTATION_DRAINING: Final = f"{GROUP}/draining"
ANNOTATION_DRAIN_DEADLINE: Final = f"{GROUP}/drain-deadline"
ANNOTATION_DRAIN_REASON: Final = f"{GROUP}/drain-reason"
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/pod-spec-hash"
# Hash of what the operator last applied to an object: equal hash, no write (operator).
ANNOTATION_APPLIED_HASH: Final = f"{GROUP}/applied-hash"
ANNOTATION_DRAIN_NODE: Final = f"{GROUP}/drain-node"
# Nodes a pod was kept off when it was made (comma-separated), so it can be remade once
# they recover.
ANNOTATION_AVOID_NODES: Final = f"{GROUP}/avoid-nodes"
# "true" while a pod takes new conversations; the callers' Service selects on it, so a pod
# leaves the Service the moment it is marked draining, whatever its runtime says.
LABEL_SERVING: Final = f"{GROUP}/serving"
SERVING_YES: Final = "true"
SERVING_NO: Final = "false"
FINALIZER: Final = f"{GROUP}/finalizer"
COMPONENT_RUNTIME: Final = "runtime"
COMPONENT_GATEWAY: Final = "gateway"

# --- Well-known node labels ------------------------------------------------------------------
NODE_LABEL_GPU_PRODUCT: Final = "nvidia.com/gpu.product"
NODE_LABEL_GPU_MEMORY: Final = "nvidia.com/gpu.memory"
NODE_LABEL_GPU_COUNT: Final = "nvidia.com/gpu.count"
NODE_LABEL_GPU_FAMILY: Final = "nvidia.com/gpu.family"
RESOURCE_GPU: Final = "nvidia.com/gpu"
NODE_LABEL_KARPENTER_CAPACITY_TYPE: Final = "karpenter.sh/capacity-type"
NODE_LABEL_EKS_CAPACITY_TYPE: Final = "eks.amazonaws.com/capacityType"
NODE_LABEL_GKE_SPOT: Final = "cloud.google.com/gke-spot"
NODE_LABEL_GKE_PREEMPTIBLE: Final = "cloud.google.com/gke-preemptible"
NODE_LABEL_AKS_PRIORITY: Final = "kubernetes.azure.com/scalesetpriority"
NODE_LABEL_HOSTNAME: Final = "kubernetes.io/hostname"
NODE_LABEL_INSTANCE_TYPE: Final = "node.kubernetes.io/instance-type"
# Values of eks.amazonaws.com/capacityType (Karpenter's label uses CAPACITY_* below).
EKS_CAPACITY_SPOT: Final = "SPOT"
EKS_CAPACITY_ON_DEMAND: Final = "ON_DEMAND"

# --- Vocabularies ---------------------------------------------------------------------------
# Each is one StrEnum: the API models use it as the field type (so the CRD lists its values
# as an enum), and code compares and writes its members (a member is its string value).


class Strategy(StrEnum):
    """spec.capacity.strategy: how pods are split between on-demand and spot capacity."""

    ON_DEMAND = "on-demand"
    SPOT_FIRST = "spot-first"
    SPOT_ONLY = "spot-only"


class CapacityType(StrEnum):
    """The capacity a pod or node runs on (the LABEL_CAPACITY_TYPE and Karpenter values)."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"


class LimitedBy(StrEnum):
    """status.plan.limitedBy: what bounds the sessions one pod holds."""

    MEMORY = "memory"
    COMPUTE = "compute"
    POLICY = "policy"


class DensityModel(StrEnum):
    """status.plan.density: batched (one model, all sessions) or replicated (one each)."""

    BATCHED = "batched"
    REPLICATED = "replicated"


class ConditionStatus(StrEnum):
    """The status of a condition, as in metav1.Condition and a Node's conditions."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


# --- Prices ---------------------------------------------------------------------------------
# The key of a price ConfigMap (spec.capacity.pricing.configMapName) holding a prices.yaml.
PRICES_CONFIGMAP_KEY: Final = "prices.yaml"

# --- Conditions (type, reasons) ---------------------------------------------------------------
CONDITION_READY: Final = "Ready"
CONDITION_PROGRESSING: Final = "Progressing"
CONDITION_DEGRADED: Final = "Degraded"
REASON_PLAN_INVALID: Final = "PlanInvalid"
REASON_CAPACITY_SHORTFALL: Final = "CapacityShortfall"
REASON_SPOT_UNAVAILABLE: Final = "SpotUnavailable"
REASON_RUNTIME_UNREACHABLE: Final = "RuntimeUnreachable"
REASON_PODS_NOT_READY: Final = "PodsNotReady"
REASON_ALL_READY: Final = "AllPodsReady"
REASON_SCALING: Final = "Scaling"
REASON_ROLLING: Final = "RollingUpdate"
REASON_DRAINING: Final = "Draining"
REASON_STABLE: Final = "Stable"
REASON_HEALTHY: Final = "Healthy"
REASON_PRICES_INVALID: Final = "PricesInvalid"
REASON_CREATE_FAILED: Final = "CreateFailed"
REASON_NAME_CONFLICT: Final = "NameConflict"
REASON_NODES_NOT_READY: Final = "NodesNotReady"

# --- Event reasons (operator) -----------------------------------------------------------------
EVENT_POD_CREATED: Final = "PodCreated"
EVENT_POD_DELETED: Final = "PodDeleted"
EVENT_DRAIN_STARTED: Final = "DrainStarted"
EVENT_DRAIN_FAILED: Final = "DrainFailed"
EVENT_PLAN_INVALID: Final = "PlanInvalid"
EVENT_SPOT_FALLBACK: Final = "SpotFallback"
EVENT_CREATE_FAILED: Final = "CreateFailed"
EVENT_NAME_CONFLICT: Final = "NameConflict"
EVENT_NODES_NOT_READY: Final = "NodesNotReady"

# --- Operator process -------------------------------------------------------------------------
OPERATOR_NAME: Final = "voicefleet-operator"
FIELD_MANAGER: Final = OPERATOR_NAME
OPERATOR_KEY_SECRET: Final = "voicefleet-operator-key"
# The coordination.k8s.io Lease the operator's replicas elect their leader on (its namespace).
OPERATOR_LEASE: Final = OPERATOR_NAME
POOL_TOKEN_KEY: Final = "token"

# --- Runtime ports, paths and protocol --------------------------------------------------------
RUNTIME_PORT: Final = 8998
RUNTIME_PORT_NAME: Final = "voice"
PATH_PAGE: Final = "/"  # a page to try the pool from a browser
PATH_MOSHI_CHAT: Final = "/api/chat"
PATH_PCM: Final = "/ws/pcm"
PATH_AUDIO: Final = "/audio"  # the Hertz-dev reference server's protocol
PATH_HEALTHZ: Final = "/healthz"
PATH_READYZ: Final = "/readyz"
PATH_METRICS: Final = "/metrics"
PATH_STATUS: Final = "/v1/status"
PATH_DRAIN: Final = "/v1/drain"
# Moving a live conversation between pods (the gateway's calls, with the pool token):
# POST the export of a session (its id is in HEADER_SESSION of its WebSocket upgrade), POST
# that body to another pod's import, then open the same protocol there with QUERY_RESUME.
PATH_SESSION_EXPORT: Final = "/v1/sessions/{session}/export"
PATH_SESSION_IMPORT: Final = "/v1/sessions/import"
PATH_BACKENDS: Final = "/v1/backends"  # the gateway's set of runtime pods, from the operator
HEADER_SESSION: Final = "X-Voicefleet-Session"
HEADER_STEPS: Final = "X-Voicefleet-Steps"
QUERY_RESUME: Final = "resume"
QUERY_INTO: Final = "into"
CONTENT_TYPE_SLOT_STATE: Final = "application/vnd.voicefleet.slot-state"
ENV_POOL_TOKEN: Final = "VOICEFLEET_POOL_TOKEN"
RUNTIME_METRIC_PREFIX: Final = "voicefleet_runtime_"
OPERATOR_METRIC_PREFIX: Final = "voicefleet_operator_"
GATEWAY_METRIC_PREFIX: Final = "voicefleet_gateway_"

# --- Audio ------------------------------------------------------------------------------------
MOSHI_SAMPLE_RATE: Final = 24_000
MOSHI_FRAME_SAMPLES: Final = 1920  # 80 ms at 24 kHz
HERTZ_SAMPLE_RATE: Final = 16_000
HERTZ_FRAME_SAMPLES: Final = 2000  # 125 ms at 16 kHz

# --- Names derived from a pool's name (the bound on pool names follows from them) -----------
SUFFIX_HEADLESS_SERVICE: Final = "-pods"
SUFFIX_TOKEN_SECRET: Final = "-token"
SUFFIX_GATEWAY: Final = "-gateway"  # the gateway's Deployment and PodDisruptionBudget
RUNTIME_CONTAINER: Final = "runtime"
GATEWAY_CONTAINER: Final = "gateway"
# The runtime image's user (runtime/Dockerfile's USER); runtime pods run as it.
RUNTIME_UID: Final = 10001
# Where the project's images are published (scripts/build-images.sh tags them so), and the
# runtime image a pool gets when spec.runtime.image is empty: the operator's own version.
IMAGE_REPOSITORY: Final = "ghcr.io/voicefleet"
DEFAULT_RUNTIME_IMAGE: Final = f"{IMAGE_REPOSITORY}/runtime:{__version__}"
# The gateway runs from the operator's image (it needs no torch): the operator's own version.
DEFAULT_GATEWAY_IMAGE: Final = f"{IMAGE_REPOSITORY}/operator:{__version__}"


# How a Moshi runtime stores its LM's KV cache (spec.model.kvCacheDtype, --kv-cache-dtype):
# bf16 as the model computes it, or fp8 (e4m3 with a scale per head vector), half the memory.
class KvCacheDtype(StrEnum):
    BF16 = "bf16"
    FP8 = "fp8"


KV_CACHE_BF16: Final = KvCacheDtype.BF16
KV_CACHE_FP8: Final = KvCacheDtype.FP8
KV_CACHE_DTYPES: Final = tuple(str(dtype) for dtype in KvCacheDtype)
