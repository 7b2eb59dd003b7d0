"""Moshi's WebSocket wire format (kyutai-labs/moshi ``rust/protocol.md``) and the query-string
sampling settings of Kyutai's web client.

Every binary message starts with one kind byte. The handshake carries two little-endian
u32: the protocol version (0) and the model version.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from collections.abc import Mapping
from typing import Any

from voicefleet.runtime.backends.base import Sampling

PROTOCOL_VERSION = 0
MODEL_VERSION = 0
# A whole Ogg page of 24 kHz Opus is a few hundred bytes per 80 ms; 64 KiB is seconds of
# audio in one message, more than any client sends, little enough to bound the work one
# message can cause.
MAX_MESSAGE_BYTES = 64 * 1024


class Kind(enum.IntEnum):
    HANDSHAKE = 0x00
    AUDIO = 0x01
    TEXT = 0x02
    CONTROL = 0x03
    METADATA = 0x04
    ERROR = 0x05
    PING = 0x06


class Control(enum.IntEnum):
    START = 0
    END_TURN = 1
    PAUSE = 2
    RESTART = 3


def handshake() -> bytes:
    return bytes([Kind.HANDSHAKE]) + struct.pack("<II", PROTOCOL_VERSION, MODEL_VERSION)


def audio(ogg: bytes) -> bytes:
    return bytes([Kind.AUDIO]) + ogg


def text(piece: str) -> bytes:
    return bytes([Kind.TEXT]) + piece.encode("utf-8")


def metadata(payload: Mapping[str, Any]) -> bytes:
    return bytes([Kind.METADATA]) + json.dumps(payload, separators=(",", ":")).encode("utf-8")


def error(message: str) -> bytes:
    return bytes([Kind.ERROR]) + message.encode("utf-8")


# name in the query string -> (low, high)
_FLOAT_RANGES = {
    "text_temperature": (0.1, 1.5),
    "audio_temperature": (0.1, 1.5),
    # Hertz-dev's latent mixture: the component choice and the Gaussian's spread (0: its mean).
    "categorical_temperature": (0.05, 1.5),
    "gaussian_temperature": (0.0, 1.0),
}
_INT_RANGES = {"text_topk": (1, 500), "audio_topk": (1, 2048)}


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def parse_sampling(query: Mapping[str, str]) -> Sampling:
    """Read the web client's settings; unparsable values are ignored, the rest clamped."""
    found: dict[str, Any] = {}
    for name, float_bounds in _FLOAT_RANGES.items():
        try:
            number = float(query[name])
        except (KeyError, ValueError):
            continue
        if not math.isnan(number):
            found[name] = _clamp(number, float_bounds)
    for name, int_bounds in _INT_RANGES.items():
        try:
            whole = int(float(query[name]))
        except (KeyError, ValueError, OverflowError):
            continue
        found[name] = int(_clamp(whole, int_bounds))
    return Sampling(**found)
