"""Waiting for a condition by polling, for tests and the benchmark harness (no pytest here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def poll(predicate: Callable[[], Any], timeout: float, interval: float) -> Any:
    """``predicate()``'s first truthy result within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


async def until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> float:
    """Seconds until ``predicate()`` holds, polled without blocking the event loop; an
    AssertionError after ``timeout`` seconds."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true after {timeout} s: {predicate}")
        await asyncio.sleep(interval)
    return time.monotonic() - started
