"""The operator process: a liveness endpoint, leader election, then kopf.

In this order, and why:

1. ``/healthz`` answers from the start: a standby waiting for the lease is alive, and the
   kubelet must not restart it for waiting.
2. Leader election (:mod:`voicefleet.operator.leader`), unless turned off: only the leader
   runs kopf, so a standby watches nothing and writes nothing.
3. kopf runs standalone: the Lease decides who acts, not kopf's peering (which paused every
   replica of equal priority, and in namespaced mode waited for a peering object per
   namespace).
4. A lost lease stops the process at once (exit code :data:`EXIT_LEASE_LOST`, no cleanup:
   a reconcile in flight must not go on writing once another replica may lead). The
   kubelet restarts the container, which comes back as a standby.
5. SIGTERM or SIGINT stops kopf (its cleanup handler closes the fleet), then releases the
   lease, so a standby takes over on its next try rather than when the lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final

import kopf
from aiohttp import web

from voicefleet import constants
from voicefleet.operator import metrics
from voicefleet.operator.config import OperatorConfig
from voicefleet.operator.kube import Kube, load_credentials
from voicefleet.operator.leader import LeaderElector, LeaseLost, LeaseSettings

log = logging.getLogger(__name__)

# The exit code of a replica that lost its lease (any non-zero code restarts the container).
EXIT_LEASE_LOST: Final = 3


@dataclass(frozen=True)
class ProcessSettings:
    health_host: str
    health_port: int
    # None: no leader election (a single process that always acts).
    lease: LeaseSettings | None


async def serve(
    registry: kopf.OperatorRegistry, config: OperatorConfig, settings: ProcessSettings
) -> int:
    """Run until stopped by a signal (0), or kopf fails (1); a lost lease exits here."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    elector = None
    if settings.lease is not None:
        kube = Kube(load_credentials(), timeout=settings.lease.renew_deadline)
        elector = LeaderElector(kube, settings.lease)
    health = await _serve_health(settings, elector)
    try:
        holding: asyncio.Task[None] | None = None
        if elector is not None:
            if not await _unless_stopped(elector.acquire(), stop):
                return 0  # stopped on standby
            holding = asyncio.create_task(elector.hold(), name="leader lease")
        else:
            metrics.LEADER.set(1)
        failed = await _run_kopf(registry, config, stop, holding)
        if elector is not None:
            await elector.release()
        return 1 if failed else 0
    finally:
        await health.cleanup()
        if elector is not None:
            await elector.kube.close()


async def _run_kopf(
    registry: kopf.OperatorRegistry,
    config: OperatorConfig,
    stop: asyncio.Event,
    holding: asyncio.Task[None] | None,
) -> bool:
    """kopf until ``stop`` is set or it fails (True); a lost lease exits the process."""
    # kopf cancels every task it finds at its end but these (as kopf.operator() does).
    existing = asyncio.all_tasks()
    tasks = await kopf.spawn_tasks(
        registry=registry,
        clusterwide=config.all_namespaces,
        namespaces=list(config.namespaces),
        standalone=True,
        stop_flag=stop,
        memo=kopf.Memo(),
    )
    # kopf installed its own signal handlers; ours stop it through the stop flag, so this
    # function can tell a requested stop from a failure.
    _stop_on_signals(stop)
    running = asyncio.create_task(kopf.run_tasks(tasks, ignored=existing), name="kopf")
    waiting: set[asyncio.Task[None]] = {running} if holding is None else {running, holding}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if holding is not None and holding in done:
        _exit_lease_lost(holding)
    if holding is not None:
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
    error = running.exception()
    if error is not None:
        log.error("the operator failed: %r", error)
    return error is not None or not stop.is_set()


def _exit_lease_lost(holding: asyncio.Task[None]) -> None:
    """Stop acting at once: no cleanup, no pending write goes out after this line."""
    error = holding.exception()
    why = str(error) if isinstance(error, LeaseLost) else repr(error)
    log.error("leader election: lost the lease (%s); exiting to restart as a standby", why)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_LEASE_LOST)


async def _unless_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Await ``work``; False (and ``work`` cancelled) if ``stop`` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        task.result()  # its error, if it failed
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _serve_health(settings: ProcessSettings, elector: LeaderElector | None) -> web.AppRunner:
    """The liveness endpoint: 200 while the event loop runs, leader or standby."""

    async def healthz(_: web.Request) -> web.Response:
        leading = True if elector is None else elector.leading
        return web.json_response({"leader": leading})

    app = web.Application()
    app.router.add_get(constants.PATH_HEALTHZ, healthz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.health_host, settings.health_port).start()
    return runner
