"""Fixtures: two real runtime processes with the tiny model (two slots each, a pool token),
shared by the module's tests, and a gateway process per test in front of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from voicefleet.testing.runtime_process import RuntimeServer, start_server

TOKEN = "pool-token-for-gateway-tests"
SLOTS = 2


@contextmanager
def _two_backends(directory: Path) -> Iterator[tuple[RuntimeServer, RuntimeServer]]:
    first = start_server(directory, max_sessions=SLOTS, max_session_seconds=60, token=TOKEN)
    try:
        second = start_server(directory, max_sessions=SLOTS, max_session_seconds=60, token=TOKEN)
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RuntimeServer, RuntimeServer]]:
    """Two backends; each test starts with both idle."""
    with _two_backends(tmp_path_factory.mktemp("backends")) as servers:
        yield servers


@pytest.fixture
def backends(pair: tuple[RuntimeServer, RuntimeServer]) -> tuple[RuntimeServer, RuntimeServer]:
    for server in pair:
        server.wait_idle()
    return pair


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[RuntimeServer, RuntimeServer]]:
    """Two backends of their own: a drained runtime stays unready until it is stopped."""
    with _two_backends(tmp_path) as servers:
        yield servers
