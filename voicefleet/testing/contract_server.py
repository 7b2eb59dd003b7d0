"""A small real HTTP server that implements the operator <-> runtime contract.

Stands in for a runtime pod where a test needs to choose what the pod reports (live
session counts) without opening real conversations: ``GET /v1/status`` and
``POST /v1/drain`` exactly as DESIGN.md fixes them (the JSON comes from the contract's own
models), plus ``POST /test/active?n=N`` to set the active count, and ``GET /test/drains``
listing the drain calls received (with whether their token was right).

In process, :func:`build_app` takes a :class:`Record` to keep what the runtime saw (the
chaos run's stand-ins read it directly), and ``callers_leave_on_drain`` makes the live
sessions hang up at an authorized drain, as callers told to reconnect elsewhere do.

Run: ``python -m voicefleet.testing.contract_server --host IP --port 8998 --token T --active N``
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from voicefleet import constants
from voicefleet.api.runtime import (
    DrainRequest,
    DrainResponse,
    FrameMs,
    GpuInfo,
    ModelInfo,
    RuntimeStatus,
    SessionCounts,
)


@dataclass
class Record:
    """What one runtime holds and saw: live sessions, its drain state, each drain call (with
    whether its token was right) and how many status polls it answered."""

    active: int = 0
    draining: bool = False
    drains: list[dict[str, Any]] = field(default_factory=list)
    status_calls: int = 0

    @property
    def acknowledged(self) -> bool:
        """True once an authorized drain call was answered."""
        return any(d["authorized"] for d in self.drains)


def report(active: int, capacity: int, *, draining: bool) -> RuntimeStatus:
    """What a loaded runtime says of itself (``GET /v1/status``) with these counts."""
    return RuntimeStatus(
        sessions=SessionCounts(active=active, capacity=capacity),
        draining=draining,
        ready=not draining,
        frame_ms=FrameMs(p50=20.0, p95=25.0),
        late_frames=0,
        model=ModelInfo(
            backend="contract",
            name="contract",
            variant="bf16",
            context_steps=3000,
            max_session_seconds=240,
            device="cpu",
            loaded=True,
        ),
        gpu=GpuInfo(available=False),
    )


def build_app(
    token: str,
    active: int,
    capacity: int,
    *,
    record: Record | None = None,
    callers_leave_on_drain: bool = False,
) -> web.Application:
    state = record if record is not None else Record()
    state.active = active

    async def status(_request: web.Request) -> web.Response:
        state.status_calls += 1
        body = report(state.active, capacity, draining=state.draining)
        return web.json_response(body.wire())

    async def drain(request: web.Request) -> web.Response:
        authorized = request.headers.get("Authorization") == f"Bearer {token}"
        payload = DrainRequest.model_validate(await request.json())
        state.drains.append({"authorized": authorized, **payload.wire()})
        if not authorized:
            return web.json_response({"error": "bad token"}, status=401)
        state.draining = True
        reply = DrainResponse(
            draining=True, deadline_seconds=payload.deadline_seconds, active=state.active
        )
        if callers_leave_on_drain:
            state.active = 0
        return web.json_response(reply.wire())

    async def set_active(request: web.Request) -> web.Response:
        state.active = int(request.query["n"])
        return web.json_response({"active": state.active})

    async def drains(_request: web.Request) -> web.Response:
        return web.json_response(state.drains)

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get(constants.PATH_STATUS, status)
    app.router.add_post(constants.PATH_DRAIN, drain)
    app.router.add_post("/test/active", set_active)
    app.router.add_get("/test/drains", drains)
    app.router.add_get(constants.PATH_HEALTHZ, ok)
    app.router.add_get(constants.PATH_READYZ, ok)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=constants.RUNTIME_PORT)
    parser.add_argument("--token", required=True)
    parser.add_argument("--active", type=int, default=0)
    parser.add_argument("--capacity", type=int, default=40)
    args = parser.parse_args()
    app = build_app(args.token, args.active, args.capacity)
    print(json.dumps({"serving": f"{args.host}:{args.port}"}), flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
