"""What a move changes in each protocol's stream, so a caller never sees it: per relayed
path, how a pod's drain notice is recognised, which messages of a new pod's greeting are
hidden, and how audio is renumbered across pods (Ogg/Opus on ``/api/chat``: ``ogg_splice``).

``/ws/pcm`` is raw PCM, so its audio needs nothing; ``/audio`` (Hertz-dev's reference
protocol) has no notices and no greeting. Every message of a path not named here passes as
it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType

from voicefleet import constants
from voicefleet.gateway.ogg_splice import OggError, TowardClient, TowardPod

# Moshi's kind bytes (kyutai-labs/moshi rust/protocol.md).
MOSHI_HANDSHAKE = 0x00
MOSHI_AUDIO = 0x01
MOSHI_METADATA = 0x04
NOTICE_DRAIN = "drain"
NOTICE_SESSION = "session"


def _notice_type(text: str | bytes) -> str | None:
    try:
        notice = json.loads(text)
    except ValueError:
        return None
    kind = notice.get("type") if isinstance(notice, dict) else None
    return kind if isinstance(kind, str) else None


class Streams:
    """Pass everything: the behaviour of a path with nothing to hide or renumber."""

    def drain_notice(self, kind: WSMsgType, data: Any) -> bool:
        """Whether a pod's message is its drain notice (the gateway moves the conversation
        instead of passing the notice on)."""
        return False

    def greeting(self, kind: WSMsgType, data: Any) -> bool:
        """Whether a new pod's message is its greeting, which the caller must not see (it
        greeted the caller on the first pod already); each part is hidden once."""
        return False

    def down(self, kind: WSMsgType, data: Any) -> Any:
        """A pod's message as the caller gets it."""
        return data

    def up(self, kind: WSMsgType, data: Any) -> Any:
        """A caller's message as the pod gets it."""
        return data

    def begin_switch(self) -> None:
        """The caller's messages go to a new pod's session from now on; its greeting is
        hidden."""

    def cut_over(self) -> None:
        """What the caller hears comes from the new pod from now on (the old pod's stream
        was relayed until the new one had something to say)."""


class PcmStreams(Streams):
    """``/ws/pcm``: notices are JSON text; a new pod greets with a session notice."""

    def __init__(self) -> None:
        self._greeting = False

    def drain_notice(self, kind: WSMsgType, data: Any) -> bool:
        return kind is WSMsgType.TEXT and _notice_type(data) == NOTICE_DRAIN

    def greeting(self, kind: WSMsgType, data: Any) -> bool:
        if self._greeting and kind is WSMsgType.TEXT and _notice_type(data) == NOTICE_SESSION:
            self._greeting = False
            return True
        return False

    def begin_switch(self) -> None:
        self._greeting = True


class MoshiStreams(Streams):
    """``/api/chat``: a new pod greets with the handshake byte and a session notice (0x04),
    and starts an Ogg/Opus stream of its own each way."""

    def __init__(self) -> None:
        self.toward_client = TowardClient()
        self.toward_pod = TowardPod()
        self._hide: set[int] = set()

    def drain_notice(self, kind: WSMsgType, data: Any) -> bool:
        return (
            kind is WSMsgType.BINARY
            and data[:1] == bytes([MOSHI_METADATA])
            and _notice_type(data[1:]) == NOTICE_DRAIN
        )

    def greeting(self, kind: WSMsgType, data: Any) -> bool:
        if kind is not WSMsgType.BINARY or not data:
            return False
        first = data[0]
        if first in self._hide and (
            first != MOSHI_METADATA or _notice_type(data[1:]) == NOTICE_SESSION
        ):
            self._hide.discard(first)
            return True
        return False

    def down(self, kind: WSMsgType, data: Any) -> Any:
        if kind is WSMsgType.BINARY and data[:1] == bytes([MOSHI_AUDIO]):
            return _audio(self.toward_client.rewrite, data)
        return data

    def up(self, kind: WSMsgType, data: Any) -> Any:
        if kind is WSMsgType.BINARY and data[:1] == bytes([MOSHI_AUDIO]):
            return _audio(self.toward_pod.rewrite, data)
        return data

    def begin_switch(self) -> None:
        self.toward_pod.switch()
        self._hide = {MOSHI_HANDSHAKE, MOSHI_METADATA}

    def cut_over(self) -> None:
        self.toward_client.switch()


def _audio(rewrite: Callable[[bytes], bytes], data: bytes) -> bytes:
    """An audio message with its Ogg pages renumbered; one that is not whole pages (a
    client's own framing) goes on as it is: the pod's reader judges it."""
    try:
        return bytes([MOSHI_AUDIO]) + rewrite(data[1:])
    except OggError:
        return data


def streams_for(path: str) -> Streams:
    if path == constants.PATH_MOSHI_CHAT:
        return MoshiStreams()
    if path == constants.PATH_PCM:
        return PcmStreams()
    return Streams()
