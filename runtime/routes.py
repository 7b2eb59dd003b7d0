"""HTTP routes of the one port: the two WebSocket protocols and the control endpoints.

Refusals happen before the upgrade, as plain HTTP 503 with Retry-After, so a load balancer or
client can try another pod without speaking WebSocket first.

WebSockets are set up for the session's own supervision (``sockets.py``, shared with the
gateway).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from voicefleet import constants, webpage
from voicefleet.api.runtime import DrainRequest, DrainResponse
from voicefleet.runtime.auth import pool_token_refusal
from voicefleet.runtime.backends.base import Sampling
from voicefleet.runtime.drain import API
from voicefleet.runtime.hub import (
    REFUSED_DRAINING,
    REFUSED_FAILED,
    REFUSED_FULL,
    REFUSED_LOADING,
    RETRY_AFTER_SECONDS,
    Hub,
    Refusal,
)
from voicefleet.runtime.limits import BODY_TIMEOUT_SECONDS
from voicefleet.runtime.move_routes import add_move_routes
from voicefleet.runtime.protocol import MAX_MESSAGE_BYTES, parse_sampling
from voicefleet.runtime.resample import SUPPORTED_RATES
from voicefleet.runtime.services import Services
from voicefleet.runtime.session import Connection, Session
from voicefleet.runtime.sockets import bound_buffers, caller_websocket
from voicefleet.runtime.ws_audio import AudioSession
from voicefleet.runtime.ws_moshi import MoshiSession
from voicefleet.runtime.ws_pcm import PcmSession

log = logging.getLogger(__name__)
HUB_KEY = web.AppKey("hub", Hub)
# aiohttp's own cap on one message; ours (MAX_MESSAGE_BYTES) is checked per protocol so the
# client gets a protocol error rather than a bare close.
WS_MAX_MSG_SIZE = 4 * MAX_MESSAGE_BYTES


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


def _refuse(refusal: Refusal) -> web.Response:
    return _json(
        {"error": refusal.message, "reason": refusal.reason},
        status=refusal.status,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


SessionFactory = Callable[[Services, Connection], Session]
# The reference server's names for its temperatures (its POST /set_temperature), taken per
# session from /audio's query string.
AUDIO_QUERY_NAMES = {
    "token_temp": "audio_temperature",
    "categorical_temp": "categorical_temperature",
    "gaussian_temp": "gaussian_temperature",
}


async def _serve(
    request: web.Request, factory: SessionFactory, sampling: Sampling | None = None
) -> Any:
    hub = request.app[HUB_KEY]
    elapsed = 0.0
    ticket = request.query.get(constants.QUERY_RESUME)
    if ticket is None:
        claim = hub.claim(sampling)
    else:
        # A conversation moved in from another pod: its slot is already loaded.
        arrival = hub.claim_arrival(ticket)
        if isinstance(arrival, Refusal):
            return _refuse(arrival)
        claim, steps = arrival
        elapsed = steps * hub.services().slots.frame.seconds
    if isinstance(claim, Refusal):
        return _refuse(claim)
    session_id = hub.next_session_id()
    ws = caller_websocket(WS_MAX_MSG_SIZE)
    # The gateway names the session by this id when it asks for its state.
    ws.headers[constants.HEADER_SESSION] = str(session_id)
    try:
        await ws.prepare(request)
    except ConnectionError:
        hub.unclaim(claim)
        hub.metrics.upgrades_aborted.inc()
        # Nobody will read this; a half-prepared WebSocket cannot be returned, and aiohttp
        # drops the answer to a closed connection without a word.
        return web.Response(status=400, text="the connection closed during the upgrade")
    except BaseException:
        hub.unclaim(claim)
        raise
    transport = request.transport
    if transport is None or transport.is_closing():
        hub.unclaim(claim)
        hub.metrics.upgrades_aborted.inc()
        return ws
    bound_buffers(transport)
    session = factory(hub.services(), Connection(ws, transport, claim, session_id))
    session.elapsed_before = elapsed
    hub.join(session)
    try:
        await session.run()
    finally:
        hub.leave(session)
    return ws


async def moshi_chat(request: web.Request) -> Any:
    sampling = parse_sampling(request.query)
    backend = request.app[HUB_KEY].backend
    in_force = backend.sampling_in_force(sampling) if backend else sampling

    def factory(services: Services, connection: Connection) -> Session:
        return MoshiSession(services, connection, in_force)

    return await _serve(request, factory, sampling)


async def audio_chat(request: web.Request) -> Any:
    query = {ours: request.query[theirs] for theirs, ours in AUDIO_QUERY_NAMES.items()
             if theirs in request.query}  # fmt: skip
    return await _serve(request, AudioSession, parse_sampling(query))


async def pcm_chat(request: web.Request) -> Any:
    try:
        rate = int(request.query.get("rate", str(constants.MOSHI_SAMPLE_RATE)))
    except ValueError:
        rate = -1
    if rate not in SUPPORTED_RATES:
        return _json({"error": f"rate must be one of {list(SUPPORTED_RATES)}"}, status=400)

    def factory(services: Services, connection: Connection) -> Session:
        return PcmSession(services, connection, rate)

    return await _serve(request, factory)


async def healthz(request: web.Request) -> web.Response:
    failure = request.app[HUB_KEY].health()
    if failure is not None:
        return _json({"ok": False, "error": failure}, status=500)
    return _json({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    if hub.ready():
        return _json({"ready": True})
    if hub.failure is not None:
        why = REFUSED_FAILED
    elif not hub.loaded:
        why = REFUSED_LOADING
    elif hub.drain.draining:
        why = REFUSED_DRAINING
    else:
        why = REFUSED_FULL
    return _json({"ready": False, "reason": why}, status=503)


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    body = generate_latest(hub.metrics.registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


async def status(request: web.Request) -> web.Response:
    return _json(request.app[HUB_KEY].status().wire())


async def drain(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    refusal = pool_token_refusal(request, hub.config.token, "only SIGTERM drains")
    if refusal is not None:
        return refusal
    try:
        text = await asyncio.wait_for(request.text(), BODY_TIMEOUT_SECONDS)
    except TimeoutError:
        return _json({"error": f"request body not sent within {BODY_TIMEOUT_SECONDS:g} s"}, 408)
    try:
        body = DrainRequest.model_validate(json.loads(text or "{}"))
    except (ValueError, ValidationError) as exc:
        return _json({"error": f"bad drain request: {exc}"}, status=400)
    hub.start_drain(body.deadline_seconds, body.reason, API)
    answer = DrainResponse(
        draining=True, deadline_seconds=round(hub.drain.remaining(), 1), active=len(hub.sessions)
    )
    return _json(answer.wire())


def add_routes(app: web.Application) -> None:
    app.router.add_get(constants.PATH_PAGE, webpage.handler)
    app.router.add_get(constants.PATH_MOSHI_CHAT, moshi_chat)
    app.router.add_get(constants.PATH_PCM, pcm_chat)
    app.router.add_get(constants.PATH_AUDIO, audio_chat)
    app.router.add_get(constants.PATH_HEALTHZ, healthz)
    app.router.add_get(constants.PATH_READYZ, readyz)
    app.router.add_get(constants.PATH_METRICS, metrics)
    app.router.add_get(constants.PATH_STATUS, status)
    app.router.add_post(constants.PATH_DRAIN, drain)
    add_move_routes(app, HUB_KEY)
