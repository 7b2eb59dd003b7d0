"""Fixtures: real runtime processes with the tiny backend, one per group of tests that need
the same settings. Started once per module; every test talks to them over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from voicefleet.testing.runtime_process import RuntimeServer, start_server

TOKEN = "pool-token-for-tests"


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """Three slots, a minute per session, a pool token: most protocol tests share it."""
    server = start_server(
        tmp_path_factory.mktemp("shared"), max_sessions=3, max_session_seconds=60, token=TOKEN
    )
    yield server
    server.stop()


@pytest.fixture
def fresh_server_dir(tmp_path: Path) -> Path:
    return tmp_path
