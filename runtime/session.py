"""One live conversation: its slot, its bounded outbox, its input budget, and the two loops every
protocol shares. A protocol subclass only says how to read a client message and how to write a
frame or a notice.

One task writes to the socket (the sender), one reads (the receiver). The bounds, whose numbers
and reasons are in ``limits.py``:

- Output: frames from the engine land in a bounded deque; when a caller reads too slowly the
  oldest are dropped (counted), and one that falls more than ``--max-client-lag-seconds``
  behind (``lag.py``) is dropped. Neither the frame clock nor other sessions wait on it.
- Input: every message is charged to the session's input budget before any work is
  done on it; what does not fit is dropped (counted), and a flood ends the session.
- Deadlines: :meth:`Session.end` queues an error and a close ahead of any audio; if the close
  has not gone out within ``CLOSE_TIMEOUT_SECONDS``, the supervisor aborts the connection.
- The receiver never writes and never waits for the codec, so a caller's close is seen at once,
  whatever it sent before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from voicefleet.api.runtime import SessionLimitNotice
from voicefleet.runtime.backends.base import Pcm
from voicefleet.runtime.budget import TokenBucket
from voicefleet.runtime.endings import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_UNSUPPORTED,
    DROP_RATE,
    END_CLIENT,
    END_CODEC,
    END_ERROR,
    END_IDLE,
    END_INPUT_RATE,
    END_LIMIT,
    END_TOO_SLOW,
)
from voicefleet.runtime.lag import LagProbe
from voicefleet.runtime.limits import (
    CLOSE_TIMEOUT_SECONDS,
    INPUT_FLOOD_SECONDS,
    INPUT_RATE_SLACK,
    MESSAGE_COST_SECONDS,
    MESSAGES_PER_TURN,
)
from voicefleet.runtime.services import Services
from voicefleet.runtime.slots import FrameOutput, SlotHandle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Close:
    code: int
    reason: str
    # False: "fail the WebSocket connection" (RFC 6455, 7.1.7): send the close frame and
    # hang up, without waiting for the caller's own close frame behind whatever it floods.
    handshake: bool = True


@dataclass(frozen=True)
class ErrorMessage:
    text: str


@dataclass(frozen=True)
class Pong:
    payload: bytes


Control = dict[str, Any] | Close | ErrorMessage | Pong


@dataclass(frozen=True)
class Connection:
    """What the route hands a new session: the upgraded socket and the claimed slot."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport
    handle: SlotHandle
    session_id: int


class BadInput(Exception):
    """A client message this protocol cannot accept; the session gets an error and a close."""


class Session(ABC):
    protocol: str = ""
    # True when frames must arrive Opus-encoded (the hub encodes a tick's frames in batches).
    wants_opus: bool = False

    def __init__(self, services: Services, connection: Connection) -> None:
        now = time.monotonic()
        self.services = services
        self.limits = services.limits
        self.metrics = services.metrics
        self.ws = connection.ws
        self.transport = connection.transport
        self.handle = connection.handle
        self.id = connection.session_id
        self.started = now
        # Seconds the conversation ran on another pod before it moved here: they count
        # towards the session cap, which is also the model's context.
        self.elapsed_before = 0.0
        self.first_audio_at: float | None = None
        self.last_audio_at = now
        self.end_reason: str | None = None
        # Set by end(); the supervisor aborts the connection if it is still up a while later.
        self.closing_since: float | None = None
        self.finished = False
        # Seconds of audio the caller may still send ahead of real time (limits.py).
        self.budget = TokenBucket(services.limits.input_burst_seconds, INPUT_RATE_SLACK, now)
        self.lag = LagProbe()
        frames = services.slots.frame.steps(services.limits.queue_seconds)
        self._frames: deque[FrameOutput] = deque(maxlen=frames)
        self._controls: deque[Control] = deque()
        self._wake = asyncio.Event()
        self._aborted = False
        self._ping: asyncio.Future[None] | None = None

    # --- what a protocol implements --------------------------------------------------------
    @abstractmethod
    def on_message(self, kind: WSMsgType, data: Any) -> None:
        """Handle one client message without waiting; raise BadInput to end the session."""

    @abstractmethod
    async def send_frame(self, frame: FrameOutput) -> None:
        """Write one frame of model output (audio, text or both)."""

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
    def on_close(self) -> None:
        """Release per-session resources (codec state) without waiting."""

    # --- for protocols ----------------------------------------------------------------------
    def heard(self) -> None:
        """An audio message arrived: the session is not idle."""
        self.last_audio_at = time.monotonic()

    def admit(self, seconds: float) -> bool:
        """Charge ``seconds`` of input to the budget; False (input dropped) when over it."""
        if self.budget.take(seconds, time.monotonic()):
            return True
        self.drop_input(DROP_RATE)
        if self.budget.refused > INPUT_FLOOD_SECONDS:
            # Reading on would cost the flood's CPU for as long as the close takes: no close
            # handshake with a flooder.
            self.transport.pause_reading()
            self.end(
                CLOSE_POLICY,
                "input faster than real time",
                END_INPUT_RATE,
                error=f"input faster than real time ({self.budget.refused:.0f} s of "
                "audio over budget dropped): send audio as it is spoken",
                handshake=False,
            )
        return False

    def push_frames(self, frames: list[Pcm]) -> None:
        """Hand whole backend frames of caller audio to the engine, counting what it drops."""
        for frame in frames:
            if not self.services.slots.push_input(self.handle, frame):
                self.metrics.queue_drops.labels("input").inc()

    def drop_input(self, reason: str) -> None:
        self.metrics.input_dropped.labels(reason).inc()

    def codec_failed(self, why: object) -> None:
        """The codec worker holding this session's Ogg streams is gone: they cannot go on."""
        self.end(
            CLOSE_INTERNAL_ERROR,
            "codec failure",
            END_CODEC,
            error=f"the audio codec failed ({why}); please reconnect",
        )

    def opus_pcm(self, pcm: Pcm) -> Pcm:
        """A frame of model audio at the Opus codec's rate (for ``wants_opus`` protocols)."""
        return pcm

    # --- called by the hub and the supervisor ---------------------------------------------
    def push_frame(self, frame: FrameOutput) -> None:
        if self.closing_since is not None:
            return  # closing: audio would only delay the close
        if len(self._frames) == self._frames.maxlen:
            self.metrics.queue_drops.labels("output").inc()
        self._frames.append(frame)
        self._wake.set()

    def notify(self, payload: dict[str, Any]) -> None:
        self._controls.append(payload)
        self._wake.set()

    def end(
        self,
        code: int,
        reason: str,
        end_reason: str,
        error: str | None = None,
        *,
        handshake: bool = True,
    ) -> None:
        """Close from the server side: queued notices go first, then ``error`` (if any), then
        the close; queued audio is dropped. The first call's reason sticks. Without
        ``handshake`` the connection is closed right after the close frame (a flood)."""
        if self.closing_since is not None:
            return
        self.closing_since = time.monotonic()
        if self.end_reason is None:
            self.end_reason = end_reason
        self._frames.clear()
        if error is not None:
            self._controls.append(ErrorMessage(error))
        self._controls.append(Close(code, reason, handshake))
        self._wake.set()

    def supervise(self, now: float) -> None:
        """One supervisor pass over this session's deadlines, most final first."""
        config = self.limits
        if self.closing_since is not None:
            if not self.finished and now - self.closing_since > CLOSE_TIMEOUT_SECONDS:
                self.abort()
        elif now - self.started + self.elapsed_before >= config.max_session_seconds:
            self.notify(SessionLimitNotice(max_session_seconds=config.max_session_seconds).wire())
            self.end(CLOSE_NORMAL, "session_limit", END_LIMIT)
        elif now - self.last_audio_at >= config.idle_seconds:
            self.end(
                CLOSE_POLICY,
                "idle",
                END_IDLE,
                error=f"no audio received for {config.idle_seconds:g} s; closing",
            )
        elif self.lag.behind(now) > config.max_client_lag_seconds:
            log.info(
                "session %s: no pong for %.1f s (lag before: %s s): dropping it",
                self.id,
                self.lag.behind(now),
                "none" if self.lag.last_lag is None else f"{self.lag.last_lag:.2f}",
            )
            self.transport.pause_reading()  # its audio would go nowhere now
            self.end(CLOSE_POLICY, "too slow", END_TOO_SLOW)
        elif (payload := self.lag.due(now)) is not None:
            self._send_ping(payload)

    def abort(self) -> None:
        """Drop the connection now: its close could not be sent in time."""
        if self._aborted:
            return
        self._aborted = True
        log.info("session %s: close not sent within %g s, aborting", self.id, CLOSE_TIMEOUT_SECONDS)
        self.metrics.transport_aborts.inc()
        self.transport.abort()

    def audio_sent(self) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
            self.metrics.time_to_first_audio.observe(self.first_audio_at - self.started)

    # --- the two loops ------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self.on_open()
        except ConnectionError:
            # The caller hung up during the upgrade: nothing to tell it, only to count.
            if self.closing_since is None:
                self.metrics.upgrades_aborted.inc()
            self.end_reason = self.end_reason or END_CLIENT
            self._finish()
            return
        self.lag.start(time.monotonic())
        sender = asyncio.create_task(self._send_loop(), name=f"session-{self.id}-send")
        try:
            await self._receive_loop()
        finally:
            if self.end_reason is None:
                self.end_reason = END_CLIENT
            if self.closing_since is not None and not sender.done():
                # Let a server-side close (error, limit, drain) reach the client first.
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(sender), CLOSE_TIMEOUT_SECONDS)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            self._finish()

    def _finish(self) -> None:
        """Release the codec state and make sure the connection ends: closed now, aborted if
        the close has not gone through in time (a full send buffer never flushes to a
        caller that does not read)."""
        self.finished = True
        self.on_close()
        if not self.transport.is_closing():
            self.transport.close()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_SECONDS, self.transport.abort)

    async def _receive_loop(self) -> None:
        count = 0
        async for message in self.ws:
            count += 1
            if count % MESSAGES_PER_TURN == 0:
                # aiohttp hands over queued messages without suspending: without this, one
                # caller's burst would hold the event loop (and everyone's audio) until done.
                await asyncio.sleep(0)
            if message.type == WSMsgType.ERROR:
                log.info("session %s: socket error %s", self.id, self.ws.exception())
                return
            if self.closing_since is not None:
                continue  # closing: whatever still arrives is dropped unread
            if message.type == WSMsgType.PONG:
                lag = self.lag.answered(message.data, time.monotonic())
                if lag is not None:
                    self.metrics.client_lag.observe(lag)
                continue
            # Every message costs something, so a flood of tiny ones is dropped, not queued.
            if not self.admit(MESSAGE_COST_SECONDS):
                continue
            if message.type == WSMsgType.PING:
                self._controls.append(Pong(message.data))
                self._wake.set()
                continue
            try:
                self.on_message(message.type, message.data)
            except BadInput as exc:
                log.info("session %s: bad input: %s", self.id, exc)
                self.end(CLOSE_UNSUPPORTED, "bad input", END_ERROR, error=str(exc))

    def _send_ping(self, payload: bytes) -> None:
        # A task of its own: a ping must not wait behind a frame the sender is stuck on.
        self._ping = asyncio.ensure_future(self.ws.ping(payload))
        self._ping.add_done_callback(_ignore_hang_up)

    async def _close(self, close: Close) -> None:
        if not close.handshake:
            await self.ws.send_frame(_close_frame(close), WSMsgType.CLOSE)
            self.transport.close()
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                self.ws.close(code=close.code, message=close.reason.encode()),
                CLOSE_TIMEOUT_SECONDS,
            )

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
                    await self._close(control)
                    return
                if isinstance(control, ErrorMessage):
                    await self.send_error(control.text)
                elif isinstance(control, Pong):
                    await self.ws.pong(control.payload)
                else:
                    await self.send_notice(control)
            while self._frames and not self._controls:
                await self.send_frame(self._frames.popleft())


def _close_frame(close: Close) -> bytes:
    return struct.pack("!H", close.code) + close.reason.encode()


def _ignore_hang_up(ping: asyncio.Future[None]) -> None:
    """A ping to a caller that has gone fails; the receive loop sees the close."""
    if not ping.cancelled() and not isinstance(ping.exception(), ConnectionError | None):
        log.warning("lag probe failed: %r", ping.exception())
