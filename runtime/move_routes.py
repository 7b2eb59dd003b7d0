"""HTTP endpoints that move a live conversation between pods, for the gateway (pool token).

1. ``POST /v1/sessions/{session}/export`` on the old pod: the conversation's state as bytes
   (``SlotState``), taken between two frames; the session keeps running.
2. ``POST /v1/sessions/import`` on the new pod, that body: claims a free slot, loads the
   state and replays its history there in chunks between frames; answers once the slot can
   step, with a ticket. ``?into=<ticket>`` sends a newer state of the same conversation to
   the slot it already fills: only the steps since are replayed (the switch's catch-up).
3. The gateway opens the same protocol on the new pod with ``?resume=<ticket>`` (routes.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from voicefleet import constants
from voicefleet.runtime.auth import pool_token_refusal
from voicefleet.runtime.backends.slot_state import SlotState, SlotStateError
from voicefleet.runtime.hub import Hub
from voicefleet.runtime.limits import (
    IMPORT_TIMEOUT_SECONDS,
    MAX_STATE_BYTES,
    STATE_BODY_TIMEOUT_SECONDS,
)

WITHOUT_TOKEN = "conversations cannot be moved"


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def export_session(request: web.Request, hub: Hub) -> web.Response:
    refusal = pool_token_refusal(request, hub.config.token, WITHOUT_TOKEN)
    if refusal is not None:
        return refusal
    wanted = request.match_info["session"]
    session = next((s for s in hub.sessions.values() if str(s.id) == wanted), None)
    if session is None or hub.engine is None:
        return _error(f"no live session {wanted} on this pod", 404)
    try:
        state = await asyncio.wait_for(
            asyncio.wrap_future(hub.engine.export_state(session.handle)),
            IMPORT_TIMEOUT_SECONDS,
        )
    except SlotStateError as exc:
        return _error(str(exc), 409)
    # Hashing up to 16 MiB takes tens of milliseconds: off the loop that carries the audio.
    body = await asyncio.to_thread(state.to_bytes)
    return web.Response(
        body=body,
        content_type=constants.CONTENT_TYPE_SLOT_STATE,
        headers={constants.HEADER_STEPS: str(state.meta.get("steps", ""))},
    )


async def _read_state(request: web.Request) -> SlotState | web.Response:
    length = request.content_length
    if length is None:
        return _error("send the state with a Content-Length", 411)
    if length > MAX_STATE_BYTES:
        return _error(f"a slot state is at most {MAX_STATE_BYTES} bytes, not {length}", 413)
    try:
        data = await asyncio.wait_for(
            request.content.readexactly(length), STATE_BODY_TIMEOUT_SECONDS
        )
    except (TimeoutError, asyncio.IncompleteReadError):
        return _error(f"state body not sent within {STATE_BODY_TIMEOUT_SECONDS:g} s", 408)
    try:
        return await asyncio.to_thread(SlotState.from_bytes, data)
    except SlotStateError as exc:
        return _error(str(exc), 400)


async def import_session(request: web.Request, hub: Hub) -> web.Response:
    refusal = pool_token_refusal(request, hub.config.token, WITHOUT_TOKEN)
    if refusal is not None:
        return refusal
    if hub.failure is not None or hub.engine is None or not hub.loaded or hub.drain.draining:
        return _error("this pod takes no conversations now (loading, draining or failed)", 503)
    state = await _read_state(request)
    if isinstance(state, web.Response):
        return state
    into_ticket = request.query.get(constants.QUERY_INTO)
    into = hub.arrivals.peek(into_ticket) if into_ticket is not None else None
    if into_ticket is not None and into is None:
        return _error(f"no imported conversation waits under ticket {into_ticket}", 409)
    try:
        claimed = hub.engine.import_state(state, into=into.handle if into else None)
    except SlotStateError as exc:
        return _error(str(exc), 409 if into else 400)
    if claimed is None:
        return _error("no free session slot on this pod", 503)
    handle, ready = claimed
    steps = int(state.meta.get("steps", 0))
    # Registered at once, so a gateway that goes away mid-import does not hold the slot.
    ticket = into_ticket or hub.arrivals.add(handle, steps, time.monotonic())
    try:
        replayed = await asyncio.wait_for(asyncio.wrap_future(ready), IMPORT_TIMEOUT_SECONDS)
    except SlotStateError as exc:
        hub.arrivals.take(ticket)
        return _error(str(exc), 400)
    except asyncio.CancelledError:
        if not ready.cancelled():
            raise
        return _error("the import was superseded by a newer state or released", 409)
    except TimeoutError:
        if hub.arrivals.take(ticket) is not None:
            hub.unclaim(handle)
        return _error(f"the import took longer than {IMPORT_TIMEOUT_SECONDS:g} s", 504)
    hub.arrivals.renew(ticket, steps, time.monotonic())
    answer: dict[str, Any] = {"ticket": ticket, "steps": steps, "replayedSteps": replayed}
    return web.json_response(answer)


def add_move_routes(app: web.Application, hub_key: web.AppKey[Hub]) -> None:
    async def export_route(request: web.Request) -> web.Response:
        return await export_session(request, request.app[hub_key])

    async def import_route(request: web.Request) -> web.Response:
        return await import_session(request, request.app[hub_key])

    app.router.add_post(constants.PATH_SESSION_EXPORT, export_route)
    app.router.add_post(constants.PATH_SESSION_IMPORT, import_route)
