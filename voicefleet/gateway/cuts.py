"""Which ended conversations the platform cut, and why (the label of
``conversations_cut_total`` and the ``cut`` of ``GET /v1/status``).

A caller hanging up, the session cap, an idle or misbehaving caller: those are the
conversation's own ends. A pod that closed it while going away (its drain deadline or its
shutdown, so the move did not happen), a pod lost mid-conversation, an internal error, or
this gateway shutting down with the conversation live: those are cuts, the thing the
gateway exists to prevent.
"""

from __future__ import annotations

from typing import Final

from voicefleet.gateway.relay import (
    ENDED_BACKEND_LOST,
    ENDED_BY_BACKEND,
    ENDED_SHUTDOWN,
)
from voicefleet.runtime.endings import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR

CUT_POD_DRAINED: Final = "pod_drained"
CUT_POD_LOST: Final = "pod_lost"
CUT_POD_ERROR: Final = "pod_error"
CUT_GATEWAY_SHUTDOWN: Final = "gateway_shutdown"


def cut_reason(ended: str, backend_close: tuple[int | None, str] | None) -> str | None:
    """Why the platform cut a conversation that ended so; None when it did not."""
    if ended == ENDED_BACKEND_LOST:
        return CUT_POD_LOST
    if ended == ENDED_SHUTDOWN:
        return CUT_GATEWAY_SHUTDOWN
    if ended == ENDED_BY_BACKEND and backend_close is not None:
        code = backend_close[0]
        if code == CLOSE_GOING_AWAY:
            return CUT_POD_DRAINED
        if code == CLOSE_INTERNAL_ERROR:
            return CUT_POD_ERROR
    return None
