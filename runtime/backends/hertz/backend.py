"""Hertz-dev behind the backend contract: 16 kHz, 2000-sample (125 ms) frames, one batched step
over fixed slots, per-slot reset (the prompt's state copied in) and freeze.

On a GPU the whole step is captured once as a CUDA graph after warming up (cuDNN picks its
convolution algorithms then) and replayed every frame: about a thousand kernels, launched
for the price of one. Where capture fails the step runs eagerly, and the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from voicefleet.runtime.backends import FRAMES
from voicefleet.runtime.backends.base import Backend, Pcm, Sampling, StepOutput, clamp
from voicefleet.runtime.backends.hertz import move
from voicefleet.runtime.backends.hertz.config import DEFAULT_TEMPERATURES
from voicefleet.runtime.backends.hertz.models import HertzModel
from voicefleet.runtime.backends.hertz.prompt import PromptState, prefill
from voicefleet.runtime.backends.hertz.slots import Slots
from voicefleet.runtime.backends.replay import advance
from voicefleet.runtime.backends.slot_state import SlotState, SlotStateError

log = logging.getLogger(__name__)

WARMUP_STEPS = 3
# Temperatures a session may ask for: (token, mixture choice, Gaussian spread).
TEMPERATURE_RANGES = ((0.1, 1.5), (0.05, 1.5), (0.0, 1.0))


class HertzBackend(Backend):
    frame = FRAMES["hertz-dev"]

    def __init__(
        self,
        model: HertzModel,
        prompt: Pcm,
        *,
        name: str,
        variant: str,
        device: torch.device,
        dtype: torch.dtype,
        context_steps: int,
        graphs: bool,
    ) -> None:
        self.model = model
        self.prompt_audio = prompt
        self.name = name
        self.variant = variant
        self.device = device
        self.dtype = dtype
        self.context_steps = context_steps
        self.use_graphs = graphs and device.type == "cuda"
        self.capacity = 0
        self.slots: Slots | None = None
        self.prompt: PromptState | None = None
        self._graph: Any = None
        self._model_id: dict[str, Any] = {}
        self._replays: dict[int, move.Replay] = {}

    @property
    def prompt_frames(self) -> int:
        return int(self.prompt_audio.shape[1]) // self.frame.samples

    def rows(self) -> int:
        """Cache rows per slot: the prompt, the conversation, and the scratch row."""
        return self.prompt_frames + self.context_steps + 1

    def start(self, capacity: int) -> None:
        self.capacity = capacity
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        slots = Slots(self.model, capacity, self.rows(), self.device, self.dtype)
        self.slots = slots
        self.prompt = prefill(self.model, self.prompt_audio, slots.ropes, self.dtype)
        slots.allocate()
        pin = self.device.type == "cuda"
        self._frames_host = torch.zeros(tuple(slots.frames.shape), pin_memory=pin)
        self._audio_host = torch.zeros(tuple(slots.audio.shape), pin_memory=pin)
        everyone = list(range(capacity))
        slots.reset(everyone, self.prompt, [DEFAULT_TEMPERATURES] * capacity)
        slots.active.fill_(True)
        slots.frames.normal_(0.0, 0.05)
        for _ in range(WARMUP_STEPS):
            slots.step()
        if self.use_graphs:
            self._capture(slots)
        slots.reset(everyone, self.prompt, [DEFAULT_TEMPERATURES] * capacity)
        slots.active.fill_(False)
        self._model_id = move.model_identity(self.model, self.prompt_audio, self.variant)

    def _capture(self, slots: Slots) -> None:
        torch.cuda.synchronize(self.device)
        try:
            side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                slots.step()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                slots.step()
            graph.replay()
            torch.cuda.synchronize(self.device)
            self._graph = graph
            log.info("hertz-dev step captured as a CUDA graph (%d slots)", self.capacity)
        except Exception as exc:  # any capture failure leaves the eager step, which works
            log.warning("hertz-dev step runs eagerly: CUDA graph capture failed (%s)", exc)
            self._graph = None

    def sampling_in_force(self, asked: Sampling) -> Sampling:
        token, categorical, gaussian = self._temperatures(asked)
        return Sampling(
            audio_temperature=token,
            categorical_temperature=categorical,
            gaussian_temperature=gaussian,
        )

    @staticmethod
    def _temperatures(asked: Sampling) -> tuple[float, float, float]:
        values = (
            asked.audio_temperature,
            asked.categorical_temperature,
            asked.gaussian_temperature,
        )
        token, categorical, gaussian = (
            clamp(value, default, bounds)
            for value, default, bounds in zip(
                values, DEFAULT_TEMPERATURES, TEMPERATURE_RANGES, strict=True
            )
        )
        return token, categorical, gaussian

    def reset(self, slots: Sequence[int], sampling: Sequence[Sampling]) -> None:
        assert self.slots is not None and self.prompt is not None
        self.slots.reset(slots, self.prompt, [self._temperatures(s) for s in sampling])
        for slot in slots:
            self._replays.pop(slot, None)

    # --- moving a conversation (hertz/move.py says what moves and how) ----------------------
    def export_slot(self, slot: int) -> SlotState:
        assert self.slots is not None and self.prompt is not None
        if slot in self._replays:
            raise SlotStateError(f"slot {slot} is still being imported: nothing to export yet")
        return move.export_state(self.slots, self.prompt, slot, self._model_id)

    def check_import(self, state: SlotState) -> int:
        assert self.slots is not None and self.prompt is not None
        return move.check_state(self.slots, self.prompt, state, self._model_id)

    def import_begin(self, slot: int, state: SlotState) -> int:
        assert self.slots is not None and self.prompt is not None
        steps = self.check_import(state)
        # The prompt's state first (the conversation's rows start where the prompt ends);
        # ``reset`` leaves the slot's active flag alone, so it stays frozen.
        self.slots.reset([slot], self.prompt, [DEFAULT_TEMPERATURES])
        move.load_state(self.slots, self.prompt, slot, state)
        start = self.prompt.frames - 1
        replay = move.Replay(self.slots, slot, start, start + steps)
        self._replays[slot] = replay
        return replay.left

    def import_step(self, slot: int, max_steps: int) -> int:
        return advance(self._replays, slot, max_steps, self.device)

    def freeze(self, active: np.ndarray[Any, np.dtype[np.bool_]]) -> None:
        assert self.slots is not None
        self.slots.active.copy_(torch.from_numpy(active.copy()))

    def step(self, frames: Pcm) -> StepOutput:
        slots = self.slots
        assert slots is not None
        self._frames_host.numpy()[:] = frames
        slots.frames.copy_(self._frames_host, non_blocking=True)
        if self._graph is not None:
            self._graph.replay()
        else:
            slots.step()
        self._audio_host.copy_(slots.audio, non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        # A copy: the staging buffer is overwritten next step while sessions hold the frame.
        pcm = self._audio_host.numpy().copy()
        return StepOutput(
            pcm=pcm, audible=np.ones(self.capacity, dtype=bool), text=[None] * self.capacity
        )
