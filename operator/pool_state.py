"""What the operator remembers of one pool between reconciles, beyond what the cluster
shows: pure data, dropped with the pool (``Fleet.forget``).

Every field can be lost without harm (an operator restart loses it all): it only spaces
retries out and keeps one log line, event and condition per change of state instead of one
per pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

# Writes the API server refused (pod creates, the pool's other objects) are retried after
# 2, 4, 8 ... seconds, at most this long apart: quick enough to notice a raised quota, slow
# enough not to hammer admission.
CREATE_BACKOFF_FIRST_SECONDS: Final = 2.0
CREATE_BACKOFF_MAX_SECONDS: Final = 300.0


def _shape(message: str) -> str:
    return re.sub(r"\d+", "#", message)


@dataclass
class Refusals:
    """Refused writes: the API server's last word and when to try again."""

    message: str = ""
    failures: int = 0
    retry_at: float = 0.0
    generation: int = 0

    def failed(self, message: str, now: float, generation: int) -> bool:
        """Record a refusal; True when it says something new (log it, post an event). The
        same refusal with other numbers in it (a quota's usage, a pod's ordinal) is not
        new: it is the same cause."""
        new = _shape(message) != _shape(self.message)
        self.message = message
        self.failures += 1
        self.generation = generation
        delay = min(
            CREATE_BACKOFF_MAX_SECONDS, CREATE_BACKOFF_FIRST_SECONDS * 2 ** (self.failures - 1)
        )
        self.retry_at = now + delay
        return new

    def waiting(self, now: float, generation: int) -> bool:
        """True while writes should wait; a changed spec (a fix, perhaps) retries at once."""
        return bool(self.message) and generation == self.generation and now < self.retry_at

    def clear(self) -> bool:
        """Writes work again; True when they had been refused."""
        was = bool(self.message)
        self.message, self.failures, self.retry_at = "", 0, 0.0
        return was


@dataclass
class PoolState:
    """One pool's memory (see the module docstring)."""

    refused: Refusals = field(default_factory=Refusals)
    # Pod name -> why its drain call failed last; cleared when a call works.
    drain_failures: dict[str, str] = field(default_factory=dict)
    # Pod names taken by objects this pool does not own: never used, never touched.
    foreign_pod_names: set[str] = field(default_factory=set)
    # Objects of the pool's names that it does not own, as found when last ensured.
    object_conflicts: list[str] = field(default_factory=list)
    # The token Secret was found to be the pool's (pods are created only then).
    secret_owned: bool = True
    # Every conflict shown last (messages), to post an event only when they change.
    conflicts: tuple[str, ...] = ()
    # The mass-NotReady message last shown on this pool.
    nodes_not_ready: str | None = None
    # The kind of API failure reconciles of this pool last ran into (None: they work).
    api_trouble: str | None = None
