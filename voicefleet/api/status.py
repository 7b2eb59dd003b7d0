"""The VoiceAgentPool status (voicefleet.dev/v1alpha1), written by the operator: the plan,
the replica counts, sessions and conditions. Rendered into the CRD with the spec
(``pool.py``); the same rules apply (camelCase on the wire, units in field names)."""

from __future__ import annotations

from pydantic import Field

from voicefleet import constants
from voicefleet.api.model import ApiModel


class PlanStatus(ApiModel):
    """The capacity plan: what the planner decided and why (same keys as `voicefleet plan`)."""

    density: constants.DensityModel = Field(
        default=constants.DensityModel.BATCHED,
        description="batched: all sessions of a pod share one model; replicated: one per session.",
    )
    gpu: str = Field(description="Short name of the GPU product planned for.")
    sessions_per_pod: int = Field(description="Conversations one pod holds.")
    limited_by: constants.LimitedBy = Field(
        description="What bounds sessionsPerPod: memory, compute or policy."
    )
    memory_limit: int = Field(description="Sessions per pod that fit in GPU memory.")
    compute_limit: int | None = Field(
        default=None, description="Sessions per pod that stay real-time; absent if unknown."
    )
    replicas: int = Field(description="Pods the pool runs.")
    on_demand_replicas: int = Field(description="Pods on on-demand nodes.")
    spot_replicas: int = Field(description="Pods on spot nodes.")
    session_capacity: int = Field(description="Conversations the pool holds: replicas x per pod.")
    cost_per_hour: float | None = Field(
        default=None, description="Price of the pool per hour; absent when a price is unknown."
    )
    cost_per_session_hour: float | None = Field(
        default=None, description="costPerHour divided by the session target."
    )
    per_session_gib: float = Field(description="GPU memory one conversation's state takes.")
    weights_gib: float = Field(description="GPU memory of the model weights.")
    frame_ms_at_capacity: float | None = Field(
        default=None,
        description="Predicted p95 step time of a full pod, in ms (real time: below the frame).",
    )
    frame_budget_ms: float = Field(description="One audio frame, in ms: the real-time budget.")
    kv_cache_dtype: constants.KvCacheDtype = Field(
        default=constants.KvCacheDtype.BF16,
        description="How the KV cache is stored (spec.model.kvCacheDtype): bf16 or fp8.",
    )
    estimate: bool = Field(
        description="True when the GPU or model profile was not measured, only estimated."
    )


class Condition(ApiModel):
    """A condition as in metav1.Condition."""

    type: str = Field(description="Ready, Progressing or Degraded.")
    status: constants.ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="What happened and what to change.")
    observed_generation: int | None = Field(
        default=None, description="The spec generation this condition was computed for."
    )
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )


class SessionsStatus(ApiModel):
    active: int = Field(default=0, description="Live conversations, summed from pod reports.")
    capacity: int = Field(default=0, description="Conversations the ready pods can hold.")


class GatewayPoolStatus(ApiModel):
    """The pool's gateway replicas, and what their relays counted."""

    replicas: int = Field(default=0, description="Gateway pods that exist.")
    ready_replicas: int = Field(default=0, description="Gateway pods ready for callers.")
    moved: int = Field(
        default=0,
        description=(
            "Conversations moved, with their context, off draining pods: the sum over the "
            "gateway replicas now running, each since it started (Prometheus keeps the "
            "history: voicefleet_gateway_conversations_moved_total)."
        ),
    )
    cut: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Conversations the platform ended, by reason (pod_drained: a move failed and the "
            "pod's deadline came; pod_lost, pod_error, gateway_shutdown), summed as moved."
        ),
    )


class VoiceAgentPoolStatus(ApiModel):
    """Observed state of the pool, written by the operator."""

    observed_generation: int | None = Field(
        default=None, description="The spec generation the status reflects."
    )
    plan: PlanStatus | None = Field(default=None, description="The capacity plan.")
    replicas: int = Field(default=0, description="Pods that exist.")
    ready_replicas: int = Field(default=0, description="Pods ready for conversations.")
    starting_replicas: int = Field(default=0, description="Pods not ready yet.")
    draining_replicas: int = Field(default=0, description="Pods draining live conversations.")
    spot_replicas: int = Field(default=0, description="Pods on spot nodes.")
    on_demand_replicas: int = Field(default=0, description="Pods on on-demand nodes.")
    sessions: SessionsStatus = Field(
        default_factory=SessionsStatus, description="Live conversations and capacity."
    )
    gateway: GatewayPoolStatus | None = Field(
        default=None, description="The session gateway, when the pool runs one."
    )
    selector: str | None = Field(
        default=None, description="Label selector of the pool's pods (for the scale subresource)."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing and Degraded, with reasons."
    )
