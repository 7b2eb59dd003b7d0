"""One live conversation: its slot, its bounded outbox, and the two loops every protocol
shares. A protocol subclass only says how to read a client message and how to write a frame
or a notice.

One task writes to the socket (the sender), one reads (the receiver). Frames from the engine
land in a bounded deque: when a client reads too slowly, the oldest frames are dropped and
counted, and neither the frame clock nor other sessions ever wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from voicefleet.runtime.engine import FrameOutput, SlotHandle

if TYPE_CHECKING:
    from voicefleet.runtime.hub import Hub

log = logging.getLogger(__name__)

# Ended-by reasons (the label of voicefleet_runtime_sessions_ended_total).
END_CLIENT = "client_closed"
END_LIMIT = "session_limit"
END_DRAIN = "drain_deadline"
END_ERROR = "bad_input"
END_SHUTDOWN = "shutdown"

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
# How long a close handshake may take before the socket is dropped; a stalled client must
# not hold its slot past a deadline.
CLOSE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


class BadInput(Exception):
    """A client message this protocol cannot accept; the session gets an error and a close."""


class Session(ABC):
    protocol: str = ""
    # True when frames must arrive Opus-encoded (the hub encodes a tick's frames in batches).
    wants_opus: bool = False

    def __init__(
        self, hub: Hub, ws: web.WebSocketResponse, handle: SlotHandle, session_id: int
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.handle = handle
        self.id = session_id
        self.started = time.monotonic()
        self.first_audio_at: float | None = None
        self.end_reason: str | None = None
        self._frames: deque[FrameOutput] = deque(maxlen=hub.config.output_queue_frames)
        self._controls: deque[dict[str, Any] | Close] = deque()
        self._wake = asyncio.Event()
        self._closing = False

    # --- what a protocol implements --------------------------------------------------------
    @abstractmethod
    async def on_message(self, kind: WSMsgType, data: Any) -> None:
        """Handle one client message; raise BadInput to end the session with an error."""

    @abstractmethod
    async def send_frame(self, frame: FrameOutput) -> None:
        """Write one 80 ms frame of model output (audio, text or both)."""

    @abstractmethod
    async def send_notice(self, payload: dict[str, Any]) -> None:
        """Write a JSON notice (drain, session limit, session info)."""

    @abstractmethod
    async def send_error(self, message: str) -> None:
        """Tell the client why it is being closed."""

    @abstractmethod
    async def on_open(self) -> None:
        """Runs after the upgrade, before any frame (the Moshi handshake goes here)."""

    @abstractmethod
    async def on_close(self) -> None:
        """Release per-session resources (codec state)."""

    # --- called by the hub ------------------------------------------------------------------
    def push_frame(self, frame: FrameOutput) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.hub.metrics.queue_drops.labels("output").inc()
        self._frames.append(frame)
        self._wake.set()

    def notify(self, payload: dict[str, Any]) -> None:
        self._controls.append(payload)
        self._wake.set()

    def close(self, code: int, reason: str, end_reason: str) -> None:
        """Close from the server side after what is queued; the first reason given sticks."""
        if self._closing:
            return
        self._closing = True
        if self.end_reason is None:
            self.end_reason = end_reason
        self._controls.append(Close(code, reason))
        self._wake.set()

    def audio_sent(self) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
            self.hub.metrics.time_to_first_audio.observe(self.first_audio_at - self.started)

    # --- the two loops ------------------------------------------------------------------------
    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name=f"session-{self.id}-send")
        try:
            await self.on_open()
            await self._receive_loop()
        finally:
            if self.end_reason is None:
                self.end_reason = END_CLIENT
            if self._closing and not sender.done():
                # Let a server-side close (error, limit, drain) reach the client first.
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(sender), CLOSE_TIMEOUT_SECONDS)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            await self.on_close()

    async def _receive_loop(self) -> None:
        async for message in self.ws:
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if message.type == WSMsgType.ERROR:
                log.info("session %s: socket error %s", self.id, self.ws.exception())
                return
            if self.end_reason is not None:
                continue  # closing: whatever still arrives is ignored
            try:
                await self.on_message(message.type, message.data)
            except BadInput as exc:
                log.info("session %s: bad input: %s", self.id, exc)
                await self._fail(str(exc))
                return

    async def _fail(self, message: str) -> None:
        self.end_reason = END_ERROR
        self._closing = True
        self._controls.appendleft(Close(CLOSE_UNSUPPORTED, "bad input"))
        self._controls.appendleft({"__error__": message})
        self._wake.set()
        # Wait for the sender to flush the error and close.
        await asyncio.sleep(0)

    async def _send_loop(self) -> None:
        try:
            await self._send_all()
        except ConnectionError:
            # The client went away mid-write; the receive loop sees the close and ends.
            return

    async def _send_all(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._controls:
                control = self._controls.popleft()
                if isinstance(control, Close):
                    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                        await asyncio.wait_for(
                            self.ws.close(code=control.code, message=control.reason.encode()),
                            CLOSE_TIMEOUT_SECONDS,
                        )
                    return
                if "__error__" in control:
                    await self.send_error(str(control["__error__"]))
                else:
                    await self.send_notice(control)
            while self._frames and not self._controls:
                await self.send_frame(self._frames.popleft())
