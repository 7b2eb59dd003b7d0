"""Waiting for a condition by polling: the one poller of the tests, the demo and the
benchmarks (no pytest here)."""

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


def seconds_until(predicate: Callable[[], Any], timeout: float, interval: float) -> float | None:
    """Seconds until ``predicate()`` holds (by :func:`poll`), or None after ``timeout``."""
    started = time.monotonic()
    return time.monotonic() - started if poll(predicate, timeout, interval) else None


async def until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> float:
    """Seconds until ``predicate()`` holds, polled without blocking the event loop; an
    AssertionError after ``timeout`` seconds."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true after {timeout} s: {predicate}")
        await asyncio.sleep(interval)
    return time.monotonic() - started


class HarnessError(RuntimeError):
    """A harness process did not start or exited, or a wait timed out."""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """``predicate()``'s first truthy result; HarnessError after ``timeout`` seconds."""
    result = poll(predicate, timeout, 0.1)
    if not result:
        raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}")
    return result
