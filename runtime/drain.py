"""Drain bookkeeping: whether a drain is on, its deadline and reason, and what ends it.

SIGTERM and ``POST /v1/drain`` start the same drain; they differ only in what happens once
the sessions are gone: after SIGTERM the process exits 0, after ``/v1/drain`` it stays up and
unready (an exit would let the kubelet restart it as a fresh, ready pod).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

SIGNAL = "signal"
API = "api"


@dataclass
class DrainState:
    draining: bool = False
    deadline: float = 0.0  # time.monotonic() at which live sessions are closed
    reason: str = ""
    exit_when_empty: bool = False

    def start(self, deadline_seconds: float, reason: str, source: str) -> bool:
        """Begin or tighten the drain; True when the deadline or state changed.

        A later call never extends the deadline: the first caller's promise to the pod's
        owner (the grace period, the spot notice) still holds."""
        deadline = time.monotonic() + max(0.0, deadline_seconds)
        changed = not self.draining or deadline < self.deadline
        if not self.draining:
            self.draining = True
            self.deadline = deadline
            self.reason = reason
        elif deadline < self.deadline:
            self.deadline = deadline
            self.reason = reason or self.reason
        if source == SIGNAL and not self.exit_when_empty:
            self.exit_when_empty = True
            changed = True
        return changed

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic()) if self.draining else 0.0
