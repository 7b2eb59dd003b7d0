"""Every slot's Hertz-dev state in fixed-shape tensors, and the one batched step over them.

A slot holds: its position (the next row of its caches), the latent its next step consumes,
its token and mixture temperatures, the backbone's and resynthesizer's caches, the two
encoders' and the decoder's streaming state. One step, per slot (hertz-facts.md 5.2, the
reference server's ``process_audio`` without its window recompute):

1. backbone on the slot's latent at its position -> the model channel's token (sampled);
2. resynthesizer on the same latent and that token's code -> the next latent (sampled);
3. decoder -> the slot's 2000 output samples;
4. both encoders, on the caller's 2000 samples and on the output just made (the model
   channel hears itself as re-encoded audio, as in the reference server) -> the latent of
   the next step.

Frozen slots compute along (the batch shape never changes) but write their caches to the
scratch row, keep their streaming state and do not advance. Nothing in :meth:`Slots.step`
reads back to the host, so it can be captured in a CUDA graph and replayed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from voicefleet.runtime.backends.hertz.codec import Stream, sample
from voicefleet.runtime.backends.hertz.config import DEFAULT_TEMPERATURES, FRAME_SAMPLES
from voicefleet.runtime.backends.hertz.models import HertzModel, sample_latent, sample_token
from voicefleet.runtime.backends.hertz.prompt import PromptState
from voicefleet.runtime.backends.hertz.transformer import KV, Rope, StepAt


class Slots:
    def __init__(
        self, model: HertzModel, capacity: int, rows: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        config = model.config
        self.model = model
        self.capacity = capacity
        self.rows = rows  # positions a slot can reach, plus the scratch row
        like = torch.zeros((), device=device, dtype=dtype)
        self.ropes = (
            Rope(config.backbone.head_dim, config.backbone.theta, rows, device),
            Rope(config.resynthesizer.head_dim, config.resynthesizer.theta, rows, device),
        )
        self.backbone = [
            KV.empty(capacity, config.backbone, rows, like) for _ in range(config.backbone.layers)
        ]
        # The shared trunk's layers, then the model branch's (the user branch is not run).
        self.resynthesizer = [
            KV.empty(capacity, config.resynthesizer, rows, like)
            for _ in range(config.resynthesizer.layers)
        ]
        self.position = torch.zeros(capacity, dtype=torch.long, device=device)
        self.latents = torch.zeros((capacity, 2 * config.latent), device=device, dtype=dtype)
        self.temperatures = torch.tensor([DEFAULT_TEMPERATURES] * capacity, device=device)
        self.active = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.fresh = torch.ones(capacity, dtype=torch.bool, device=device)
        self.encoders = Stream()  # rows [0, capacity): callers; [capacity, 2 capacity): model
        self.decoder = Stream()
        # What each slot's transformers were fed at each row (its input latent, the token
        # sampled there): the history a moved conversation replays (``hertz/move.py``).
        self.fed_latents = torch.zeros(
            (capacity, rows, 2 * config.latent), device=device, dtype=dtype
        )
        self.fed_tokens = torch.zeros((capacity, rows), dtype=torch.long, device=device)
        self._index = torch.arange(capacity, device=device)
        self.frames = torch.zeros((capacity, FRAME_SAMPLES), device=device)  # in
        self.audio = torch.zeros((capacity, FRAME_SAMPLES), device=device)  # out

    def allocate(self) -> None:
        """Create the codec's streaming state: one step with every slot frozen."""
        self.active.zero_()
        self.step()

    def step(self) -> None:
        """One frame for every slot: reads ``frames``, writes ``audio``."""
        model, active = self.model, self.active
        bb_at = StepAt.of(self.ropes[0], self.position, active, self.rows)
        rs_at = StepAt.of(self.ropes[1], self.position, active, self.rows)
        logits = model.backbone.step(self.latents, bb_at, self.backbone)
        token = sample_token(logits, self.temperatures[:, 0])
        self.fed_latents[self._index, bb_at.write] = self.latents
        self.fed_tokens[self._index, bb_at.write] = token
        code = model.quantizer.from_tokens(token)
        mixture = model.resynthesizer.step(self.latents, code, rs_at, self.resynthesizer)
        latent = sample_latent(mixture, self.temperatures[:, 1], self.temperatures[:, 2])
        audio = model.codec.decode(latent[:, None, :], self.decoder.begin(active, self.fresh))
        # Random weights can overflow; a caller must never get NaN or clipping garbage.
        audio = torch.nan_to_num(audio.float()).clamp(-1.0, 1.0)
        self.fresh.logical_and_(~active)
        both = torch.cat((self.frames, audio))
        mean, log_var = model.codec.encode(both, self.encoders.begin(torch.cat((active, active))))
        heard = sample(mean, log_var)[:, 0]
        following = torch.cat((heard[: self.capacity], heard[self.capacity :]), dim=-1)
        self.latents.copy_(
            torch.where(active[:, None], following.to(self.latents.dtype), self.latents)
        )
        self.position.add_(active.long())
        self.audio.copy_(audio)

    def reset(
        self,
        slots: Sequence[int],
        prompt: PromptState,
        temperatures: Sequence[tuple[float, float, float]],
    ) -> None:
        """Start conversations in ``slots``: the prompt's state copied in, the rest cleared."""
        index = torch.tensor(list(slots), dtype=torch.long, device=self.position.device)
        done = prompt.frames - 1
        for cache, (k, v) in zip(self.backbone, prompt.backbone, strict=False):
            cache.k[index, :, :done] = k
            cache.v[index, :, :done] = v
        for cache, (k, v) in zip(self.resynthesizer, prompt.resynthesizer, strict=False):
            cache.k[index, :, :done] = k
            cache.v[index, :, :done] = v
        self.position[index] = done
        self.latents[index] = prompt.latent
        for state, start in zip(self.encoders.tensors, prompt.encoder, strict=True):
            state[index] = start[0]
            state[index + self.capacity] = start[1]
        self.decoder.zero(index)
        self.fresh[index] = True
        self.temperatures[index] = torch.tensor(list(temperatures), device=self.position.device)


def kv_bytes_per_frame(model: HertzModel, dtype: torch.dtype) -> int:
    """Cache bytes one slot needs per frame of conversation (keys and values, every layer)."""
    config = model.config
    per = torch.zeros((), dtype=dtype).element_size() * 2
    backbone = config.backbone.layers * config.backbone.dim * per
    return backbone + config.resynthesizer.layers * config.resynthesizer.dim * per


def state_tensors(slots: Slots) -> list[Tensor]:
    """Every tensor of the slots' state (for tests that check a slot's state is untouched)."""
    caches = [t for kv in slots.backbone + slots.resynthesizer for t in (kv.k, kv.v)]
    return [*caches, slots.position, slots.latents, *slots.encoders.tensors, *slots.decoder.tensors]
