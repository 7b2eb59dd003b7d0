"""Ogg/Opus encoding and decoding for many sessions, spread over worker processes.

sphn holds the GIL while it encodes or decodes, so threads would serialize every session's
codec work on one core, and compete with the engine thread for the GIL. Each session's codec
state (an Ogg stream reader and writer) therefore lives in one worker process, picked by
session number; requests and replies cross a pipe, and each session awaits its requests in
order, so its audio stays in order. With ``workers=0`` the codec runs in the calling thread
(for tools and tiny setups).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import multiprocessing
import queue
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import sphn

from voicefleet import constants

Pcm = np.ndarray[Any, np.dtype[np.float32]]
# How long an incoming audio message may wait to be decoded with others: a quarter of a
# frame, small next to the 80 ms the engine waits between steps anyway.
DECODE_BATCH_SECONDS = 0.02


class CodecError(Exception):
    """The bytes a client sent are not Ogg/Opus (or the codec failed on them)."""


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

    The threads keep the event loop from ever blocking on a full pipe."""

    def __init__(self, index: int, loop: asyncio.AbstractEventLoop) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._conn = parent
        self._loop = loop
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._outbox: queue.SimpleQueue[tuple[int, str, int, Any] | None] = queue.SimpleQueue()
        self.process = context.Process(
            target=_worker_main, args=(child,), name=f"voicefleet-codec-{index}", daemon=True
        )
        self.process.start()
        child.close()
        threading.Thread(target=self._write, name=f"codec-{index}-tx", daemon=True).start()
        threading.Thread(target=self._read, name=f"codec-{index}-rx", daemon=True).start()

    def submit(self, request_id: int, op: str, sid: int, payload: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[request_id] = future
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
                self._loop.call_soon_threadsafe(self._fail_all)
                return
            self._loop.call_soon_threadsafe(self._resolve, request_id, ok, result)

    def _resolve(self, request_id: int, ok: bool, result: Any) -> None:
        future = self._pending.pop(request_id, None)
        if future is None or future.done():
            return
        if ok:
            future.set_result(result)
        else:
            future.set_exception(CodecError(result))

    def _fail_all(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CodecError("codec worker exited"))
        self._pending.clear()

    def close(self) -> None:
        self._outbox.put(None)
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()


def _settle_decodes(
    items: list[tuple[int, bytes, asyncio.Future[Pcm]]], reply: asyncio.Future[Any]
) -> None:
    failure = None if reply.cancelled() else reply.exception()
    for index, (_, _, future) in enumerate(items):
        if future.done():
            continue
        if reply.cancelled() or failure is not None:
            future.set_exception(CodecError(f"codec worker failed: {failure}"))
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
        self._flush_scheduled = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._workers = [_Worker(i, loop) for i in range(self._workers_wanted)]

    async def _call(self, op: str, sid: int, payload: Any) -> Any:
        if not self._workers:
            try:
                return self._local.handle(op, sid, payload)
            except Exception as exc:
                raise CodecError(f"{type(exc).__name__}: {exc}") from exc
        worker = self._workers[sid % len(self._workers)]
        return await worker.submit(next(self._ids), op, sid, payload)

    async def open(self, sid: int) -> None:
        await self._call("open", sid, None)

    async def close(self, sid: int) -> None:
        await self._call("close", sid, None)

    async def decode(self, sid: int, ogg: bytes) -> Pcm:
        """Ogg pages in, 24 kHz float PCM out (possibly empty: Opus needs whole packets).

        Requests wait up to DECODE_BATCH_SECONDS and go to each worker together: with 80
        callers sending 20 ms pages that is 400 pipe round trips a second instead of 4000,
        and the engine thread competes with far less socket-side Python for the GIL."""
        if not self._workers or self._loop is None:
            pcm: Pcm = await self._call("decode", sid, ogg)
            return pcm
        future: asyncio.Future[Pcm] = self._loop.create_future()
        self._to_decode.setdefault(self.worker_of(sid), []).append((sid, ogg, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_later(DECODE_BATCH_SECONDS, self._flush_decodes)
        return await future

    def _flush_decodes(self) -> None:
        self._flush_scheduled = False
        batches, self._to_decode = self._to_decode, {}
        for worker, items in batches.items():
            request = [(sid, ogg) for sid, ogg, _ in items]
            reply = self._workers[worker].submit(next(self._ids), "decode_batch", -1, request)
            reply.add_done_callback(functools.partial(_settle_decodes, items))

    def worker_of(self, sid: int) -> int:
        """Which worker holds a session's codec state (0 when in-process)."""
        return sid % len(self._workers) if self._workers else 0

    async def encode_batch(self, worker: int, items: list[tuple[int, Pcm | None]]) -> list[bytes]:
        """Encode one frame for each of several sessions of one worker, in order.

        One request per worker per tick instead of one per session: at 80 sessions that is
        100 pipe round trips a second instead of 1000, and far less GIL time in the server."""
        if not self._workers:
            return list(self._local.handle("encode_batch", -1, items))
        request_id = next(self._ids)
        result: list[bytes] = await self._workers[worker].submit(
            request_id, "encode_batch", -1, items
        )
        return result

    def shutdown(self) -> None:
        for worker in self._workers:
            worker.close()
        self._workers = []
