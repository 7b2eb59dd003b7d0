"""Stand-in runtimes for every running pool pod of a chaos run: a fake kubelet.

kwok runs no containers, so each pool pod, once it runs, gets an HTTP server bound to exactly
its IP that keeps the runtime contract (``voicefleet/testing/contract_server.py``): it holds live
sessions until it is told to drain, when its callers hang up (as callers told to reconnect
elsewhere do), and it records every drain call (with whether the pool's token was right)
and every status poll. The records outlive the pods: the run checks afterwards that every pod
marked draining got its call, from the runtime's side.

All servers share one asyncio loop on a thread of their own: a slow API call of the run
never delays an answer to the operator.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from kubernetes import client

from e2e.observe import PodSeen
from voicefleet import constants
from voicefleet.testing.contract_server import Record, build_app
from voicefleet.testing.kube_admin import pool_token

CALL_SECONDS: Final = 10.0
# A replica killed mid-call leaves a request cut off, which aiohttp logs with a traceback;
# that is the chaos at work, not a fault of the stand-in.
_CUT_OFF_CALLS = logging.getLogger(__name__ + ".calls")
_CUT_OFF_CALLS.addHandler(logging.NullHandler())
_CUT_OFF_CALLS.propagate = False


@dataclass
class StandIn:
    """The runtime of one pod (by UID): where it listened and what it saw."""

    uid: str
    name: str
    pool: str
    ip: str
    record: Record
    runner: web.AppRunner | None = None


@dataclass
class Kubelet:
    """Starts a stand-in for each pod that runs and stops it when the pod is gone; hand
    :meth:`follow` to :class:`e2e.observe.Monitor` as a listener."""

    api: client.ApiClient
    namespace: str
    sessions: int = 1  # live sessions on each runtime until it is drained
    capacity: int = 40
    stand_ins: dict[str, StandIn] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict)  # pool UID -> token
    _serving: dict[str, str] = field(default_factory=dict)  # IP -> UID of the pod there now

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="stand-in runtimes", daemon=True
        )
        self._thread.start()

    def follow(self, pod: PodSeen, gone: bool) -> None:
        """One pod change: serve a pod that runs now, stop the runtime of one that is gone
        (a pod being deleted keeps it until then, as its container would)."""
        if gone:
            self._call(self._retire(pod.uid))
        elif pod.running and pod.uid not in self.stand_ins and pod.ip:
            token = self._token(pod)
            if token is not None:
                self._call(self._serve(pod, pod.ip, token))

    def record(self, uid: str) -> Record | None:
        found = self.stand_ins.get(uid)
        return found.record if found is not None else None

    def status_calls(self, uids: list[str]) -> int:
        """Status polls the runtimes of these pods answered, the fewest of any."""
        counts = [s.record.status_calls for u in uids if (s := self.stand_ins.get(u))]
        return min(counts) if len(counts) == len(uids) and counts else 0

    def stop(self) -> None:
        for uid in list(self._serving.values()):
            self._call(self._retire(uid))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # --- on the loop ---------------------------------------------------------------------

    async def _serve(self, pod: PodSeen, ip: str, token: str) -> None:
        earlier = self._serving.get(ip)
        if earlier is not None:  # the address was another pod's, gone since
            await self._retire(earlier)
        record = Record()
        app = build_app(
            token, self.sessions, self.capacity, record=record, callers_leave_on_drain=True
        )
        runner = web.AppRunner(app, access_log=None, logger=_CUT_OFF_CALLS)
        await runner.setup()
        try:
            await web.TCPSite(runner, ip, constants.RUNTIME_PORT, reuse_address=True).start()
        except OSError as exc:
            await runner.cleanup()
            self.problems.append(f"{pod.name}: cannot listen on {ip}: {exc}")
            return
        self.stand_ins[pod.uid] = StandIn(pod.uid, pod.name, pod.pool, ip, record, runner)
        self._serving[ip] = pod.uid

    async def _retire(self, uid: str) -> None:
        found = self.stand_ins.get(uid)
        if found is None or found.runner is None:
            return
        runner, found.runner = found.runner, None
        if self._serving.get(found.ip) == uid:
            del self._serving[found.ip]
        await runner.cleanup()

    # --- helpers -------------------------------------------------------------------------

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=CALL_SECONDS)

    def _token(self, pod: PodSeen) -> str | None:
        """The pool's token, read as admin (the operator never reads it back)."""
        if pod.owner not in self._tokens:
            try:
                self._tokens[pod.owner] = pool_token(self.api, self.namespace, pod.pool)
            except client.ApiException as exc:
                self.problems.append(f"{pod.name}: no token for pool {pod.pool}: {exc.reason}")
                return None
        return self._tokens[pod.owner]
