"""Where the set of backends comes from: one small interface, so the relay and admission never
know. A fixed list of URLs (``--backend``); every address a DNS name resolves to
(``--backends-dns``: a pool's headless Service names every pod, ready, loading or
draining); or the set the operator sends (``--backends-pushed``: ``PUT /v1/backends``,
signed with the pool token, which is how the operator runs it). None of them needs access
to the Kubernetes API."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Protocol

log = logging.getLogger(__name__)

Publish = Callable[[frozenset[str]], None]


class BackendSource(Protocol):
    async def watch(self, publish: Publish) -> None:
        """Call ``publish`` with the whole set of backend base URLs (``http://host:port``)
        at start and whenever it changes; runs until cancelled (or returns, for a set that
        never changes)."""


class StaticBackends:
    """The ``--backend`` flags: a set that never changes."""

    def __init__(self, urls: Iterable[str]) -> None:
        self.urls = frozenset(url.rstrip("/") for url in urls)

    async def watch(self, publish: Publish) -> None:
        publish(self.urls)


class PushedBackends:
    """``--backends-pushed``: the set the operator last sent. Empty until the first push,
    so the gateway stays unready until it knows its pool."""

    def __init__(self) -> None:
        self._publish: Publish | None = None
        self._last: frozenset[str] = frozenset()

    async def watch(self, publish: Publish) -> None:
        self._publish = publish
        publish(self._last)

    def push(self, urls: Iterable[str]) -> bool:
        """Take the operator's set; True when it changed."""
        new = frozenset(url.rstrip("/") for url in urls)
        if new == self._last:
            return False
        log.info("the operator sent %d backends", len(new))
        self._last = new
        if self._publish is not None:
            self._publish(new)
        return True


class DnsBackends:
    """``--backends-dns NAME:PORT``: every address ``NAME`` resolves to, resolved again every
    ``period`` seconds. A failed lookup keeps the last set: a DNS blip must not take live
    backends out of rotation (their polls say whether they are there)."""

    def __init__(self, name: str, port: int, period: float) -> None:
        self.name = name
        self.port = port
        self.period = period

    async def resolve(self) -> frozenset[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            self.name, self.port, type=socket.SOCK_STREAM
        )
        return frozenset(backend_url(str(info[4][0]), self.port) for info in infos)

    async def watch(self, publish: Publish) -> None:
        last: frozenset[str] | None = None
        failing = False
        while True:
            try:
                urls = await self.resolve()
            except OSError as exc:
                if not failing:
                    log.warning("cannot resolve %s (keeping the last backends): %s", self.name, exc)
                failing = True
            else:
                failing = False
                if urls != last:
                    log.info("%s resolves to %d backends", self.name, len(urls))
                    publish(urls)
                    last = urls
            await asyncio.sleep(self.period)


def backend_url(address: str, port: int) -> str:
    """``http://host:port``, with an IPv6 address in brackets."""
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return f"http://{host}:{port}"
