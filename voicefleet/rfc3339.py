"""Times as the Kubernetes API writes them (RFC 3339, UTC, whole seconds): one formatter and
one parser for every part that reads or writes them."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def format_time(epoch: float | None = None) -> str:
    """``2026-11-25T21:42:02Z`` for ``epoch`` (now when None), seconds truncated."""
    at = time.time() if epoch is None else epoch
    return datetime.fromtimestamp(int(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 time from the API server; None for none."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
