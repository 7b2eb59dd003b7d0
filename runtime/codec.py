"""Ogg/Opus encoding and decoding for many sessions, spread over worker processes.

sphn holds the GIL while it encodes or decodes, so threads would serialize every session's
codec work on one core, and compete with the engine thread for the GIL. Each session's codec
state (an Ogg stream reader and writer) therefore lives in one worker process, picked by
session number; requests and replies cross a pipe, and each session awaits its requests in
order, so its audio stays in order. With ``workers=0`` the codec runs in the calling thread
(for tools and tiny setups).

A worker can die (an OOM kill) or wedge. Every request is therefore a future that fails with
:class:`CodecUnavailable` when its worker exits, and the supervisor replaces a worker that
has exited or left a request unanswered too long (:meth:`CodecPool.problems`,
:meth:`CodecPool.restart`). The sessions whose Ogg streams lived there cannot go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import sphn

from voicefleet import constants
from voicefleet.runtime.limits import CODEC_REPLY_TIMEOUT_SECONDS, CODEC_START_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

Pcm = np.ndarray[Any, np.dtype[np.float32]]
# How long an incoming audio message may wait to be decoded with others: a quarter of a
# frame, small next to the 80 ms the engine waits between steps anyway.
DECODE_BATCH_SECONDS = 0.02
# (A session's first audio does not wait: its slot is first stepped once it is decoded, so
# the wait would add to the time to first audio; see ``decode``'s ``urgent``.)
# The request id of the message a worker sends once it is up (its pid).
READY_ID = -1
# How long shutdown waits for every worker together before killing what is left.
SHUTDOWN_JOIN_SECONDS = 2.0
# How long after replacing a worker its exit code is looked up (it is reaped by then).
REAP_DELAY_SECONDS = 1.0


class CodecError(Exception):
    """The bytes a client sent are not Ogg/Opus (or the codec failed on them)."""


class CodecUnavailable(Exception):
    """The worker holding a session's codec state exited or stopped answering."""


class _Codecs:
    """The per-session Ogg/Opus state; lives in a worker process or in-process."""

    def __init__(self) -> None:
        self._readers: dict[int, Any] = {}
        self._writers: dict[int, Any] = {}

    def handle(self, op: str, sid: int, payload: Any) -> Any:
        if op == "open":
            self._readers[sid] = sphn.OpusStreamReader(constants.MOSHI_SAMPLE_RATE)
            self._writers[sid] = sphn.OpusStreamWriter(constants.MOSHI_SAMPLE_RATE)
            return None
        if op == "close":
            self._readers.pop(sid, None)
            self._writers.pop(sid, None)
            return None
        if op == "decode":
            return self._readers[sid].append_bytes(payload)
        if op == "encode":
            return self._writers[sid].append_pcm(payload)
        if op == "decode_batch":
            # Every message that arrived for this worker's sessions in the last few
            # milliseconds; one bad session's bytes fail only that item.
            decoded: list[tuple[bool, Any]] = []
            for session, ogg in payload:
                try:
                    decoded.append((True, self._readers[session].append_bytes(ogg)))
                except Exception as exc:
                    decoded.append((False, f"{type(exc).__name__}: {exc}"))
            return decoded
        if op == "encode_batch":
            # One tick's frames of every session on this worker, in one round trip. A session
            # closed meanwhile (no writer any more) gets nothing.
            out: list[bytes] = []
            for session, pcm in payload:
                writer = self._writers.get(session)
                out.append(b"" if writer is None or pcm is None else writer.append_pcm(pcm))
            return out
        raise ValueError(f"unknown codec op {op!r}")


def _worker_main(conn: Connection) -> None:
    codecs = _Codecs()
    conn.send((READY_ID, True, os.getpid()))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        request_id, op, sid, payload = message
        try:
            conn.send((request_id, True, codecs.handle(op, sid, payload)))
        except Exception as exc:
            conn.send((request_id, False, f"{type(exc).__name__}: {exc}"))


class _Worker:
    """One codec process, a writer thread feeding its pipe and a reader thread for replies.

    The threads keep the event loop from ever blocking on a full pipe. Every other method
    runs on the event loop."""

    def __init__(
        self, index: int, loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None]
    ) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.index = index
        self._on_exit_callback = on_exit
        self._conn = parent
        self._loop = loop
        # request id -> (its future, when it was sent); oldest first.
        self._pending: dict[int, tuple[asyncio.Future[Any], float]] = {}
        self._outbox: queue.SimpleQueue[tuple[int, str, int, Any] | None] = queue.SimpleQueue()
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self.exited = False
        self.process = context.Process(
            target=_worker_main, args=(child,), name=f"voicefleet-codec-{index}", daemon=True
        )
        self.process.start()
        child.close()
        threading.Thread(target=self._write, name=f"codec-{index}-tx", daemon=True).start()
        threading.Thread(target=self._read, name=f"codec-{index}-rx", daemon=True).start()

    def submit(self, request_id: int, op: str, sid: int, payload: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.exited:
            future.set_exception(CodecUnavailable(f"codec worker {self.index} exited"))
            return future
        self._pending[request_id] = (future, time.monotonic())
        self._outbox.put((request_id, op, sid, payload))
        return future

    def _write(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self._conn.send(message)
            except (OSError, ValueError):
                return

    def _read(self) -> None:
        while True:
            try:
                request_id, ok, result = self._conn.recv()
            except (EOFError, OSError):
                self._to_loop(self._on_exit)
                return
            self._to_loop(self._resolve, request_id, ok, result)

    def _to_loop(self, callback: Any, *args: Any) -> None:
        # At shutdown the loop may be closed before a worker's pipe reports its end.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _resolve(self, request_id: int, ok: bool, result: Any) -> None:
        if request_id == READY_ID:
            self.ready_at = time.monotonic()
            return
        future = self._pending.pop(request_id, (None, 0.0))[0]
        if future is None or future.done():
            return
        if ok:
            future.set_result(result)
        else:
            future.set_exception(CodecError(result))

    def _on_exit(self) -> None:
        if self.exited:
            return  # killed on purpose: already replaced
        self.exited = True
        self.fail_pending("exited")
        self._on_exit_callback()

    def fail_pending(self, why: str) -> None:
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(CodecUnavailable(f"codec worker {self.index} {why}"))
        self._pending.clear()

    def problem(self, now: float) -> str | None:
        """Why this worker must be replaced, or None while it is healthy."""
        if self.exited or not self.process.is_alive():
            return "exited"  # its exit code is logged once it can be reaped
        if self.ready_at is None:
            if now - self.started > CODEC_START_TIMEOUT_SECONDS:
                return f"did not start within {CODEC_START_TIMEOUT_SECONDS:.0f} s"
            return None
        if self._pending:
            _, oldest = next(iter(self._pending.values()))
            # Requests sent before the worker was up wait from the moment it was.
            if now - max(oldest, self.ready_at) > CODEC_REPLY_TIMEOUT_SECONDS:
                return f"left a request unanswered for {CODEC_REPLY_TIMEOUT_SECONDS:.0f} s"
        return None

    def kill(self) -> None:
        """Stop at once; pending requests fail, the threads end on the closed pipe."""
        self.exited = True
        self.fail_pending("was replaced")
        self._outbox.put(None)
        if self.process.is_alive():
            self.process.kill()

    def ask_to_stop(self) -> None:
        self._outbox.put(None)
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)


def _report_exit(worker: _Worker) -> None:
    worker.process.join(0)  # reaps it if it has ended, never waits
    log.info(
        "codec worker %d (pid %s) ended with exit code %s",
        worker.index,
        worker.process.pid,
        worker.process.exitcode,
    )


def _settle_decodes(
    items: list[tuple[int, bytes, asyncio.Future[Pcm]]], reply: asyncio.Future[Any]
) -> None:
    failure = CodecUnavailable("cancelled") if reply.cancelled() else reply.exception()
    for index, (_, _, future) in enumerate(items):
        if future.done():
            continue
        if failure is not None:
            future.set_exception(failure)
            continue
        ok, result = reply.result()[index]
        if ok:
            future.set_result(result)
        else:
            future.set_exception(CodecError(result))


class CodecPool:
    """Ogg/Opus codec state per session, on ``workers`` processes (0: in-process)."""

    def __init__(self, workers: int) -> None:
        self._workers_wanted = workers
        self._workers: list[_Worker] = []
        self._local = _Codecs()
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._to_decode: dict[int, list[tuple[int, bytes, asyncio.Future[Pcm]]]] = {}
        self._flush: asyncio.Handle | None = None
        # Called on the event loop when a worker's process ends unasked: the supervisor looks
        # at once instead of at its next pass, so a new caller meets a fresh worker.
        self.on_worker_exit: Callable[[], None] = lambda: None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._workers = [self._spawn(i) for i in range(self._workers_wanted)]

    def _spawn(self, index: int) -> _Worker:
        assert self._loop is not None
        worker = _Worker(index, self._loop, self._worker_exited)
        log.info("codec worker %d: pid %s", index, worker.process.pid)
        return worker

    def _worker_exited(self) -> None:
        # Looked up when called: the supervisor sets the hook after the workers start.
        self.on_worker_exit()

    # --- supervision (called by the supervisor) ----------------------------------------------
    def problems(self, now: float) -> list[tuple[int, str]]:
        """(worker, why) for every worker that must be replaced."""
        found = []
        for worker in self._workers:
            problem = worker.problem(now)
            if problem is not None:
                found.append((worker.index, problem))
        return found

    def restart(self, index: int) -> None:
        """Replace a worker: its pending requests (and decodes not yet sent) fail with
        CodecUnavailable, and new sessions on it start on a fresh process."""
        old = self._workers[index]
        old.kill()
        for _, _, future in self._to_decode.pop(index, []):
            if not future.done():
                future.set_exception(CodecUnavailable(f"codec worker {index} was replaced"))
        self._workers[index] = self._spawn(index)
        # Its pipe closes a moment before the process can be reaped; waiting here would stall
        # every session's audio, so the exit code (-9: killed, as by the OOM killer) is
        # looked up a little later.
        assert self._loop is not None
        self._loop.call_later(REAP_DELAY_SECONDS, _report_exit, old)

    def pids(self) -> list[int | None]:
        return [worker.process.pid for worker in self._workers]

    # --- requests --------------------------------------------------------------------------
    def _call(self, op: str, sid: int, payload: Any) -> asyncio.Future[Any]:
        if not self._workers:
            return self._local_call(op, sid, payload)
        worker = self._workers[sid % len(self._workers)]
        return worker.submit(next(self._ids), op, sid, payload)

    def _local_call(self, op: str, sid: int, payload: Any) -> asyncio.Future[Any]:
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        try:
            future.set_result(self._local.handle(op, sid, payload))
        except Exception as exc:
            future.set_exception(CodecError(f"{type(exc).__name__}: {exc}"))
        return future

    def open(self, sid: int) -> asyncio.Future[None]:
        """Create a session's Ogg/Opus state. Nothing needs to wait for it: a worker handles
        one session's requests in the order sent, so its first decode finds the state (and
        a session starting does not wait a round trip to a busy worker)."""
        return self._call("open", sid, None)

    def close(self, sid: int) -> asyncio.Future[None]:
        """Drop a session's codec state; nothing needs to wait for it."""
        return self._call("close", sid, None)

    def decode(self, sid: int, ogg: bytes, *, urgent: bool = False) -> asyncio.Future[Pcm]:
        """Ogg pages in, 24 kHz float PCM out (possibly empty: Opus needs whole packets).

        Requests wait up to DECODE_BATCH_SECONDS and go to each worker together: with 80
        callers sending 20 ms pages that is 400 pipe round trips a second instead of 4000,
        and the engine thread competes with far less socket-side Python for the GIL. One
        session's results come back in the order asked. An ``urgent`` request (a session's
        first audio) goes with whatever waits once the event loop has handled what it
        holds now."""
        if not self._workers or self._loop is None:
            return self._call("decode", sid, ogg)
        future: asyncio.Future[Pcm] = self._loop.create_future()
        self._to_decode.setdefault(self.worker_of(sid), []).append((sid, ogg, future))
        if self._flush is None:
            self._flush = (
                self._loop.call_soon(self._flush_decodes)
                if urgent
                else self._loop.call_later(DECODE_BATCH_SECONDS, self._flush_decodes)
            )
        elif urgent and isinstance(self._flush, asyncio.TimerHandle):
            self._flush.cancel()
            self._flush = self._loop.call_soon(self._flush_decodes)
        return future

    def _flush_decodes(self) -> None:
        self._flush = None
        batches, self._to_decode = self._to_decode, {}
        for worker, items in batches.items():
            request = [(sid, ogg) for sid, ogg, _ in items]
            reply = self._workers[worker].submit(next(self._ids), "decode_batch", -1, request)
            reply.add_done_callback(functools.partial(_settle_decodes, items))

    def worker_of(self, sid: int) -> int:
        """Which worker holds a session's codec state (0 when in-process)."""
        return sid % len(self._workers) if self._workers else 0

    def encode_batch(
        self, worker: int, items: list[tuple[int, Pcm | None]]
    ) -> asyncio.Future[list[bytes]]:
        """Encode one frame for each of several sessions of one worker, in order.

        One request per worker per tick instead of one per session: at 80 sessions that is
        100 pipe round trips a second instead of 1000, and far less GIL time in the server."""
        if not self._workers:
            return self._local_call("encode_batch", -1, items)
        return self._workers[worker].submit(next(self._ids), "encode_batch", -1, items)

    def shutdown(self) -> None:
        """Ask every worker to stop, wait for them together, kill what is left."""
        for worker in self._workers:
            worker.ask_to_stop()
        deadline = time.monotonic() + SHUTDOWN_JOIN_SECONDS
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
        self._workers = []
