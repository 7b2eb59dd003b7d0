"""Moshi's batched step (one Mimi codec, one LM) behind the backend contract; the ``tiny`` and
``moshi`` loaders both build one.

Per-slot reset and freeze are moshi's own: ``reset_streaming(mask)`` resets only a joining
slot's caches and offsets, and ``set_exec_mask`` keeps free slots' state untouched, so the batch
shape, and with it the CUDA graphs that moshi captures, stay fixed for the life of the process.
``LMGen`` runs with ``support_out_of_sync=True``, because without it a reset rewinds a global
step counter and holds back every slot's output for the model's delay.

Conversations move between slots and pods through ``moshi_move`` (export, check, import and a
chunked prefill); the step records what it needs for that, the tokens fed to the LM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from moshi.models.lm import LMGen

from voicefleet.runtime.backends import FRAMES, moshi_move, moshi_prime, moshi_replay
from voicefleet.runtime.backends.base import Backend, Pcm, Sampling, StepOutput, clamp
from voicefleet.runtime.backends.replay import advance
from voicefleet.runtime.backends.slot_state import SlotState, SlotStateError
from voicefleet.runtime.limits import IMPORT_CHUNK_STEPS

MOSHI_FRAME = FRAMES["moshi"]
WARMUP_FRAMES = 4
# Text temperature a session may ask for: below 0.1 the logits overflow bf16 when scaled,
# above 1.5 the model's text degenerates.
TEXT_TEMPERATURE_RANGE = (0.1, 1.5)


class MoshiBackend(Backend):
    """``mimi`` and ``lm`` are moshi's ``MimiModel`` and ``LMModel``; ``text_piece`` maps a
    text token to what a client is shown (None for padding tokens)."""

    frame = MOSHI_FRAME

    def __init__(
        self,
        mimi: Any,
        lm: Any,
        *,
        text_piece: Callable[[int], str | None],
        name: str,
        variant: str,
        device: torch.device,
        context_steps: int,
        top_k: int = 250,
        greedy: bool = False,
    ) -> None:
        self.mimi = mimi
        self.lm = lm
        self.text_piece = text_piece
        self.name = name
        self.variant = variant
        self.device = device
        self.context_steps = context_steps
        # Sampling defaults of the model (moshi's: temp 0.8, temp_text 0.7, top_k 250, 25).
        self.temp = 0.8
        self.temp_text = 0.7
        self.top_k = top_k
        self.top_k_text = 25
        # Argmax instead of sampling, text and audio: the same input always gives the same
        # conversation (tests of moved conversations compare with an uninterrupted twin).
        self.greedy = greedy
        self.capacity = 0
        self._lm_gen: Any = None
        self._text_scale: Any = None
        self._asked: list[Sampling] = []
        self._active = np.zeros(0, dtype=bool)
        self._replays: dict[int, moshi_replay.Replay] = {}
        self._replay_row: moshi_replay.ReplayRow | None = None
        # Steps of an imported history already in a frozen slot's KV cache, until it steps.
        self._rebuilt: dict[int, int] = {}
        self._model_id: dict[str, Any] = {}
        self._primer: moshi_prime.Primer | None = None
        # Slots primed whose rows are still to be copied in (at the next step).
        self._unprimed: set[int] = set()
        # Tokens of the last step, ``[capacity, 1 + 8]``: text, then the model's audio
        # codebooks; negative inside the model's delay.
        self.last_tokens = np.zeros((0, 0), dtype=np.int64)

    def sampling_in_force(self, asked: Sampling) -> Sampling:
        """The text temperature applies per session. The audio settings and top-k values are
        baked into the batched depformer step all sessions share: accepted, clamped and
        reported back, while the process-wide values stay in force."""
        return Sampling(
            text_temperature=asked.text_temperature,
            audio_temperature=asked.audio_temperature,
            text_topk=asked.text_topk,
            audio_topk=asked.audio_topk,
        )

    def start(self, capacity: int) -> None:
        self.capacity = capacity
        self._asked = [Sampling()] * capacity
        self._active = np.ones(capacity, dtype=bool)
        self._record_fed_tokens(capacity)
        self._lm_gen = LMGen(
            self.lm,
            use_sampling=not self.greedy,
            temp=self.temp,
            temp_text=self.temp_text,
            top_k=self.top_k,
            top_k_text=self.top_k_text,
            support_out_of_sync=True,
            on_text_logits_hook=self._scale_text_logits,
        )
        self._text_scale = torch.ones(capacity, device=self.device, dtype=torch.float32)
        # moshi's delays: a conversation's first max_delay steps give ungenerated audio.
        self.silent_first_steps = int(self._lm_gen.max_delay)
        # Page-locked staging buffers: the copies in and out run as DMA without an extra
        # host copy, and the step needs one synchronisation instead of three.
        pin = self.device.type == "cuda"
        samples = self.frame.samples
        self._frames_host = torch.zeros((capacity, samples), pin_memory=pin)
        self._tokens_host = torch.zeros(
            (capacity, self.lm.dep_q + 1), dtype=torch.long, pin_memory=pin
        )
        self._pcm_host = torch.zeros((capacity, samples), pin_memory=pin)
        self.mimi.streaming_forever(capacity)
        self._lm_gen.streaming_forever(capacity)
        # Warm up with every slot running: moshi captures its CUDA graphs on the first calls,
        # which must happen here, in this thread, before any session is timed.
        silence = np.zeros((capacity, samples), dtype=np.float32)
        for _ in range(WARMUP_FRAMES):
            self._run(silence)
        # After the warm-up (cuBLAS and moshi's own graphs are set up), before any session.
        self._replay_row = moshi_replay.ReplayRow(
            self.lm,
            self._forward_text,
            max_chunk=IMPORT_CHUNK_STEPS,
            graphs=self.device.type == "cuda",
        )
        self._primer = self._silent_start(silence)
        everything = torch.ones(capacity, dtype=torch.bool)
        self.mimi.reset_streaming(everything)
        self._lm_gen.reset_streaming(everything)
        self.freeze(np.zeros(capacity, dtype=bool))
        for slot in range(capacity):
            self._log.clear(slot)
        self._model_id = moshi_move.model_identity(self.lm, self.mimi, self.variant)

    def _silent_start(self, silence: np.ndarray[Any, np.dtype[np.float32]]) -> moshi_prime.Primer:
        """Slot 0 alone through a new conversation's silent first steps, on silence: the
        rows :meth:`prime` copies into every new conversation's slot (moshi_prime)."""
        self.reset([0], [Sampling()])
        only = np.zeros(self.capacity, dtype=bool)
        only[0] = True
        self.freeze(only)
        for _ in range(self.silent_first_steps):
            self._run(silence)
        return moshi_prime.take(self._lm_gen, self.mimi, self._log, 0)

    def prime(self, slots: Sequence[int], sampling: Sequence[Sampling]) -> bool:
        """The copies are queued, not made: the next step makes them while the device runs
        it (:meth:`_put_primes`), so a pass of joins costs the engine thread no time between
        frames (a few hundred small copies took it 4-35 ms on a busy host and pushed ticks
        late while many callers joined)."""
        if self._primer is None:
            return False
        self._forget(slots, sampling)
        if self._active[list(slots)].any():  # a slot given back since the last tick
            active = self._active.copy()
            active[list(slots)] = False
            self.freeze(active)
        moshi_prime.put_history(self._primer, self._log, slots)
        self._unprimed.update(slots)
        return True

    def _put_primes(self, due: np.ndarray[Any, np.dtype[np.bool_]] | None = None) -> None:
        """Copy the primed rows into the slots queued by :meth:`prime` (only those ``due``
        when given). The copies follow the device's earlier work in stream order; a primed
        slot is frozen until it joins, so a step queued before them leaves its rows alone."""
        slots = sorted(s for s in self._unprimed if due is None or due[s])
        if not slots or self._primer is None:
            return
        moshi_prime.put_rows(self._primer, slots)
        self._unprimed.difference_update(slots)

    def _record_fed_tokens(self, capacity: int) -> None:
        """Wrap the LM's ``forward_text`` (before LMGen captures it in a CUDA graph) so that
        every step copies the tokens it was fed, after moshi's delays, into a fixed buffer:
        the history a moved conversation replays is then exactly what the LM saw."""
        streams = int(self.lm.num_codebooks)
        self._fed = torch.zeros((capacity, streams), dtype=torch.long, device=self.device)
        pin = self.device.type == "cuda"
        self._fed_host = torch.zeros((capacity, streams), dtype=torch.long, pin_memory=pin)
        self._log = moshi_move.TokenLog(
            capacity, self.context_steps, streams, moshi_move.token_dtype(self.lm)
        )
        self._forward_text = self.lm.forward_text
        fed, forward_text = self._fed, self._forward_text

        def recording(sequence: torch.Tensor, *args: Any) -> Any:
            fed.copy_(sequence[:, :, 0])
            return forward_text(sequence, *args)

        self.lm.forward_text = recording

    def _scale_text_logits(self, text_logits: Any) -> None:
        # LMGen divides by its own temp_text after this hook; multiplying by
        # temp_text / wanted first makes the effective temperature the session's own.
        text_logits.mul_(self._text_scale.view(-1, 1, 1, 1).to(text_logits.dtype))

    def reset(self, slots: Sequence[int], sampling: Sequence[Sampling]) -> None:
        mask = torch.zeros(self.capacity, dtype=torch.bool)
        mask[list(slots)] = True
        self.mimi.reset_streaming(mask)
        self._lm_gen.reset_streaming(mask)
        self._forget(slots, sampling)

    def _forget(self, slots: Sequence[int], sampling: Sequence[Sampling]) -> None:
        """The backend's own records of ``slots``' previous conversations, dropped."""
        for slot, asked in zip(slots, sampling, strict=True):
            self._set_sampling(slot, asked)
            self._log.clear(slot)
            self._unprimed.discard(slot)  # a queued prime never lands on what comes next
            self._replays.pop(slot, None)
            self._rebuilt.pop(slot, None)
            if self._replay_row is not None:
                self._replay_row.forget(slot)

    def _set_sampling(self, slot: int, asked: Sampling) -> None:
        self._asked[slot] = asked
        wanted = clamp(asked.text_temperature, self.temp_text, TEXT_TEMPERATURE_RANGE)
        self._text_scale[slot] = self.temp_text / wanted

    def freeze(self, active: np.ndarray[Any, np.dtype[np.bool_]]) -> None:
        self._active = active.copy()
        for slot in np.flatnonzero(active):
            self._rebuilt.pop(int(slot), None)
        mask = torch.from_numpy(active.copy())
        self.mimi.set_exec_mask(mask)
        self._lm_gen.set_exec_mask(mask)

    # --- moving a conversation (moshi_move says what moves and how) -------------------------
    def export_slot(self, slot: int) -> SlotState:
        if slot in self._replays:
            raise SlotStateError(f"slot {slot} is still being imported: nothing to export yet")
        self._put_primes()
        return moshi_move.export_state(
            self._lm_gen,
            self.mimi,
            self._log,
            slot,
            model=self._model_id,
            text_temperature=self._asked[slot].text_temperature,
        )

    def check_import(self, state: SlotState) -> int:
        return moshi_move.check_state(
            self.lm, self.mimi, state, model=self._model_id, context_steps=self.context_steps
        )

    def import_begin(self, slot: int, state: SlotState) -> int:
        self.check_import(state)
        self._unprimed.discard(slot)  # the slot's last caller left before it stepped
        history = state.arrays[moshi_move.HISTORY]
        assert self._replay_row is not None, "import_begin before start"
        # What an earlier state's replay into this slot did so far goes back to the slot.
        if self._replay_row.owner == slot:
            self._replay_row.give_back()
        # A newer state of the conversation already (being) imported here: its KV cache
        # rows for the steps both share are right, so only the rest is replayed.
        known = self._rebuilt.get(slot, 0)
        if not np.array_equal(self._log.tokens[slot, :known], history[:known]):
            known = 0
        replay = moshi_replay.Replay.of(self._replay_row, history[known:], slot)
        if not known:
            mask = torch.zeros(self.capacity, dtype=torch.bool)
            mask[slot] = True
            self.mimi.reset_streaming(mask)
            self._lm_gen.reset_streaming(mask)
            # A reset makes the slot executable (moshi's reset sets its exec mask): frozen
            # again until the engine makes it active, so the steps in between leave it alone.
            active = self._active.copy()
            active[slot] = False
            self.freeze(active)
        temperature = state.meta.get("text_temperature")
        self._set_sampling(
            slot, Sampling(text_temperature=None if temperature is None else float(temperature))
        )
        moshi_move.load_state(self._lm_gen, self.mimi, self._log, slot, state)
        self._replays[slot] = replay
        self._rebuilt[slot] = known
        return replay.left

    def import_step(self, slot: int, max_steps: int) -> int:
        replay = self._replays.get(slot)
        before = 0 if replay is None else replay.left
        left = advance(self._replays, slot, max_steps, self.device)
        self._rebuilt[slot] = self._rebuilt.get(slot, 0) + before - left
        return left

    def step(self, frames: Pcm) -> StepOutput:
        tokens, pcm = self._run(frames)
        self.last_tokens = tokens
        # Slots still inside the model's delay carry "ungenerated" (negative) tokens.
        audible = np.asarray((tokens[:, 1:] >= 0).all(axis=1), dtype=bool)
        text = [self.text_piece(int(t)) if t >= 0 else None for t in tokens[:, 0]]
        return StepOutput(pcm=pcm, audible=audible, text=text)

    def _run(
        self, frames: Pcm
    ) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.float32]]]:
        """Mimi encode, one LM step and Mimi decode for the whole batch; (tokens, pcm)."""
        self._put_primes(due=self._active)  # slots joining at this step: before it
        self._frames_host.numpy()[:] = frames
        x = self._frames_host.to(self.device, non_blocking=True)[:, None, :]
        codes = self.mimi.encode(x)
        tokens = self._lm_gen.step(codes[:, :, :1])
        # Slots still inside the model's delay carry "ungenerated" (negative) tokens; decode
        # them as token 0 and drop the audio, so the batch shape never changes.
        audio_tokens = tokens[:, 1:].clamp(min=0)
        pcm = self.mimi.decode(audio_tokens)
        self._tokens_host.copy_(tokens[:, :, 0], non_blocking=True)
        self._fed_host.copy_(self._fed, non_blocking=True)
        self._pcm_host.copy_(pcm[:, 0].float(), non_blocking=True)
        # The other primed slots while the device runs the step (their copies queue after it).
        self._put_primes()
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        self._log.record(self._active, self._fed_host.numpy())
        # Copies: the staging buffers are overwritten by the next step while sessions still
        # hold these frames.
        return self._tokens_host.numpy().copy(), self._pcm_host.numpy().copy()
