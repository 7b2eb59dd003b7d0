"""HTTP routes of the one port: the two WebSocket protocols and the control endpoints.

Refusals happen before the upgrade, as plain HTTP 503 with Retry-After, so a load balancer or
client can try another pod without speaking WebSocket first.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from voicefleet import constants
from voicefleet.api.runtime import DrainRequest, DrainResponse
from voicefleet.runtime.drain import API
from voicefleet.runtime.engine import SlotHandle
from voicefleet.runtime.hub import RETRY_AFTER_SECONDS, Hub, Refusal
from voicefleet.runtime.protocol import MAX_MESSAGE_BYTES, parse_sampling
from voicefleet.runtime.resample import SUPPORTED_RATES
from voicefleet.runtime.session import Session
from voicefleet.runtime.ws_moshi import MoshiSession
from voicefleet.runtime.ws_pcm import PcmSession

log = logging.getLogger(__name__)
HUB_KEY = web.AppKey("hub", Hub)
# aiohttp's own cap on one message; ours (MAX_MESSAGE_BYTES) is checked per protocol so the
# client gets a protocol error rather than a bare close.
WS_MAX_MSG_SIZE = 4 * MAX_MESSAGE_BYTES
# Moshi's Rust server pings every 10 s; the same keeps idle proxies from cutting a call.
WS_HEARTBEAT_SECONDS = 10.0


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


def _refuse(refusal: Refusal) -> web.Response:
    return _json(
        {"error": refusal.message, "reason": refusal.reason},
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


SessionFactory = Callable[[Hub, web.WebSocketResponse, SlotHandle, int], Session]


async def _serve(
    request: web.Request, factory: SessionFactory, text_temperature: float | None = None
) -> Any:
    hub = request.app[HUB_KEY]
    claim = hub.claim(text_temperature)
    if isinstance(claim, Refusal):
        return _refuse(claim)
    ws = web.WebSocketResponse(max_msg_size=WS_MAX_MSG_SIZE, heartbeat=WS_HEARTBEAT_SECONDS)
    try:
        await ws.prepare(request)
    except BaseException:
        hub.unclaim(claim)
        raise
    session = factory(hub, ws, claim, hub.next_session_id())
    hub.join(session)
    try:
        await session.run()
    finally:
        hub.leave(session)
    return ws


async def moshi_chat(request: web.Request) -> Any:
    sampling = parse_sampling(request.query)

    def factory(hub: Hub, ws: web.WebSocketResponse, handle: SlotHandle, sid: int) -> Session:
        return MoshiSession(hub, ws, handle, sid, sampling=sampling)

    return await _serve(request, factory, sampling.text_temperature)


async def pcm_chat(request: web.Request) -> Any:
    try:
        rate = int(request.query.get("rate", str(constants.MOSHI_SAMPLE_RATE)))
    except ValueError:
        rate = -1
    if rate not in SUPPORTED_RATES:
        return _json({"error": f"rate must be one of {list(SUPPORTED_RATES)}"}, status=400)

    def factory(hub: Hub, ws: web.WebSocketResponse, handle: SlotHandle, sid: int) -> Session:
        return PcmSession(hub, ws, handle, sid, rate=rate)

    return await _serve(request, factory)


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    engine = hub.engine
    if hub.load_error is not None or (engine is not None and engine.failure is not None):
        failure = hub.load_error or repr(engine.failure if engine else None)
        return _json({"ok": False, "error": failure}, status=500)
    return _json({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    if hub.ready():
        return _json({"ready": True})
    if not hub.loaded:
        why = "loading"
    elif hub.drain.draining:
        why = "draining"
    else:
        why = "full"
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


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # Constant-time comparison: the token guards the power to empty a pod.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


async def drain(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    token = hub.config.token
    if token is None:
        return _json(
            {
                "error": "no pool token configured: set VOICEFLEET_POOL_TOKEN or --token-file; "
                "until then only SIGTERM drains"
            },
            status=403,
        )
    if not _authorized(request, token):
        return _json({"error": "missing or wrong bearer token"}, status=401)
    try:
        body = DrainRequest.model_validate(json.loads(await request.text() or "{}"))
    except (ValueError, ValidationError) as exc:
        return _json({"error": f"bad drain request: {exc}"}, status=400)
    hub.start_drain(body.deadline_seconds, body.reason, API)
    answer = DrainResponse(
        draining=True, deadline_seconds=round(hub.drain.remaining(), 1), active=len(hub.sessions)
    )
    return _json(answer.wire())


def add_routes(app: web.Application) -> None:
    app.router.add_get(constants.PATH_MOSHI_CHAT, moshi_chat)
    app.router.add_get(constants.PATH_PCM, pcm_chat)
    app.router.add_get(constants.PATH_HEALTHZ, healthz)
    app.router.add_get(constants.PATH_READYZ, readyz)
    app.router.add_get(constants.PATH_METRICS, metrics)
    app.router.add_get(constants.PATH_STATUS, status)
    app.router.add_post(constants.PATH_DRAIN, drain)
