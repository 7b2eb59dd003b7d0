"""The gateway's settings, from ``voicefleet gateway``'s flags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewayConfig:
    backends: tuple[str, ...]
    host: str
    port: int
    queue_max: int
    queue_wait_seconds: float
    drain_seconds: float
    poll_seconds: float
    header_timeout_seconds: float
    # The pool token, for moving conversations off draining pods; None: no moves.
    token: str | None = None
