"""The end-to-end suite uses the sandbox fixtures of the test suite, on a cluster of its own
shape: spot nodes with one GPU each, as many small spot instances are, so the examples'
default `gpu.gpusPerNode: 1` describes it and the planner's spot surplus holds exactly."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from e2e.fleet import E2E_NODES
from voicefleet.sandbox.nodes import NodeGroup

pytest_plugins = ["tests.fixtures.sandbox"]


@pytest.fixture(scope="session")
def sandbox_nodes() -> Sequence[NodeGroup]:
    return E2E_NODES
