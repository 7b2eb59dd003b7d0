"""What the gateway's ``GET /v1/status`` returns (camelCase on the wire, as the runtime's):
the operator's scaler and a person with curl read the same JSON."""

from __future__ import annotations

from pydantic import Field

from voicefleet.api.runtime import ContractModel


class BackendView(ContractModel):
    url: str
    in_rotation: bool = Field(description="It answered its last status poll.")
    draining: bool
    active: int = Field(ge=0, description="Sessions it holds (its poll, plus admissions since).")
    capacity: int = Field(ge=0)
    relaying: int = Field(ge=0, description="Conversations this gateway relays to it now.")
    last_error: str | None = None


class QueueView(ContractModel):
    length: int = Field(ge=0, description="Callers waiting for a slot now.")
    max: int = Field(ge=0)
    wait_seconds: float = Field(ge=0)


class BackendsPush(ContractModel):
    """``PUT /v1/backends``: the pool's runtime pods, from the operator (signed, see
    ``voicefleet.api.signature``). The whole set each time; the gateway keeps conversations
    on a pod that left it until they end, and admits none there."""

    backends: list[str] = Field(
        max_length=10_000, description="Base URLs of the runtime pods, http://host:port."
    )


class GatewayStatus(ContractModel):
    ready: bool
    draining: bool
    drain_deadline_seconds: float | None = None
    active: int = Field(ge=0, description="Conversations relayed now.")
    queue: QueueView
    backends: list[BackendView]
    moved: int = Field(
        default=0,
        ge=0,
        description="Conversations moved to another pod since this gateway started.",
    )
    cut: dict[str, int] = Field(
        default_factory=dict,
        description="Conversations the platform ended since this gateway started, by reason "
        "(a pod drained or lost with the conversation still on it, this gateway's shutdown).",
    )
