"""The gateway process: listen (with the runtime's deadline on each connection's request
line and headers, and its quiet count of unparsable requests: ``runtime/listener.py``), poll
the backends, relay; on SIGTERM stop taking new
conversations, keep the live ones until they end or ``--drain-seconds`` passes, then exit 0.
A second signal stops at once."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from voicefleet.gateway.config import GatewayConfig
from voicefleet.gateway.discovery import (
    BackendSource,
    DnsBackends,
    PushedBackends,
    StaticBackends,
)
from voicefleet.gateway.limits import SHUTDOWN_TIMEOUT_SECONDS
from voicefleet.gateway.routes import GATEWAY_KEY, add_routes
from voicefleet.gateway.service import Gateway
from voicefleet.runtime.eventloop import loop_factory
from voicefleet.runtime.listener import start_http

log = logging.getLogger("voicefleet.gateway")

EXIT_OK = 0


def serve(config: GatewayConfig) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_main(config))


async def _main(config: GatewayConfig) -> int:
    gateway = Gateway(config, _source(config))
    await gateway.start()

    def routes(app: web.Application) -> None:
        app[GATEWAY_KEY] = gateway
        add_routes(app)

    runner, listener = await start_http(
        routes,
        host=config.host,
        port=config.port,
        header_timeout_seconds=config.header_timeout_seconds,
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_SECONDS,
        timed_out=gateway.metrics.connections_timed_out,
        bad_requests=gateway.metrics.bad_requests,
        logger_name="voicefleet.gateway.http",
    )
    log.info(
        "listening on http://%s:%d, relaying to %s",
        config.host,
        config.port,
        config.backends_dns or config.backends or "the backends the operator sends",
    )
    stop_now = asyncio.Event()
    _install_signals(gateway, stop_now)
    try:
        emptied = asyncio.create_task(gateway.emptied.wait())
        now = asyncio.create_task(stop_now.wait())
        await asyncio.wait({emptied, now}, return_when=asyncio.FIRST_COMPLETED)
        emptied.cancel()
        now.cancel()
    finally:
        await listener.stop()
        await gateway.shut_live()
        await runner.cleanup()
        await gateway.stop()
        log.info("stopped (exit %d)", EXIT_OK)
    return EXIT_OK


def _source(config: GatewayConfig) -> BackendSource:
    if config.backends_pushed:
        return PushedBackends()
    if config.backends_dns is None:
        return StaticBackends(config.backends)
    name, _, port = config.backends_dns.rpartition(":")
    return DnsBackends(name, int(port), config.poll_seconds)


def _install_signals(gateway: Gateway, stop_now: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.info("second signal: stopping now")
            stop_now.set()
            return
        log.info("signal %d: draining for up to %g s", signum, gateway.config.drain_seconds)
        gateway.start_drain(gateway.config.drain_seconds)
        # The deadline: what is still relayed then is closed.
        loop.call_later(gateway.config.drain_seconds, stop_now.set)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
