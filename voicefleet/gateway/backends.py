"""The gateway's view of its backends: what each one's ``GET /v1/status`` last said, adjusted
at once by what the gateway itself did since (a conversation admitted or ended, an upgrade
refused), and which backend a new conversation should try first.

Polling is one task per backend: every ``--poll-seconds``, or sooner when admission asks
(a refusal the books did not predict). A backend that does not answer in time, answers badly,
refuses a connection or is still loading its model is out of rotation until it answers
again, loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from pydantic import ValidationError

from voicefleet import constants
from voicefleet.api.runtime import RuntimeStatus
from voicefleet.gateway.limits import POLL_TIMEOUT_SECONDS, REPOLL_SECONDS
from voicefleet.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

# Why a backend did not take a conversation (the label of backend_refusals_total).
REFUSED_UNAVAILABLE = "unavailable"  # HTTP 503: full, draining, loading or busy
REFUSED_UNREACHABLE = "unreachable"  # no connection, a reset or a time-out
REFUSED_BAD_ANSWER = "bad_answer"  # any other answer to the upgrade


@dataclass
class Backend:
    url: str  # http://host:port
    in_rotation: bool = False
    loaded: bool = False
    draining: bool = False
    capacity: int = 0
    # Sessions the backend holds, as last polled, plus those the gateway admitted since.
    active: int = 0
    # Conversations this gateway relays to it now.
    relaying: int = 0
    last_error: str | None = None
    _poke: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.active)

    def admissible(self) -> bool:
        return self.in_rotation and self.loaded and not self.draining and self.free > 0


class BackendPool:
    def __init__(self, metrics: GatewayMetrics, poll_seconds: float) -> None:
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.backends: dict[str, Backend] = {}
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        # Called whenever a backend may have a slot for someone waiting.
        self.on_slot: Callable[[], None] = lambda: None

    def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def publish(self, urls: frozenset[str]) -> None:
        """The discovery source's new set: poll the new ones, forget the gone ones (their
        live conversations keep their own reference until they end)."""
        for url in urls - self.backends.keys():
            backend = Backend(url)
            self.backends[url] = backend
            self._pollers[url] = asyncio.create_task(self._poll_forever(backend), name=url)
        for url in self.backends.keys() - urls:
            del self.backends[url]
            self._pollers.pop(url).cancel()
        self._count_rotation()

    async def stop(self) -> None:
        for poller in self._pollers.values():
            poller.cancel()
        for poller in self._pollers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    # --- choosing -----------------------------------------------------------------------------
    def candidates(self) -> list[Backend]:
        """Backends to offer a new conversation, best first: the most free slots, then the
        fewest active conversations (the least loaded frame clock)."""
        ready = [b for b in self.backends.values() if b.admissible()]
        return sorted(ready, key=lambda b: (-b.free, b.active))

    def any_in_rotation(self) -> bool:
        return any(b.in_rotation for b in self.backends.values())

    # --- what the gateway did -------------------------------------------------------------------
    def admitted(self, backend: Backend) -> None:
        backend.active += 1
        backend.relaying += 1
        self.metrics.relayed.labels(backend.url).inc()
        self.metrics.active.labels(backend.url).set(backend.relaying)

    def released(self, backend: Backend) -> None:
        """A relayed conversation ended: its slot is free now, not at the next poll."""
        backend.active = max(0, backend.active - 1)
        backend.relaying -= 1
        self.metrics.active.labels(backend.url).set(backend.relaying)
        self.on_slot()

    def refused(self, backend: Backend, reason: str, detail: str) -> None:
        """Mark a backend that did not take a conversation, and ask it again soon."""
        self.metrics.backend_refusals.labels(backend.url, reason).inc()
        backend.last_error = detail
        if reason == REFUSED_UNREACHABLE:
            self._out_of_rotation(backend, detail)
        else:
            # Full, draining, loading or busy: its next answer, soon, says which. Until then
            # it is offered nobody.
            backend.active = backend.capacity
            asyncio.get_running_loop().call_later(REPOLL_SECONDS, backend._poke.set)

    # --- polling -----------------------------------------------------------------------------
    async def _poll_forever(self, backend: Backend) -> None:
        while True:
            await self._poll(backend)
            backend._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(backend._poke.wait(), self.poll_seconds)

    async def _poll(self, backend: Backend) -> None:
        assert self._session is not None
        url = backend.url + constants.PATH_STATUS
        try:
            async with self._session.get(
                url, timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT_SECONDS)
            ) as answer:
                if answer.status != 200:
                    self._out_of_rotation(backend, f"{url} answered HTTP {answer.status}")
                    return
                status = RuntimeStatus.model_validate_json(await answer.read())
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._out_of_rotation(backend, f"{url}: {exc!r}")
            return
        except ValidationError as exc:
            self._out_of_rotation(backend, f"{url} answered a status it cannot read: {exc}")
            return
        backend.loaded = status.model.loaded
        if not backend.loaded:
            # Up, but no conversation can start there yet.
            self._out_of_rotation(backend, f"{backend.url} is still loading its model")
            return
        if not backend.in_rotation:
            log.info("backend %s in rotation", backend.url)
        backend.in_rotation = True
        backend.last_error = None
        backend.draining = status.draining
        backend.capacity = status.sessions.capacity
        backend.active = status.sessions.active
        self._count_rotation()
        if backend.admissible():
            self.on_slot()

    def _out_of_rotation(self, backend: Backend, why: str) -> None:
        if backend.in_rotation:
            log.warning("backend %s out of rotation: %s", backend.url, why)
        backend.in_rotation = False
        backend.last_error = why
        self._count_rotation()

    def _count_rotation(self) -> None:
        self.metrics.backends_in_rotation.set(sum(b.in_rotation for b in self.backends.values()))
