"""The operator <-> runtime contract: what ``GET /v1/status`` returns, what ``POST /v1/drain``
takes and answers, and the JSON notices a live session receives.

Both sides import these models: the runtime to produce the JSON, the operator's runtime
client to read it. Field names are snake_case here and camelCase on the wire, as in the
VoiceAgentPool API. Unknown fields are ignored when reading, so an older operator can read a
newer runtime's status.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from voicefleet import constants

# The longest drain a caller may ask for: a day. Kubernetes grace periods are far shorter;
# the bound only keeps a typo from pinning a pod for a year.
MAX_DRAIN_SECONDS = 86_400


class ContractModel(BaseModel):
    """Base of the contract's objects: camelCase on the wire, tolerant of new fields."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The object as JSON-ready camelCase data."""
        return self.model_dump(by_alias=True, mode="json")


class SessionCounts(ContractModel):
    active: int = Field(ge=0, description="Conversations live now.")
    capacity: int = Field(ge=0, description="Session slots of this process (--max-sessions).")


class FrameMs(ContractModel):
    """Duration of one batched step (codec encode, model step, codec decode) over recent frames."""

    p50: float = Field(ge=0)
    p95: float = Field(ge=0)


class ModelInfo(ContractModel):
    backend: str = Field(description="tiny | moshi | hertz-dev | hertz-tiny")
    name: str = Field(description="What was loaded: a weights path, a hub id, or 'random'.")
    variant: str = Field(description="bf16 | int8 | fp32")
    kv_cache_dtype: str = Field(
        default=constants.KV_CACHE_BF16,
        description="How the KV cache is stored: bf16 | fp8 (--kv-cache-dtype).",
    )
    context_steps: int = Field(ge=1, description="KV-cache length per session, in frames.")
    frame_seconds: float | None = Field(
        default=None, gt=0, description="One frame (one step): 0.08 for Moshi, 0.125 for Hertz-dev."
    )
    max_session_seconds: int = Field(ge=1)
    device: str
    loaded: bool
    load_seconds: float | None = None


class GpuInfo(ContractModel):
    """The GPU as NVML sees it; ``available`` is false on a machine without one."""

    available: bool
    name: str | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None


class RuntimeStatus(ContractModel):
    """``GET /v1/status``."""

    sessions: SessionCounts
    draining: bool
    ready: bool
    frame_ms: FrameMs
    late_frames: int = Field(ge=0, description="Steps that finished after their frame's slot.")
    model: ModelInfo
    gpu: GpuInfo
    drain_deadline_seconds: float | None = Field(
        default=None, description="Seconds left before live sessions are closed, while draining."
    )


class DrainRequest(ContractModel):
    """``POST /v1/drain`` body. Idempotent; a later call may shorten the deadline."""

    deadline_seconds: int = Field(ge=0, le=MAX_DRAIN_SECONDS)
    reason: str = Field(default="", max_length=256)


class DrainResponse(ContractModel):
    draining: bool
    deadline_seconds: float = Field(ge=0, description="Seconds left until the deadline.")
    active: int = Field(ge=0)


class DrainNotice(ContractModel):
    """Sent to every live session when a drain starts (Moshi: 0x04 metadata; PCM: text)."""

    type: Literal["drain"] = "drain"
    deadline_seconds: int = Field(ge=0)
    reconnect: str | None = None
    reason: str = ""


class SessionLimitNotice(ContractModel):
    """Sent right before a session is closed at ``maxSessionSeconds``."""

    type: Literal["session_limit"] = "session_limit"
    max_session_seconds: int = Field(ge=1)


class SessionInfo(ContractModel):
    """Sent once after the handshake, so a client knows its limits and settings."""

    type: Literal["session"] = "session"
    session_id: str
    max_session_seconds: int
    sample_rate: int
    frame_ms: float
    sampling: dict[str, float]
