"""The end-to-end suite uses the sandbox fixtures of the test suite, on a cluster of its own
shape: spot nodes with one GPU each, as many small spot instances are, so the examples'
default `gpu.gpusPerNode: 1` describes it and the planner's spot surplus holds exactly."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from voicefleet.constants import CAPACITY_ON_DEMAND, CAPACITY_SPOT
from voicefleet.sandbox.nodes import NodeGroup

pytest_plugins = ["tests.fixtures.sandbox"]

E2E_NODES = (
    NodeGroup(count=2, capacity_type=CAPACITY_ON_DEMAND, gpus=8),
    # The drill's pool has 4 spot pods, the scaled example up to 5, and every interrupted
    # pod needs a replacement: 16 single-GPU spot nodes leave room for all of them.
    NodeGroup(count=16, capacity_type=CAPACITY_SPOT, gpus=1),
    NodeGroup(count=1, capacity_type=CAPACITY_ON_DEMAND, gpus=0, cpu=16, memory_gib=64),
)


@pytest.fixture(scope="session")
def sandbox_nodes() -> Sequence[NodeGroup]:
    return E2E_NODES
