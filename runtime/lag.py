"""How far behind a caller reads, measured with WebSocket pings.

A pong comes back only after the caller has read everything sent before its ping, so the
round trip is how stale the audio the caller hears is: our socket buffers, the network, the
caller's own buffers and its reading, all in one number. aiohttp's heartbeat cannot tell
this: it pings only when the caller has sent nothing, and callers stream all the time.
"""

from __future__ import annotations

import math

from voicefleet.runtime.limits import LAG_PROBE_INTERVAL_SECONDS


class LagProbe:
    """One ping in flight at a time; its payload is a counter, so a caller's own pongs are
    not mistaken for answers."""

    def __init__(self, interval: float = LAG_PROBE_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.last_lag: float | None = None
        self._count = 0
        self._payload = b""
        self._sent_at: float | None = None
        self._next_at = math.inf  # no probes until start()

    def start(self, now: float) -> None:
        self._next_at = now + self.interval

    def due(self, now: float) -> bytes | None:
        """The payload of the next ping to send, when one is due; the clock starts now."""
        if self._sent_at is not None or now < self._next_at:
            return None
        self._count += 1
        self._payload = self._count.to_bytes(8, "big")
        self._sent_at = now
        return self._payload

    def answered(self, payload: bytes, now: float) -> float | None:
        """The lag in seconds when ``payload`` answers the ping in flight, else None."""
        if self._sent_at is None or payload != self._payload:
            return None
        self.last_lag = now - self._sent_at
        self._sent_at = None
        self._next_at = now + self.interval
        return self.last_lag

    def behind(self, now: float) -> float:
        """How long the ping in flight has waited for its pong (0 with none in flight)."""
        return 0.0 if self._sent_at is None else now - self._sent_at
