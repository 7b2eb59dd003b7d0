"""An fp8 (e4m3) KV cache for the Moshi LM transformer's self-attention.

Memory, not compute, sets how many Moshi conversations one GPU holds: at 240 s the bf16 KV
cache is 512 KiB a step, 1.46 GiB a conversation. Here K and V are stored as e4m3 with one
float32 scale per (slot, head, position), the absmax of that 128-value head vector over 448:
132 bytes per head vector instead of 256, so a step of the cache takes 264 KiB.

The scale per head vector is computed when the vector is written, from that vector alone: no
calibration, and an outlier token only coarsens its own row. Attention then reads fp8 directly
(``kv_fp8_kernel``: one fused Triton kernel per layer and step on the GPU). Dequantizing the
whole cache to bf16 every step and calling the usual attention would read the fp8 cache, write
a bf16 copy and read it again, more bytes than the bf16 cache alone (bench/kv_fp8.py measures
it).

:func:`attend_reference` is the same computation in plain torch, for any number of query
steps: the CPU (the tiny model, tests) and a conversation's replayed history (several steps at
batch 1, ``moshi_replay``) use it. Both paths read the same stored bytes.

Each slot row has one spare position past the ring: a frozen slot's write of the batched step
lands there, so a frozen conversation's history is never overwritten (moshi's bf16 ring writes
a frozen row's keys into its ring and only leaves them unreferenced).
"""

from __future__ import annotations

from typing import Any

import torch
from moshi.modules.transformer import (
    RingKVCache,
    StreamingMultiheadAttention,
    _MHAState,
    apply_weights_per_step,
)

from voicefleet import constants
from voicefleet.runtime.backends import kv_fp8_kernel
from voicefleet.runtime.backends.base import BackendLoadError

FP8 = torch.float8_e4m3fn


class Fp8RingCache(RingKVCache):
    """moshi's ``RingKVCache`` contract (``capacity``, ``end_offset``, ``reset``,
    ``respect_exec_mask``) over fp8 storage: ``cache`` is ``[2, B, H, capacity + 1, D]`` e4m3
    (K, V; the last position is the frozen rows' scratch) and ``scales`` ``[2, B, H,
    capacity + 1]`` float32. A subclass so that moshi's state types accept it; moshi's own
    ``complete`` (bf16 in, bf16 out) is refused."""

    # moshi's __init__ is not called: it would allocate a bf16 ring.
    def __init__(self, cache: torch.Tensor, scales: torch.Tensor, end_offset: torch.Tensor) -> None:
        self.respect_exec_mask = True
        self.cache = cache
        self.scales = scales
        self.end_offset = end_offset
        self.capacity = int(cache.shape[3]) - 1

    @classmethod
    def empty(
        cls, batch: int, heads: int, dim: int, capacity: int, device: torch.device
    ) -> Fp8RingCache:
        return cls(
            torch.zeros((2, batch, heads, capacity + 1, dim), dtype=FP8, device=device),
            torch.zeros((2, batch, heads, capacity + 1), dtype=torch.float32, device=device),
            torch.zeros(batch, dtype=torch.long, device=device),
        )

    def complete(self, k: torch.Tensor, v: torch.Tensor, exec_mask: torch.Tensor) -> Any:
        raise TypeError("an fp8 ring is written by write() and read by Fp8Attention")

    def reset(self, reset_mask: torch.Tensor) -> None:
        self.end_offset[:] = torch.where(
            reset_mask, torch.zeros_like(self.end_offset), self.end_offset
        )

    def write(self, k: torch.Tensor, v: torch.Tensor, exec_mask: torch.Tensor) -> None:
        """Append ``T`` steps of ``k`` and ``v`` (``[B, H, T, D]``) to the running rows; the
        frozen rows' steps go to the scratch position."""
        batch, heads, steps, dim = k.shape
        ahead = torch.arange(steps, device=k.device, dtype=torch.long)
        index = (self.end_offset.view(-1, 1) + ahead) % self.capacity
        index = torch.where(exec_mask.view(-1, 1), index, torch.full_like(index, self.capacity))
        vector_index = index.view(batch, 1, steps, 1).expand(batch, heads, steps, dim)
        scale_index = index.view(batch, 1, steps).expand(batch, heads, steps)
        for which, x in ((0, k), (1, v)):
            codes, scale = quantize(x)
            # scatter_ has no fp8 kernel: the codes move as their bytes.
            self.cache[which].view(torch.uint8).scatter_(2, vector_index, codes.view(torch.uint8))
            self.scales[which].scatter_(2, scale_index, scale)
        self.end_offset[:] = torch.where(exec_mask, self.end_offset + steps, self.end_offset)

    def dequantized(self, which: int, dtype: torch.dtype) -> torch.Tensor:
        """``[B, H, capacity, D]`` of K (0) or V (1) in ``dtype``: the whole ring."""
        codes = self.cache[which, :, :, : self.capacity].to(torch.float32)
        return (codes * self.scales[which, :, :, : self.capacity, None]).to(dtype)


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """e4m3 codes and the float32 scale of each head vector (the last dimension)."""
    wide = x.to(torch.float32)
    scale = (wide.abs().amax(dim=-1) / kv_fp8_kernel.FP8_MAX).clamp(min=kv_fp8_kernel.MIN_SCALE)
    return (wide / scale.unsqueeze(-1)).to(FP8), scale


def positions(cache: Fp8RingCache) -> torch.Tensor:
    """``[B, capacity]``: the conversation step each ring position holds after the last
    write, -1 where nothing was written yet."""
    ends = cache.end_offset.view(-1, 1)
    index = torch.arange(cache.capacity, device=ends.device, dtype=torch.long)
    held = ends - 1 - torch.remainder(ends - 1 - index, cache.capacity)
    return torch.where(index < ends, held, torch.full_like(held, -1))


def attend_reference(
    q: torch.Tensor, cache: Fp8RingCache, offset: torch.Tensor, context: int
) -> torch.Tensor:
    """Causal attention of ``q`` (``[B, H, T, D]``, steps ``offset ..``) over the whole
    dequantized ring, with moshi's mask: written, not in the future, within the context."""
    steps = q.shape[2]
    held = positions(cache)[:, None, None, :]
    query = offset.view(-1, 1, 1, 1) + torch.arange(steps, device=q.device).view(1, 1, -1, 1)
    delta = query - held
    allowed = (held >= 0) & (delta >= 0) & (delta < context)
    keys = cache.dequantized(0, q.dtype)
    values = cache.dequantized(1, q.dtype)
    return torch.nn.functional.scaled_dot_product_attention(q, keys, values, allowed)


class Fp8Attention(StreamingMultiheadAttention):
    """moshi's causal self-attention with rope, over an :class:`Fp8RingCache`; the weights,
    projections and position bookkeeping are moshi's own."""

    def _init_streaming_state(self, batch_size: int) -> _MHAState:
        weight = self.in_projs[0].weight
        assert isinstance(weight, torch.Tensor)
        dim = self.embed_dim // self.num_heads
        cache = Fp8RingCache.empty(batch_size, self.num_heads, dim, self._context(), weight.device)
        offset = torch.zeros(batch_size, device=weight.device, dtype=torch.long)
        return _MHAState(batch_size, weight.device, cache, offset=offset, offset_cpu=0)

    def _context(self) -> int:
        # use_fp8_kv_cache picks only attentions with a context: the ring's length.
        assert self.context is not None
        return self.context

    def forward(self, query: torch.Tensor, key: Any, value: Any) -> torch.Tensor:
        state = self._streaming_state
        if state is None:  # a plain (non-streaming) forward never touches the cache
            return super().forward(query, key, value)  # type: ignore[no-any-return]
        batch, steps = query.shape[:2]
        heads, dim = self.num_heads, self.embed_dim // self.num_heads
        projected = apply_weights_per_step(
            self.in_projs, self.weights_per_step_schedule, query, state.offset_cpu
        )
        q, k, v = projected.view(batch, steps, 3, heads, dim).permute(2, 0, 3, 1, 4)
        if self.rope:
            q, k = self.rope(q, k, state.offset, time_before_heads=False)
        cache = state.kv_cache
        assert isinstance(cache, Fp8RingCache)  # _init_streaming_state made it
        if steps == 1 and kv_fp8_kernel.usable(q):
            kv_fp8_kernel.write(cache, k, v, state.exec_mask)
            x = kv_fp8_kernel.decode(q, cache)
        else:
            cache.write(k, v, state.exec_mask)
            x = attend_reference(q, cache, state.offset, self._context())
        x = x.transpose(1, 2).reshape(batch, steps, heads * dim)
        x = apply_weights_per_step(
            self.out_projs, self.weights_per_step_schedule, x, state.offset_cpu
        )
        state.offset[:] = torch.where(state.exec_mask, state.offset + steps, state.offset)
        state.offset_cpu += steps
        return x


def use_kv_cache_dtype(lm: Any, kv_cache_dtype: str) -> None:
    """Store ``lm``'s KV cache as asked (``--kv-cache-dtype``), before any streaming state
    exists. The CPU takes fp8 too, through the reference path: slow, but the tiny model and
    its tests then run what a GPU pod stores."""
    if kv_cache_dtype == constants.KV_CACHE_BF16:
        return
    if kv_cache_dtype != constants.KV_CACHE_FP8:
        raise BackendLoadError(
            f"--kv-cache-dtype {kv_cache_dtype}: choose one of {list(constants.KV_CACHE_DTYPES)}"
        )
    if not use_fp8_kv_cache(lm.transformer):
        raise BackendLoadError(
            "--kv-cache-dtype fp8: this model's LM has no causal self-attention with a "
            "context-long cache to store in fp8; run it with --kv-cache-dtype bf16"
        )


def use_fp8_kv_cache(transformer: Any) -> int:
    """Give every causal self-attention of ``transformer`` (the LM's, not the depformer's
    per-step attention) the fp8 cache; before its streaming state exists. Returns how many
    layers changed, so a caller can refuse a model where none did."""
    changed = 0
    for module in transformer.modules():
        if (
            isinstance(module, StreamingMultiheadAttention)
            and not module.cross_attention
            and not module.weights_per_step
            and module.kv_repeat == 1
            and module.causal
            and module.context is not None
        ):
            module.__class__ = Fp8Attention
            changed += 1
    return changed
