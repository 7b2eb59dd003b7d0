"""The event loop the runtime and the gateway run on: uvloop where it is installed (the same
sockets for a fraction of the CPU and GIL time), asyncio's own otherwise. uvloop is optional:
not a declared dependency."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def loop_factory() -> Callable[[], Any] | None:
    """For ``asyncio.Runner(loop_factory=...)``; None: asyncio's default loop."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], Any] = uvloop.new_event_loop
    return factory
