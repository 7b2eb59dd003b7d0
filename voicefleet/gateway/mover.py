"""Moving a live conversation to another pod when its pod drains, so the caller's socket
never closes (issue 15, item 2; the runtime's half is ``runtime/move_routes.py``).

1. Export the conversation's state from the old pod; it keeps talking meanwhile.
2. Import it on the pod with the most free slots: that pod replays the history in chunks
   between its own frames and answers with a ticket once the slot is ready.
3. The switch: the caller's messages are held, a final export from the old pod goes to the
   same slot (only the steps since the first are replayed), the relay opens the same
   protocol on the new pod with the ticket, hands it the held messages and drops whatever
   the old pod still sends. The old session is closed, which frees its slot.

The old pod steps the conversation on silence from the hold to the switch, and what it says
until the switch still reaches the caller (so the caller hears no gap); the new pod continues
from the final export's step, so the frames the old pod made after it are heard from the old
pod only. The held messages reach the new pod at once and it takes one a frame: the caller is
heard that much later from then on (the whole hold: ``move_switch_seconds``). If anything
fails before the switch the conversation stays where it was, and the caller gets the pod's
own drain notice, as without a gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import aiohttp

from voicefleet import constants
from voicefleet.gateway.backends import Backend, BackendPool
from voicefleet.gateway.limits import CUT_OVER_SECONDS, MOVE_CALL_SECONDS
from voicefleet.gateway.metrics import GatewayMetrics
from voicefleet.gateway.relay import Relay
from voicefleet.gateway.upstream import Target, Upstream, connect
from voicefleet.runtime.endings import CLOSE_NORMAL
from voicefleet.runtime.limits import CLOSE_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

# Why a conversation could not be moved (the label of move_failures_total).
FAILED_NO_SLOT = "no_slot"
FAILED_EXPORT = "export"
FAILED_IMPORT = "import"
FAILED_RESUME = "resume"
MOVED_REASON = b"moved to another pod"
HTTP_UNAVAILABLE = 503


class MoveFailed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Exported:
    body: bytes
    steps: str


class Mover:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        pool: BackendPool,
        metrics: GatewayMetrics,
        token: str,
    ) -> None:
        self.http = http
        self.pool = pool
        self.metrics = metrics
        self.moved = 0  # for GET /v1/status (the counter above is for scrapers)
        self._auth = {"Authorization": f"Bearer {token}"}

    async def move(self, relay: Relay, target: Target) -> None:
        """Move ``relay``'s conversation off its pod; on failure it stays, and MoveFailed
        says why."""
        old = relay.upstream
        assert old is not None
        started = time.monotonic()
        relay.moving = True
        try:
            first = await self._export(old)
            backend, ticket = await self._import_anywhere(first, avoid=old.backend)
            relay.hold()
            held_from = time.monotonic()  # the caller's audio waits from here to the switch
            try:
                final = await self._export(old)
                await self._import(backend, final, into=ticket)
                new = await self._resume(backend, target, ticket)
            except BaseException:
                await relay.release()
                raise
            retired = await relay.switch(new)
        finally:
            relay.moving = False
        self.pool.admitted(backend)
        self.pool.released(old.backend)
        took, held = time.monotonic() - started, time.monotonic() - held_from
        self.metrics.moved.inc()
        self.moved += 1
        self.metrics.move_seconds.observe(took)
        self.metrics.switch_seconds.observe(held)
        # The caller's address names the conversation, so a move can be traced to its caller.
        log.info(
            "moved the conversation of %s from %s to %s at step %s in %.3f s (switch %.3f s)",
            _address(relay),
            old.backend.url,
            backend.url,
            final.steps,
            took,
            held,
        )
        # The old pod keeps the caller's ear until the new one speaks (make before break).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(relay.cut_over.wait(), CUT_OVER_SECONDS)
        relay.force_cut_over()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(
                retired.ws.close(code=CLOSE_NORMAL, message=MOVED_REASON), CLOSE_TIMEOUT_SECONDS
            )
        await relay.retire()

    async def _export(self, upstream: Upstream) -> Exported:
        if upstream.session_id is None:
            raise MoveFailed(FAILED_EXPORT, f"{upstream.backend.url} named no session")
        path = constants.PATH_SESSION_EXPORT.format(session=upstream.session_id)
        url = upstream.backend.url + path
        try:
            async with self.http.post(url, headers=self._auth, timeout=_timeout()) as answer:
                body = await answer.read()
                if answer.status != 200:
                    raise MoveFailed(FAILED_EXPORT, f"{url}: HTTP {answer.status} {body[:200]!r}")
                return Exported(body, answer.headers.get(constants.HEADER_STEPS, "?"))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise MoveFailed(FAILED_EXPORT, f"{url}: {exc!r}") from exc

    async def _import_anywhere(self, state: Exported, avoid: Backend) -> tuple[Backend, str]:
        """A ticket from the best backend that takes the conversation."""
        tried = []
        for backend in self.pool.candidates():
            if backend is avoid:
                continue
            backend.active += 1  # taken while the import runs, as admission does
            try:
                return backend, await self._import(backend, state)
            except MoveFailed as exc:
                tried.append(str(exc))
                if exc.reason == FAILED_NO_SLOT:
                    self.pool.refused(backend, "unavailable", str(exc))
            finally:
                backend.active -= 1
        raise MoveFailed(FAILED_NO_SLOT, "no other pod took it: " + ("; ".join(tried) or "none"))

    async def _import(self, backend: Backend, state: Exported, into: str | None = None) -> str:
        url = backend.url + constants.PATH_SESSION_IMPORT
        params = {constants.QUERY_INTO: into} if into else None
        headers = {**self._auth, "Content-Type": constants.CONTENT_TYPE_SLOT_STATE}
        try:
            async with self.http.post(
                url, data=state.body, params=params, headers=headers, timeout=_timeout()
            ) as answer:
                if answer.status != 200:
                    text = (await answer.read())[:200]
                    reason = FAILED_NO_SLOT if answer.status == HTTP_UNAVAILABLE else FAILED_IMPORT
                    raise MoveFailed(reason, f"{url}: HTTP {answer.status} {text!r}")
                ticket = (await answer.json())["ticket"]
        except (aiohttp.ClientError, OSError, TimeoutError, KeyError, ValueError) as exc:
            raise MoveFailed(FAILED_IMPORT, f"{url}: {exc!r}") from exc
        return str(ticket)

    async def _resume(self, backend: Backend, target: Target, ticket: str) -> Upstream:
        query = "&".join(q for q in (target.query, f"{constants.QUERY_RESUME}={ticket}") if q)
        outcome = await connect(self.http, backend, Target(target.path, query))
        if not isinstance(outcome, Upstream):
            raise MoveFailed(FAILED_RESUME, outcome.detail)
        return outcome


def _address(relay: Relay) -> str:
    peer = relay.transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "an unknown caller"


def _timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=MOVE_CALL_SECONDS)
