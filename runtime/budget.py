"""A token bucket, for the runtime's rate bounds: a session's input (seconds of audio its caller
may send ahead of real time) and the pod's session starts (new callers a second). What does
not fit is refused before any work is done on it, and tallied."""

from __future__ import annotations


class TokenBucket:
    """Refilled at ``rate`` a second, holding at most ``capacity``; ``refused`` tallies what
    did not fit."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.refused = 0.0
        self._tokens = capacity
        self._at = now

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` if it fits; else refuse it (and count it)."""
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if amount <= self._tokens:
            self._tokens -= amount
            return True
        self.refused += amount
        return False
