"""Process lifecycle: open the port first (so ``/healthz`` answers while the model loads),
load the model off the event loop, start the engine and the supervisor, then serve until
SIGTERM's drain ends, a second signal cuts it short, or the engine fails.

Stopping is bounded at every step, so the process always exits inside the pod's
``terminationGracePeriodSeconds`` (the drain plus 30 s): sessions are closed (and aborted if
their close cannot be sent), aiohttp gets ``SHUTDOWN_TIMEOUT_SECONDS`` for what is left, and a
backstop exits ``EXIT_BACKSTOP_SECONDS`` after stopping began, whatever still hangs.

Exit codes: 0 after a drain, 2 when the model cannot load (the message says what to change),
1 when the engine fails while serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import functools
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from aiohttp import web

from voicefleet.runtime.backends import BackendLoadError, get_loader
from voicefleet.runtime.config import RuntimeConfig
from voicefleet.runtime.drain import SIGNAL
from voicefleet.runtime.engine import BatchedEngine
from voicefleet.runtime.eventloop import loop_factory
from voicefleet.runtime.hub import Hub
from voicefleet.runtime.limits import (
    CLOSE_TIMEOUT_SECONDS,
    EXIT_BACKSTOP_SECONDS,
    SHUTDOWN_TIMEOUT_SECONDS,
)
from voicefleet.runtime.listener import Listener, start_http
from voicefleet.runtime.routes import HUB_KEY, add_routes
from voicefleet.runtime.supervisor import Supervisor

log = logging.getLogger("voicefleet.runtime")

EXIT_OK = 0
EXIT_ENGINE_FAILED = 1
EXIT_LOAD_FAILED = 2

T = TypeVar("T")


def serve(config: RuntimeConfig) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The engine thread gives up the GIL in every torch call (hundreds per step) and must get
    # it back at once, while the event loop is busy with thousands of socket messages a
    # second. With Python's default switch interval (5 ms), or even 1 ms, those waits added
    # 40-80 ms to one step in fifty on an H100 at 40-80 sessions.
    sys.setswitchinterval(0.0002)
    # `kill -USR1 <pid>` prints every thread's stack: the first question about a stuck pod.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_main(config))


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _load(hub: Hub) -> BatchedEngine:
    """Load the model and warm the engine up; runs in a worker thread."""
    config = hub.config
    started = time.perf_counter()
    device = _device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.cpu_threads)
    backend = get_loader(config.backend)(config, device)
    engine = BatchedEngine(
        backend,
        config.max_sessions,
        on_frame=hub.on_frame,
        stats=hub.stats,
        queue_seconds=config.queue_seconds,
        on_step=hub.on_step,
        on_catch_up=hub.on_catch_up,
    )
    engine.start()
    while not engine.ready.wait(0.2):
        if isinstance(engine.failure, torch.cuda.OutOfMemoryError):
            # The memory check before allocation is an estimate; CUDA graphs and activations
            # can still tip a tight configuration over.
            raise BackendLoadError(
                f"out of GPU memory while setting up {config.max_sessions} session slots of "
                f"{config.max_session_seconds} s: lower --max-sessions or "
                f"--max-session-seconds ({engine.failure})"
            )
        if engine.failure is not None:
            raise engine.failure
    # The model's objects live as long as the process: keep them out of every later garbage
    # collection, whose pauses would otherwise land on random frames.
    gc.collect()
    gc.freeze()
    hub.engine_loaded(engine, time.perf_counter() - started)
    return engine


async def _start_http(hub: Hub) -> tuple[web.AppRunner, Listener]:
    config = hub.config

    def routes(app: web.Application) -> None:
        app[HUB_KEY] = hub
        add_routes(app)

    started = await start_http(
        routes,
        host=config.host,
        port=config.port,
        header_timeout_seconds=config.header_timeout_seconds,
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_SECONDS,
        timed_out=hub.metrics.connections_timed_out,
        bad_requests=hub.metrics.bad_requests,
        logger_name="voicefleet.runtime.http",
    )
    log.info("listening on http://%s:%d (backend %s)", config.host, config.port, config.backend)
    return started


def _in_daemon_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """``work()`` on a thread of its own that never holds up the exit (asyncio.to_thread's
    executor would: a SIGTERM during a minutes-long model load would wait for the load)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: object) -> None:
        if not future.done():
            setter(value)

    def run() -> None:
        try:
            outcome: tuple[Callable[[Any], None], object] = (future.set_result, work())
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (future.set_exception, exc)
        # The loop is closed if the process stopped before the work ended.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="voicefleet-load", daemon=True).start()
    return future


def _arm_exit_backstop(exit_code: int) -> None:
    """Exit no matter what still hangs, EXIT_BACKSTOP_SECONDS from now."""

    def exit_now() -> None:
        log.error("still stopping after %g s: exiting now", EXIT_BACKSTOP_SECONDS)
        faulthandler.dump_traceback(all_threads=True)
        logging.shutdown()
        os._exit(exit_code)

    timer = threading.Timer(EXIT_BACKSTOP_SECONDS, exit_now)
    timer.daemon = True
    timer.start()


def _install_signals(loop: asyncio.AbstractEventLoop, hub: Hub) -> None:
    """The first SIGTERM or SIGINT drains; a second one stops at once."""
    signals = 0
    drain_seconds = hub.config.drain_seconds

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.info("second signal: stopping now")
            hub.stopped.set()
            return
        log.info("signal %d: draining for up to %d s", signum, drain_seconds)
        hub.start_drain(drain_seconds, f"signal {signum}", SIGNAL)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def _main(config: RuntimeConfig) -> int:
    loop = asyncio.get_running_loop()
    hub = Hub(config)
    hub.attach(loop)
    runner, listener = await _start_http(hub)
    _install_signals(loop, hub)

    exit_code = EXIT_OK
    engine: BatchedEngine | None = None
    supervisor = asyncio.create_task(Supervisor(hub).run(), name="supervisor")
    supervisor.add_done_callback(functools.partial(_supervisor_ended, hub))
    loading = _in_daemon_thread(functools.partial(_load, hub))
    stopped: asyncio.Future[Any] = asyncio.create_task(hub.stopped.wait())
    try:
        await asyncio.wait({loading, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done():
            try:
                engine = loading.result()
            except BackendLoadError as exc:
                hub.load_error = str(exc)
                log.error("cannot load the model: %s", exc)
                print(f"voicefleet runtime: cannot load the model: {exc}", file=sys.stderr)
                exit_code = EXIT_LOAD_FAILED
                return exit_code
            log.info(
                "ready: %d slots, %d s per session (%d frames of %g ms), loaded in %.1f s",
                config.max_sessions,
                config.max_session_seconds,
                engine.backend.context_steps,
                engine.frame.ms,
                hub.load_seconds or 0.0,
            )
            await stopped
        if hub.failure is not None:
            exit_code = EXIT_ENGINE_FAILED
        return exit_code
    finally:
        _arm_exit_backstop(exit_code)
        stopped.cancel()
        # Every session gets its close; the supervisor aborts those that cannot take it.
        hub.shutdown_sessions()
        await hub.sessions_gone(2 * CLOSE_TIMEOUT_SECONDS + 1.0)
        supervisor.cancel()
        await listener.stop()
        await runner.cleanup()
        if engine is not None:
            # A failed engine's thread may be wedged for good: waiting for it helps no one.
            engine.stop(timeout=0.0 if hub.failure else 2.0)
        hub.codec.shutdown()
        log.info("stopped (exit %d)", exit_code)


def _supervisor_ended(hub: Hub, task: asyncio.Task[None]) -> None:
    """The supervisor only ends when cancelled at shutdown; anything else is a bug that
    leaves the runtime unwatched, so the process fails and stops."""
    if not task.cancelled() and task.exception() is not None:
        log.error("supervisor failed", exc_info=task.exception())
        hub.fail(f"the supervisor failed: {task.exception()!r}")
