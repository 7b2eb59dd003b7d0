"""Where the set of backends comes from: one small interface, so the relay and admission never
know. Today a fixed list of URLs (``--backend``); next, the pool's pod EndpointSlices, as a
second :class:`BackendSource` that publishes the ready and draining pods' addresses as they
change."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

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
