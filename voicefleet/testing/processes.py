"""Ending a helper program a test started: politely first, then for sure."""

from __future__ import annotations

import subprocess
from typing import Any

STOP_SECONDS = 10.0


def terminate(process: subprocess.Popen[Any], timeout: float = STOP_SECONDS) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
