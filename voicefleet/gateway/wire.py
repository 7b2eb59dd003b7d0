"""How the gateway tells a caller something in-band, in the shape of the runtime's own
protocol on each path: on ``/api/chat`` a 0x05 error message (Moshi's protocol), on
``/ws/pcm`` a JSON text notice ``{"type": "error", "message": ...}``, on ``/audio`` nothing
(its clients decode every text message as audio), and on every path a close frame whose
reason says what happened. The same shapes as ``runtime/ws_moshi.py``, ``ws_pcm.py`` and
``ws_audio.py``."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

from voicefleet import constants

# Moshi's kind byte of an error message (kyutai-labs/moshi rust/protocol.md).
MOSHI_KIND_ERROR = 0x05
# RFC 6455 close codes beyond the runtime's (runtime/endings.py): 1013 is IANA's "Try Again
# Later", the one a client library can tell from a failure of the conversation itself.
CLOSE_TRY_AGAIN_LATER = 1013
# Codes a close frame may not carry (RFC 6455 7.4.1): an endpoint only reports them.
UNSENDABLE_CODES = frozenset({1005, 1006, 1015})
# A close frame's payload is at most 125 bytes: the 2-byte code and 123 of reason.
MAX_CLOSE_REASON_BYTES = 123

# The paths the gateway relays: every WebSocket path of the runtime.
RELAYED_PATHS = (constants.PATH_MOSHI_CHAT, constants.PATH_PCM, constants.PATH_AUDIO)


@dataclass(frozen=True)
class Notice:
    """Something to tell a caller before its socket is closed."""

    code: int
    reason: str  # the close frame's reason: short
    message: str  # the error text: what happened and what to do


async def tell(ws: web.WebSocketResponse, path: str, notice: Notice) -> None:
    """Send the error in the path's shape, then close with the notice's code and reason."""
    try:
        if path == constants.PATH_MOSHI_CHAT:
            await ws.send_bytes(bytes([MOSHI_KIND_ERROR]) + notice.message.encode())
        elif path == constants.PATH_PCM:
            await ws.send_str(json.dumps({"type": "error", "message": notice.message}))
    except ConnectionError:
        return  # gone already: nobody to tell
    reason = notice.reason.encode()[:MAX_CLOSE_REASON_BYTES]
    await ws.close(code=notice.code, message=reason)


def sendable(code: int | None, fallback: int) -> int:
    """A close code that may go in a close frame: the one given, else ``fallback``."""
    if code is None or code in UNSENDABLE_CODES or not 1000 <= code <= 4999:
        return fallback
    return code
