"""The VoiceAgentPool API (voicefleet.dev/v1alpha1): the spec as pydantic models (the status
is in ``status.py``).

These models are the single source of the CRD (``voicefleet crd`` renders them to
``crds/``): field descriptions become ``kubectl explain`` text, bounds and enums become the
OpenAPI schema, and each model's ``RULES`` become ``x-kubernetes-validations``. The same
models validate a manifest in ``voicefleet plan``, so the API server and the planner reject
the same inputs with the same words.

Field names are snake_case here and camelCase on the wire (units in the name: ``...Seconds``,
``...Percent``, ``...MiB``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from voicefleet import catalog, constants
from voicefleet.api.formats import ObjectName
from voicefleet.api.model import ApiModel, RuledModel
from voicefleet.api.model_spec import ModelSpec
from voicefleet.api.names import NAME_RULES
from voicefleet.api.rules import Rule
from voicefleet.api.status import VoiceAgentPoolStatus
from voicefleet.api.template import PodTemplate

GPU_AUTO = "auto"
DEFAULT_GPU = "NVIDIA-H100-80GB-HBM3"


class SessionsSpec(ApiModel):
    """How many concurrent conversations the pool must hold, and for how long each."""

    target: int = Field(
        default=1,
        ge=0,
        le=1_000_000,
        description=(
            "Concurrent conversations the pool must hold. `kubectl scale vap/NAME "
            "--replicas=N` sets this field."
        ),
    )
    max_session_seconds: int = Field(
        default=240,
        ge=1,
        le=3600,
        description=(
            "Hard cap on one conversation, in seconds. It sizes the per-session cache, so "
            "shorter caps fit more conversations on a GPU. Bounded by the model's context "
            "(240 s for moshi, 256 s for hertz-dev)."
        ),
    )
    headroom_percent: int = Field(
        default=15,
        ge=0,
        le=400,
        description="Extra capacity above target, in percent, for bursts and rollouts.",
    )
    max_per_pod: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description=(
            "Policy cap on conversations per pod, below what memory and compute allow "
            "(e.g. to keep latency low or limit the blast radius of one pod)."
        ),
    )
    max_replicas: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description=(
            "Most pods the pool may run. A target that needs more is refused with a "
            "message, and nothing already running is removed."
        ),
    )


class GpuSpec(ApiModel):
    """Which GPUs the pool's pods run on."""

    product: str = Field(
        default=DEFAULT_GPU,
        min_length=1,
        max_length=128,
        description=(
            "GPU product as in the node label nvidia.com/gpu.product (e.g. "
            "NVIDIA-H100-80GB-HBM3), or auto to use what the pool's nodes report."
        ),
    )
    gpus_per_node: int = Field(
        default=1,
        ge=1,
        le=16,
        description=(
            "GPUs on one node. Each pod uses one GPU, so this many pods can share a node; "
            "spot capacity is sized so losing one whole spot node still covers the target."
        ),
    )
    memory_mib: int | None = Field(
        default=None,
        ge=1024,
        le=4_194_304,
        description=(
            "GPU memory in MiB, for a product the catalog does not know (as in the node "
            "label nvidia.com/gpu.memory)."
        ),
    )
    memory_bandwidth_gbps: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description=(
            "GPU memory bandwidth in GB/s, for a product the catalog does not know; without "
            "it the compute limit of such a GPU is not estimated."
        ),
    )


class InterruptionSpec(ApiModel):
    """What happens to live conversations when a node is about to go away."""

    drain_seconds: int = Field(
        default=100,
        ge=0,
        le=3600,
        description=(
            "Seconds live conversations get to finish after an interruption notice or a "
            "scale-in before they are closed (AWS gives 120 s of spot notice, GKE and AKS 30 s)."
        ),
    )


class PricingSpec(ApiModel):
    """Where GPU prices come from; the first of these that names a price wins."""

    on_demand_per_gpu_hour: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Price of one on-demand GPU-hour, in the catalog's currency (USD).",
    )
    spot_per_gpu_hour: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Price of one spot GPU-hour, in the catalog's currency (USD).",
    )
    config_map_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=253,
        description=(
            "A ConfigMap in the pool's namespace whose key prices.yaml overrides the default "
            "price table (same shape as the catalog's prices.yaml)."
        ),
    )


class CapacitySpec(ApiModel):
    """How pods are split between on-demand and spot capacity."""

    strategy: constants.Strategy = Field(
        default=constants.Strategy.ON_DEMAND,
        description=(
            "on-demand: every pod on on-demand nodes. spot-first: onDemandBase pods on "
            "on-demand nodes, spotPercentage of the rest on spot. spot-only: every pod on spot."
        ),
    )
    on_demand_base: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Pods that always run on on-demand nodes, whatever the strategy.",
    )
    spot_percentage: int = Field(
        default=80,
        ge=0,
        le=100,
        description=(
            "Share of the pods above onDemandBase that run on spot nodes, in percent "
            "(spot-first only)."
        ),
    )
    interruption: InterruptionSpec = Field(
        default_factory=InterruptionSpec,
        description="What happens to live conversations when a node is about to go away.",
    )
    pricing: PricingSpec = Field(
        default_factory=PricingSpec,
        description="Where GPU prices come from; the first of these that names a price wins.",
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = (
        Rule["CapacitySpec"](
            cel="self.strategy != 'spot-only' || self.onDemandBase == 0",
            message=(
                "spot-only pools run no on-demand pods: set onDemandBase to 0 "
                "or use strategy spot-first"
            ),
            violated=lambda c: c.strategy == constants.Strategy.SPOT_ONLY and c.on_demand_base > 0,
            field_path=".onDemandBase",
        ),
    )


class RuntimeSpec(ApiModel):
    """The model server the pods run."""

    image: str = Field(
        default="",
        max_length=512,
        description=(
            "Container image of the voicefleet runtime. Empty: the runtime image of the "
            "operator's own version (its --runtime-image), so an operator upgrade rolls the "
            "pods of every pool that does not pin one."
        ),
    )
    service_account_name: ObjectName | None = Field(
        default=None,
        description=(
            "A ServiceAccount of the pool's namespace to run the pods as (e.g. for workload "
            "identity to reach weights in a bucket); its token is mounted only then. Without "
            "it the pods mount no ServiceAccount token."
        ),
    )


class GatewaySpec(ApiModel):
    """The session gateway in front of the pool's pods (CPU only, from the operator's image)."""

    enabled: bool = Field(
        default=True,
        description=(
            "Run the gateway: callers of the pool's Service reach it, it admits each "
            "conversation to a pod with a free slot, queues callers while the pool is full, "
            "and moves live conversations off draining pods. false: the Service selects the "
            "runtime pods directly, and a draining pod's callers are told to reconnect."
        ),
    )
    replicas: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Gateway pods; at least 2, so one can be replaced while the other relays.",
    )
    capacity_type: Literal["on-demand", "any"] = Field(
        default="on-demand",
        description=(
            "Nodes the gateway may run on: on-demand (default; a spot reclaim would cut every "
            "conversation it relays) or any."
        ),
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = (
        Rule(
            cel="!self.enabled || self.replicas >= 2",
            message=(
                "gateway.replicas must be at least 2 while the gateway is enabled: a lone "
                "replica cut every conversation whenever it is replaced"
            ),
            violated=lambda g: g.enabled and g.replicas < 2,
            field_path=".replicas",
        ),
    )


def _context_rules() -> tuple[Rule[VoiceAgentPoolSpec], ...]:
    rules: list[Rule[VoiceAgentPoolSpec]] = []
    for name, profile in sorted(catalog.models().items()):
        limit = profile.max_session_seconds

        def violated(s: VoiceAgentPoolSpec, n: str = name, lim: int = limit) -> bool:
            return s.model.name == n and s.sessions.max_session_seconds > lim

        rules.append(
            Rule(
                cel=(f"self.model.name != '{name}' || self.sessions.maxSessionSeconds <= {limit}"),
                message=(
                    f"sessions.maxSessionSeconds must be at most {limit} for {name} "
                    f"(its context is {profile.context_steps} steps); lower it"
                ),
                violated=violated,
                field_path=".sessions.maxSessionSeconds",
            )
        )
    return tuple(rules)


class VoiceAgentPoolSpec(ApiModel):
    """Desired state of a pool of voice-agent pods."""

    model: ModelSpec = Field(
        default_factory=ModelSpec, description="Which speech-to-speech model the pool serves."
    )
    sessions: SessionsSpec = Field(
        default_factory=SessionsSpec,
        description="How many concurrent conversations the pool must hold, and for how long.",
    )
    gpu: GpuSpec = Field(default_factory=GpuSpec, description="Which GPUs the pods run on.")
    capacity: CapacitySpec = Field(
        default_factory=CapacitySpec,
        description="How pods are split between on-demand and spot capacity.",
    )
    runtime: RuntimeSpec = Field(
        default_factory=RuntimeSpec, description="The model server the pods run."
    )
    gateway: GatewaySpec = Field(
        default_factory=GatewaySpec,
        description="The session gateway in front of the pool's pods.",
    )
    template: PodTemplate = Field(
        default_factory=PodTemplate,
        description=(
            "What the pool may change in its pods, merged over what the operator builds: "
            "labels and annotations, scheduling (nodeSelector, affinity, tolerations, "
            "topologySpreadConstraints, priorityClassName, runtimeClassName), "
            "imagePullSecrets, and the runtime container's resources and env. Anything that "
            "would grant more than creating those pods in this namespace is refused."
        ),
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = ()  # filled below


VoiceAgentPoolSpec.RULES = _context_rules()


class ObjectMeta(BaseModel):
    """The part of metadata the planner reads; everything else passes through."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    namespace: str | None = None


class VoiceAgentPool(RuledModel):
    """A whole VoiceAgentPool manifest."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    RULES: ClassVar[tuple[Rule[Any], ...]] = NAME_RULES
    api_version: Literal["voicefleet.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["VoiceAgentPool"]
    metadata: ObjectMeta
    spec: VoiceAgentPoolSpec = Field(default_factory=VoiceAgentPoolSpec)
    status: VoiceAgentPoolStatus | None = None
