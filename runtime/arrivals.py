"""Conversations moved in and waiting for their caller's socket, by ticket.

An import answers with a ticket; the gateway then opens the conversation's protocol with
``?resume=<ticket>`` and the session takes the slot the import filled. A ticket is random
(it is the only thing that names the slot to a socket) and lives ``IMPORT_ATTACH_SECONDS``:
the supervisor releases a slot nobody attached to.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from voicefleet.runtime.limits import IMPORT_ATTACH_SECONDS
from voicefleet.runtime.slots import SlotHandle


@dataclass
class Arrival:
    handle: SlotHandle
    steps: int  # the conversation's length when it was imported
    expires: float  # time.monotonic()


class Arrivals:
    def __init__(self) -> None:
        self._waiting: dict[str, Arrival] = {}

    def add(self, handle: SlotHandle, steps: int, now: float) -> str:
        ticket = secrets.token_urlsafe(16)
        self._waiting[ticket] = Arrival(handle, steps, now + IMPORT_ATTACH_SECONDS)
        return ticket

    def peek(self, ticket: str) -> Arrival | None:
        return self._waiting.get(ticket)

    def renew(self, ticket: str, steps: int, now: float) -> None:
        """A newer state of the same conversation arrived (or its prefill finished)."""
        arrival = self._waiting.get(ticket)
        if arrival is not None:
            arrival.steps = steps
            arrival.expires = now + IMPORT_ATTACH_SECONDS

    def take(self, ticket: str) -> Arrival | None:
        return self._waiting.pop(ticket, None)

    def expired(self, now: float) -> list[SlotHandle]:
        gone = [ticket for ticket, arrival in self._waiting.items() if arrival.expires <= now]
        return [self._waiting.pop(ticket).handle for ticket in gone]
