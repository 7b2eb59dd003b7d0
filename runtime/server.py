"""Process lifecycle: open the port first (so ``/healthz`` answers while the model loads),
load the model off the event loop, start the engine, then serve until SIGTERM's drain ends
or a second signal cuts it short.

Exit codes: 0 after a drain, 2 when the model cannot load (the message says what to change),
1 when the engine fails while serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import importlib
import logging
import signal
import sys
import time
from collections.abc import Callable

import torch
from aiohttp import web

from voicefleet.runtime.backends import BackendLoadError, get_loader
from voicefleet.runtime.config import RuntimeConfig
from voicefleet.runtime.drain import SIGNAL
from voicefleet.runtime.engine import BatchedEngine
from voicefleet.runtime.hub import Hub
from voicefleet.runtime.routes import HUB_KEY, add_routes

log = logging.getLogger("voicefleet.runtime")

EXIT_OK = 0
EXIT_ENGINE_FAILED = 1
EXIT_LOAD_FAILED = 2


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
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_main(config))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed: the same sockets for a fraction of the GIL time."""
    try:
        uvloop = importlib.import_module("uvloop")  # optional: not a declared dependency
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _load(hub: Hub) -> BatchedEngine:
    """Load the model and warm the engine up; runs in a worker thread."""
    config = hub.config
    started = time.perf_counter()
    device = _device(config.device)
    model = get_loader(config.backend)(config, device)
    engine = BatchedEngine(
        model,
        config.max_sessions,
        on_frame=hub.on_frame,
        stats=hub.stats,
        input_queue_frames=config.input_queue_frames,
        on_step=hub.on_step,
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
    hub.engine_loaded(model, engine, time.perf_counter() - started)
    return engine


async def _start_http(hub: Hub) -> web.AppRunner:
    config = hub.config
    app = web.Application()
    app[HUB_KEY] = hub
    add_routes(app)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    log.info("listening on http://%s:%d (backend %s)", config.host, config.port, config.backend)
    return runner


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
    runner = await _start_http(hub)
    _install_signals(loop, hub)

    exit_code = EXIT_OK
    engine: BatchedEngine | None = None
    watcher = asyncio.create_task(hub.watch_drain())
    loading = asyncio.create_task(asyncio.to_thread(_load, hub))
    stopped = asyncio.create_task(hub.stopped.wait())
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
                "ready: %d slots, %d s per session (%d steps), loaded in %.1f s",
                config.max_sessions,
                config.max_session_seconds,
                config.context_steps,
                hub.load_seconds or 0.0,
            )
            while not hub.stopped.is_set():
                if engine.failure is not None:
                    log.error("engine failed: %r", engine.failure)
                    exit_code = EXIT_ENGINE_FAILED
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopped), 1.0)
        return exit_code
    finally:
        watcher.cancel()
        stopped.cancel()
        hub.shutdown_sessions()
        await asyncio.sleep(0.2)
        await runner.cleanup()
        if engine is not None:
            engine.stop()
        hub.codec.shutdown()
        log.info("stopped (exit %d)", exit_code)
