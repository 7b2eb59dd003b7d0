"""HTTP routes of the gateway's one port: every WebSocket path of the runtime, relayed, and
the gateway's own control endpoints (the runtime's names, so probes and scrapers need no
second configuration)."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from voicefleet import constants, webpage
from voicefleet.api import signature
from voicefleet.api.gateway import BackendsPush
from voicefleet.gateway.discovery import PushedBackends
from voicefleet.gateway.service import REFUSED_DRAINING, Gateway
from voicefleet.gateway.wire import RELAYED_PATHS

GATEWAY_KEY = web.AppKey("gateway", Gateway)
REASON_NO_BACKEND = "no_backend"


async def converse(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY_KEY].converse(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    if gateway.ready():
        return web.json_response({"ready": True})
    reason = REFUSED_DRAINING if gateway.draining else REASON_NO_BACKEND
    return web.json_response({"ready": False, "reason": reason}, status=503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[GATEWAY_KEY].metrics.registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[GATEWAY_KEY].status().wire())


async def backends(request: web.Request) -> web.Response:
    """``PUT /v1/backends``: the operator's set of the pool's runtime pods."""
    gateway = request.app[GATEWAY_KEY]
    source = gateway.source
    if not isinstance(source, PushedBackends):
        return _error(409, "this gateway's backends come from its flags, not from the operator")
    if gateway.config.token is None:
        return _error(403, "this gateway has no pool token, so it cannot check the sender")
    body = await request.read()
    problem = signature.check(
        gateway.config.token, request.headers.get(signature.HEADER), body, time.time()
    )
    if problem is not None:
        return _error(401, problem)
    try:
        push = BackendsPush.model_validate_json(body)
    except ValidationError as exc:
        return _error(400, f"not a backend set: {exc.errors()[0]['msg']}")
    bad = [url for url in push.backends if not url.startswith(("http://", "https://"))]
    if bad:
        return _error(400, f"backends are http://host:port URLs, not {bad[0]!r}")
    source.push(push.backends)
    return web.json_response(gateway.status().wire())


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def add_routes(app: web.Application) -> None:
    app.router.add_get(constants.PATH_PAGE, webpage.handler)
    for path in RELAYED_PATHS:
        app.router.add_get(path, converse)
    app.router.add_get(constants.PATH_HEALTHZ, healthz)
    app.router.add_get(constants.PATH_READYZ, readyz)
    app.router.add_get(constants.PATH_METRICS, metrics)
    app.router.add_get(constants.PATH_STATUS, status)
    app.router.add_put(constants.PATH_BACKENDS, backends)
