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
    # NAME:PORT whose addresses are the backends (a pool's headless Service), or None: the
    # fixed ``backends``.
    backends_dns: str | None = None
    # The operator sends the backends (PUT /v1/backends, signed with the token).
    backends_pushed: bool = False
