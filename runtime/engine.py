"""The batched session engine: one Mimi and one LM, a fixed number of slots, and a frame
clock that steps every active slot together every 80 ms.

Why a dedicated thread: a step is GPU work plus a device-to-host copy that blocks until the
GPU is done. On the asyncio loop it would stall every socket for tens of milliseconds;
here the loop keeps moving bytes while the GPU computes, and hands frames over through
thread-safe deques and one ``on_frame`` callback per tick.

Joining and leaving never make another session wait: a new session's slot is reset with
``reset_streaming(mask)`` (only that slot's caches and offsets), and ``set_exec_mask`` keeps
free slots' state untouched, so the batch shape, and with it the CUDA graphs that moshi
captures, stay fixed for the life of the process. ``LMGen`` runs with
``support_out_of_sync=True``, because without it a reset rewinds a global step counter and
holds back every slot's output for the model's delay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from moshi.models.lm import LMGen

from voicefleet import constants
from voicefleet.runtime.backends.base import LoadedModel
from voicefleet.runtime.config import FRAME_SECONDS
from voicefleet.runtime.frame_stats import FrameStats

log = logging.getLogger(__name__)

FRAME_SAMPLES = constants.MOSHI_FRAME_SAMPLES
WARMUP_FRAMES = 4
# Text temperature a session may ask for: below 0.1 the logits overflow bf16 when scaled,
# above 1.5 the model's text degenerates.
TEXT_TEMPERATURE_RANGE = (0.1, 1.5)


@dataclass(frozen=True)
class SlotHandle:
    """A session's claim on a slot; ``generation`` tells its frames from a later occupant's."""

    slot: int
    generation: int


@dataclass(frozen=True)
class FrameOutput:
    slot: int
    generation: int
    pcm: np.ndarray[Any, np.dtype[np.float32]] | None  # None during the model's initial delay
    text: str | None
    ogg: bytes = b""  # the pcm as Ogg/Opus pages, filled in for Moshi-protocol sessions


FrameCallback = Callable[[list[FrameOutput]], None]


class BatchedEngine:
    """Owns the model from :meth:`start` on; every other method is safe from any thread."""

    def __init__(
        self,
        model: LoadedModel,
        capacity: int,
        *,
        on_frame: FrameCallback,
        stats: FrameStats,
        input_queue_frames: int = 25,
        on_step: Callable[[float, bool], None] | None = None,
    ) -> None:
        self.model = model
        self.capacity = capacity
        self._on_frame = on_frame
        self._on_step = on_step
        self.stats = stats
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._free = list(range(capacity))
        self._generation = [0] * capacity
        self._joining: set[int] = set()
        self._leaving: set[int] = set()
        self._active = np.zeros(capacity, dtype=bool)
        self._inputs: list[deque[np.ndarray[Any, np.dtype[np.float32]]]] = [
            deque(maxlen=input_queue_frames) for _ in range(capacity)
        ]
        self._text_temperature = np.full(capacity, model.temp_text, dtype=np.float32)
        self._thread: threading.Thread | None = None
        self._lm_gen: Any = None
        self._text_scale: Any = None
        self.silent_frames = 0
        self._last_late_log = 0.0
        # time.monotonic() of the clock loop's last pass: the supervisor's heartbeat.
        self.beat = time.monotonic()

    # --- called from the event loop ------------------------------------------------------
    def acquire(self, text_temperature: float | None = None) -> SlotHandle | None:
        """Claim the lowest free slot, or None when full. The slot is reset on the next tick."""
        with self._lock:
            if not self._free or not self.ready.is_set():
                return None
            slot = min(self._free)
            self._free.remove(slot)
            self._generation[slot] += 1
            self._inputs[slot].clear()
            self._joining.add(slot)
            # A slot given back since the last tick is taken again: the join resets it anyway.
            self._leaving.discard(slot)
            if text_temperature is not None:
                low, high = TEXT_TEMPERATURE_RANGE
                self._text_temperature[slot] = min(max(text_temperature, low), high)
            else:
                self._text_temperature[slot] = self.model.temp_text
            handle = SlotHandle(slot, self._generation[slot])
        self._wake.set()
        return handle

    def release(self, handle: SlotHandle) -> None:
        """Give the slot back at once; the next tick freezes its state (exec mask off).

        Free at once, not after the tick, so a caller who arrives right after another hung up
        is never refused for a slot that is only waiting for the clock."""
        with self._lock:
            if self._generation[handle.slot] != handle.generation:
                return
            self._generation[handle.slot] += 1
            self._inputs[handle.slot].clear()
            self._joining.discard(handle.slot)
            self._leaving.add(handle.slot)
            self._free.append(handle.slot)
        self._wake.set()

    def restart(self, handle: SlotHandle) -> None:
        """Start the slot's conversation over (Moshi's control message Restart)."""
        with self._lock:
            if self._generation[handle.slot] == handle.generation:
                self._inputs[handle.slot].clear()
                self._joining.add(handle.slot)

    def push_input(self, handle: SlotHandle, frame: np.ndarray[Any, np.dtype[np.float32]]) -> bool:
        """Queue one 1920-sample frame; False when the queue was full and the oldest dropped."""
        queue = self._inputs[handle.slot]
        dropped = len(queue) == queue.maxlen
        queue.append(frame)
        return not dropped

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return self.capacity - len(self._free)

    @property
    def free_slots(self) -> int:
        with self._lock:
            return len(self._free) if self.ready.is_set() else 0

    # --- the engine thread -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="voicefleet-engine", daemon=True)
        self._thread.start()

    def problem(self, now: float, stall_seconds: float) -> str | None:
        """Why the engine can no longer serve (failed, thread gone, wedged), or None."""
        if self.failure is not None:
            return f"failed: {self.failure!r}"
        if self._thread is not None and not self._thread.is_alive():
            return "its thread ended"
        if self.ready.is_set() and now - self.beat > stall_seconds:
            return f"no step for {now - self.beat:.0f} s"
        return None

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._setup()
            self.beat = time.monotonic()
            self.ready.set()
            self._clock()
        except BaseException as exc:  # the server reports it on /healthz and exits
            log.exception("engine failed")
            self.failure = exc
            self.ready.clear()

    def _setup(self) -> None:
        model = self.model
        torch.set_grad_enabled(False)
        self._lm_gen = LMGen(
            model.lm,
            temp=model.temp,
            temp_text=model.temp_text,
            top_k=model.top_k,
            top_k_text=model.top_k_text,
            support_out_of_sync=True,
            on_text_logits_hook=self._scale_text_logits,
        )
        self._text_scale = torch.ones(self.capacity, device=model.device, dtype=torch.float32)
        # Page-locked staging buffers: the copies in and out run as DMA without an extra
        # host copy, and the step needs one synchronisation instead of three.
        pin = model.device.type == "cuda"
        self._frames_host = torch.zeros((self.capacity, FRAME_SAMPLES), pin_memory=pin)
        self._tokens_host = torch.zeros(
            (self.capacity, model.lm.dep_q + 1), dtype=torch.long, pin_memory=pin
        )
        self._pcm_host = torch.zeros((self.capacity, FRAME_SAMPLES), pin_memory=pin)
        model.mimi.streaming_forever(self.capacity)
        self._lm_gen.streaming_forever(self.capacity)
        # Warm up with every slot running: moshi captures its CUDA graphs on the first calls,
        # which must happen here, in this thread, before any session is timed.
        silence = np.zeros((self.capacity, FRAME_SAMPLES), dtype=np.float32)
        for _ in range(WARMUP_FRAMES):
            self._step(silence)
        everything = torch.ones(self.capacity, dtype=torch.bool)
        model.mimi.reset_streaming(everything)
        self._lm_gen.reset_streaming(everything)
        self._set_exec_mask(np.zeros(self.capacity, dtype=bool))

    def _scale_text_logits(self, text_logits: Any) -> None:
        # LMGen divides by its own temp_text after this hook; multiplying by
        # temp_text / wanted first makes the effective temperature the session's own.
        text_logits.mul_(self._text_scale.view(-1, 1, 1, 1).to(text_logits.dtype))

    def _set_exec_mask(self, active: np.ndarray[Any, np.dtype[np.bool_]]) -> None:
        mask = torch.from_numpy(active.copy())
        self.model.mimi.set_exec_mask(mask)
        self._lm_gen.set_exec_mask(mask)

    def _clock(self) -> None:
        next_tick: float | None = None
        while not self._stop.is_set():
            self.beat = time.monotonic()
            with self._lock:
                idle = not self._active.any() and not self._joining and not self._leaving
            if idle:
                # Nobody to serve: sleep until a session arrives, then restart the clock.
                self._wake.wait(0.5)
                self._wake.clear()
                next_tick = None
                continue
            now = time.perf_counter()
            if next_tick is None:
                next_tick = now
            elif now < next_tick:
                self._stop.wait(next_tick - now)
            started = time.perf_counter()
            outputs = self._tick()
            ended = time.perf_counter()
            scheduled = next_tick
            # Late: this frame's output came after its 80 ms slot was over, so the caller
            # hears a gap.
            late = ended > next_tick + FRAME_SECONDS
            # Behind: restart the clock from now instead of bursting to catch up.
            next_tick = max(next_tick + FRAME_SECONDS, ended)
            step_ms = (ended - started) * 1000.0
            if late:
                self._log_late(step_ms, (started - scheduled) * 1000.0)
            self.stats.record(step_ms, late)
            if self._on_step is not None:
                self._on_step(step_ms / 1000.0, late)
            if outputs:
                self._on_frame(outputs)

    def _log_late(self, step_ms: float, start_lag_ms: float) -> None:
        """One line per late frame, at most one a second: whether the step itself was slow
        (GPU, batch too large) or it started late (host busy, GIL held elsewhere)."""
        now = time.monotonic()
        if now - self._last_late_log >= 1.0:
            self._last_late_log = now
            log.warning(
                "late frame: step %.1f ms, started %.1f ms behind schedule (%d late so far)",
                step_ms,
                start_lag_ms,
                self.stats.late_frames + 1,
            )

    def _tick(self) -> list[FrameOutput]:
        frames = np.zeros((self.capacity, FRAME_SAMPLES), dtype=np.float32)
        with self._lock:
            joining = sorted(self._joining)
            changed = bool(self._joining or self._leaving)
            for slot in self._leaving:
                self._active[slot] = False
            for slot in joining:
                self._active[slot] = True
            self._joining.clear()
            self._leaving.clear()
            active = self._active.copy()
            generations = list(self._generation)
            for slot in np.flatnonzero(active):
                queue = self._inputs[slot]
                if queue:
                    frames[slot] = queue.popleft()
                else:
                    # No new input this frame: the slot hears silence, as on a quiet line.
                    self.silent_frames += 1
            temperatures = self._text_temperature.copy()
        if joining:
            mask = torch.zeros(self.capacity, dtype=torch.bool)
            mask[joining] = True
            self.model.mimi.reset_streaming(mask)
            self._lm_gen.reset_streaming(mask)
            scale = torch.from_numpy(self.model.temp_text / temperatures)
            self._text_scale.copy_(scale)
        if changed:
            self._set_exec_mask(active)
        tokens, pcm = self._step(frames)
        outputs: list[FrameOutput] = []
        for slot in np.flatnonzero(active):
            row = tokens[slot]
            ready = bool((row[1:] >= 0).all())
            text = self.model.text_piece(int(row[0])) if row[0] >= 0 else None
            outputs.append(
                FrameOutput(
                    slot=int(slot),
                    generation=generations[slot],
                    pcm=pcm[slot] if ready else None,
                    text=text,
                )
            )
        return outputs

    def _step(
        self, frames: np.ndarray[Any, np.dtype[np.float32]]
    ) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.float32]]]:
        """Mimi encode, one LM step and Mimi decode for the whole batch; (tokens, pcm)."""
        device = self.model.device
        self._frames_host.numpy()[:] = frames
        x = self._frames_host.to(device, non_blocking=True)[:, None, :]
        codes = self.model.mimi.encode(x)
        tokens = self._lm_gen.step(codes[:, :, :1])
        # Slots still inside the model's delay carry "ungenerated" (negative) tokens; decode
        # them as token 0 and drop the audio, so the batch shape never changes.
        audio_tokens = tokens[:, 1:].clamp(min=0)
        pcm = self.model.mimi.decode(audio_tokens)
        self._tokens_host.copy_(tokens[:, :, 0], non_blocking=True)
        self._pcm_host.copy_(pcm[:, 0].float(), non_blocking=True)
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
        # Copies: the staging buffers are overwritten by the next step while sessions still
        # hold these frames.
        return self._tokens_host.numpy().copy(), self._pcm_host.numpy().copy()
