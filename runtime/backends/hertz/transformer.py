"""Hertz-dev's transformer block with per-slot positions, for its backbone and resynthesizer.

The block follows the reference (transformer.py:140-302; hertz-facts.md section 3): pre-norm,
LayerNorm with a weight and no bias, one fused QKV projection, LayerNorm over the whole q and
the whole k before the head split and before RoPE (rotate-half layout), plain multi-head
attention, SwiGLU feed-forward, no biases. Parameter names match the checkpoints.

Why not the reference's cache: it derives one length for the whole batch from the cache's
contents and applies one RoPE offset (hertz-facts.md 7.1-7.4), so slots cannot sit at
different positions. Why not moshi's streaming transformer: its RoPE pairs interleaved
dimensions, its norms and projections differ, and its offsets live inside modules. Here each
slot has its own position: ``step`` writes one new key/value row per slot at that slot's
position (a frozen slot writes to a scratch row past the end) and attends to rows
``[0, position]`` of its own cache, through an explicit mask. Shapes never change, so the whole
step can be captured in a CUDA graph.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as fn

from voicefleet.runtime.backends.hertz.config import TransformerConfig

# How a step attends: "matmul" (two batched products, softmax in float32) or "sdpa" (torch's
# fused attention with a boolean mask). A measuring switch, read once.
ATTENTION = os.environ.get("VOICEFLEET_HERTZ_ATTENTION", "matmul")


class Norm(nn.Module):
    """LayerNorm with a weight and no bias, computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        shape = (x.shape[-1],)
        return fn.layer_norm(x.float(), shape, self.weight.float(), None, self.eps).to(x.dtype)


class Rope:
    """cos/sin tables (float32) for positions ``[0, length)``; rotate-half layout."""

    def __init__(self, head_dim: int, theta: float, length: int, device: torch.device) -> None:
        inv = theta ** (
            -torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim
        )
        angles = torch.arange(length, dtype=torch.float64, device=device)[:, None] * inv[None]
        angles = torch.cat((angles, angles), dim=-1)
        self.cos = angles.cos().float()
        self.sin = angles.sin().float()

    @staticmethod
    def apply(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """``x`` (..., head_dim) rotated by angles broadcast to it."""
        half = x.shape[-1] // 2
        xf = x.float()
        rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
        return (xf * cos + rotated * sin).to(x.dtype)


@dataclass
class KV:
    """One layer's cache for every slot: ``(slots, heads, rows, head_dim)`` each; the last
    row is the scratch row frozen slots write to."""

    k: Tensor
    v: Tensor

    @classmethod
    def empty(cls, slots: int, config: TransformerConfig, rows: int, like: Tensor) -> KV:
        shape = (slots, config.heads, rows, config.head_dim)
        return cls(like.new_zeros(shape), like.new_zeros(shape))


@dataclass
class StepAt:
    """Where each slot is this step: rope angles of its position, the row it writes (its
    position, or the scratch row when frozen), and an additive mask over the rows it sees."""

    cos: Tensor  # (slots, head_dim)
    sin: Tensor
    write: Tensor  # (slots,) long
    mask: Tensor  # (slots, rows) float32: 0 where visible, -inf elsewhere
    visible: Tensor  # (slots, 1, 1, rows) bool

    @classmethod
    def of(cls, rope: Rope, position: Tensor, active: Tensor, rows: int) -> StepAt:
        last = rows - 2  # the scratch row is rows - 1
        at = position.clamp(max=last)
        visible = torch.arange(rows, device=position.device)[None, :] <= at[:, None]
        mask = torch.zeros(visible.shape, device=position.device).masked_fill(
            ~visible, float("-inf")
        )
        write = torch.where(active, at, torch.full_like(at, rows - 1))
        return cls(rope.cos[at], rope.sin[at], write, mask, visible[:, None, None, :])


class Attention(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.head_dim
        self.proj_qkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        self.norm_q = Norm(config.dim, config.eps)
        self.norm_k = Norm(config.dim, config.eps)
        self.attn_out = nn.Linear(config.dim, config.dim, bias=False)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.proj_qkv(x).chunk(3, dim=-1)
        shape = (*x.shape[:-1], self.heads, self.head_dim)
        return self.norm_q(q).view(shape), self.norm_k(k).view(shape), v.reshape(shape)

    def full(self, x: Tensor, rope: Rope) -> tuple[Tensor, Tensor, Tensor]:
        """Causal attention over ``x`` (batch, frames, dim) from position 0; also returns
        the keys and values (batch, heads, frames, head_dim) a cache holds."""
        frames = x.shape[1]
        q, k, v = self._qkv(x)
        cos, sin = rope.cos[:frames, None, :], rope.sin[:frames, None, :]
        q = Rope.apply(q, cos, sin).transpose(1, 2)
        k = Rope.apply(k, cos, sin).transpose(1, 2)
        v = v.transpose(1, 2)
        out = fn.scaled_dot_product_attention(q, k, v, is_causal=True)
        return cast(Tensor, self.attn_out(out.transpose(1, 2).flatten(2))), k, v

    def chunk(self, x: Tensor, start: int, rope: Rope, cache: KV) -> Tensor:
        """Frames ``start .. start + T - 1`` of one slot, ``x`` (1, T, dim), with ``cache``
        that slot's rows (a view): their keys and values are written, and each frame attends
        to the rows before it, as ``step`` would have one frame at a time (a moved
        conversation's replay)."""
        frames = x.shape[1]
        end = start + frames
        q, k, v = self._qkv(x)
        cos, sin = rope.cos[start:end, None, :], rope.sin[start:end, None, :]
        q = Rope.apply(q, cos, sin).transpose(1, 2)
        cache.k[:, :, start:end] = Rope.apply(k, cos, sin).transpose(1, 2)
        cache.v[:, :, start:end] = v.transpose(1, 2)
        rows = torch.arange(end, device=x.device)
        visible = rows[None, :] <= (start + torch.arange(frames, device=x.device))[:, None]
        out = fn.scaled_dot_product_attention(q, cache.k[:, :, :end], cache.v[:, :, :end], visible)
        return cast(Tensor, self.attn_out(out.transpose(1, 2).flatten(2)))

    def step(self, x: Tensor, at: StepAt, cache: KV) -> Tensor:
        """One frame per slot, ``x`` (slots, dim)."""
        q, k, v = self._qkv(x)  # (slots, heads, head_dim)
        cos, sin = at.cos[:, None, :], at.sin[:, None, :]
        q = Rope.apply(q, cos, sin)
        k = Rope.apply(k, cos, sin)
        slots = torch.arange(x.shape[0], device=x.device)
        cache.k[slots, :, at.write] = k
        cache.v[slots, :, at.write] = v
        if ATTENTION == "sdpa":
            fused = fn.scaled_dot_product_attention(q[:, :, None, :], cache.k, cache.v, at.visible)
            return cast(Tensor, self.attn_out(fused[:, :, 0, :].flatten(1)))
        # Reads each slot's whole cache once: attention over a batch of single queries is
        # bound by memory bandwidth, like the weights.
        scores = torch.matmul(q[:, :, None, :], cache.k.transpose(-1, -2)).float()
        scores = scores * self.head_dim**-0.5 + at.mask[:, None, None, :]
        weights = torch.softmax(scores, dim=-1).to(cache.v.dtype)
        out = torch.matmul(weights, cache.v)[:, :, 0, :]
        return cast(Tensor, self.attn_out(out.flatten(1)))


class FeedForward(nn.Module):
    """SwiGLU without biases: ``down(up * silu(gate))``, gate first in the fused projection."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gateup_proj = nn.Linear(dim, 2 * hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gateup_proj(x).chunk(2, dim=-1)
        return cast(Tensor, self.down_proj(up * fn.silu(gate)))


class _AttnBlock(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.attn_norm = Norm(config.dim, config.eps)
        self.attn = Attention(config)


class _FfnBlock(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ffnn_norm = Norm(config.dim, config.eps)
        self.ffnn = FeedForward(config.dim, config.ff_dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + cast(Tensor, self.ffnn(self.ffnn_norm(x)))


class Block(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.attn = _AttnBlock(config)
        self.ffnn = _FfnBlock(config)

    def full(self, x: Tensor, rope: Rope) -> tuple[Tensor, Tensor, Tensor]:
        out, k, v = self.attn.attn.full(self.attn.attn_norm(x), rope)
        return cast(Tensor, self.ffnn(x + out)), k, v

    def step(self, x: Tensor, at: StepAt, cache: KV) -> Tensor:
        attended = self.attn.attn.step(self.attn.attn_norm(x), at, cache)
        return cast(Tensor, self.ffnn(x + attended))

    def chunk(self, x: Tensor, start: int, rope: Rope, cache: KV) -> Tensor:
        attended = self.attn.attn.chunk(self.attn.attn_norm(x), start, rope, cache)
        return cast(Tensor, self.ffnn(x + attended))


def run_full(
    blocks: list[Block], x: Tensor, rope: Rope, kv: list[tuple[Tensor, Tensor]] | None = None
) -> Tensor:
    """Blocks over a whole sequence; their keys and values are appended to ``kv``."""
    for block in blocks:
        x, k, v = block.full(x, rope)
        if kv is not None:
            kv.append((k, v))
    return x


def run_chunk(blocks: list[Block], x: Tensor, start: int, rope: Rope, caches: list[KV]) -> Tensor:
    for block, cache in zip(blocks, caches, strict=True):
        x = block.chunk(x, start, rope, cache)
    return x


def run_step(blocks: list[Block], x: Tensor, at: StepAt, caches: list[KV]) -> Tensor:
    for block, cache in zip(blocks, caches, strict=True):
        x = block.step(x, at, cache)
    return x
