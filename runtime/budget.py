"""A session's input budget: how many seconds of audio (and message cost) its caller may send
ahead of real time. One caller sending faster than it speaks must never cost another
caller's step its time, so what does not fit is dropped before any work is done on it."""

from __future__ import annotations

from voicefleet.runtime.limits import INPUT_FLOOD_SECONDS, INPUT_RATE_SLACK


class InputBudget:
    """A token bucket in seconds: refilled at (a little over) real time, holding at most
    ``burst_seconds``. ``dropped_seconds`` tallies what was refused; past
    ``flood_seconds`` the caller is flooding and its session is ended."""

    def __init__(
        self,
        burst_seconds: float,
        now: float,
        *,
        rate: float = INPUT_RATE_SLACK,
        flood_seconds: float = INPUT_FLOOD_SECONDS,
    ) -> None:
        self.burst_seconds = burst_seconds
        self.rate = rate
        self.flood_seconds = flood_seconds
        self.dropped_seconds = 0.0
        self._tokens = burst_seconds
        self._at = now

    def admit(self, seconds: float, now: float) -> bool:
        """Take ``seconds`` if they fit; else refuse them (and count them as dropped)."""
        self._tokens = min(self.burst_seconds, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if seconds <= self._tokens:
            self._tokens -= seconds
            return True
        self.dropped_seconds += seconds
        return False

    @property
    def flooding(self) -> bool:
        return self.dropped_seconds > self.flood_seconds
