"""The fused decode attention over an fp8 ring cache (``kv_fp8``): one query step per slot,
on the GPU, in one Triton kernel per layer and step.

One program per (slot, head) walks that row's whole ring in blocks of positions, loads the
e4m3 codes and their scales, and keeps an online softmax (running max, sum and weighted value
sum in float32), so no bf16 copy of the cache is ever written. It walks the whole ring whatever
the conversation's length: a step then costs the same at 2 s and at 240 s, which is the cost
the frame clock and the planner must budget for anyway, and a short benchmark measures it.

A position counts when it was written: after this step's write, positions ``< end_offset``
(all of them once the ring has wrapped). With the ring as long as the context this is moshi's
mask exactly; :func:`usable` sends everything else to the reference path. No host sync and no
autotuning, so the launch is captured in moshi's CUDA graph like any other kernel.
"""

from __future__ import annotations

from typing import Protocol

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the reference path serves
    triton = None

# The largest finite e4m3 value: a head vector's absmax maps to it.
FP8_MAX = 448.0
# A head vector of zeros still gets a usable scale (its codes are zeros either way).
MIN_SCALE = 1e-12

# Positions per loop iteration and warps per program, chosen on an H100 (bench/kv_fp8.py).
# (0.66 ms a layer at 72 slots of 3000 steps, 2.8 TB/s; 32 positions or 8 warps: 1.5-4x slower.)
BLOCK_N = 128
NUM_WARPS = 2


class Fp8Ring(Protocol):
    """What the kernels read and write of ``kv_fp8.Fp8RingCache``."""

    cache: torch.Tensor
    scales: torch.Tensor
    end_offset: torch.Tensor
    capacity: int


def usable(q: torch.Tensor) -> bool:
    return triton is not None and q.is_cuda


if triton is not None:
    _FP8_MAX = tl.constexpr(FP8_MAX)
    _MIN_SCALE = tl.constexpr(MIN_SCALE)

    # No annotations: Triton reads them as kernel types; its constants are upper case, and a
    # kernel takes its pointers and strides one by one.
    @triton.jit  # type: ignore[untyped-decorator]
    def _decode(  # type: ignore[no-untyped-def]  # noqa: PLR0917
        q_ptr,
        k_ptr,
        v_ptr,
        ks_ptr,
        vs_ptr,
        end_ptr,
        out_ptr,
        q_sb,
        q_sh,
        c_sb,
        c_sh,
        c_sn,
        s_sb,
        s_sh,
        o_sb,
        o_sh,
        capacity,
        sm_scale,
        DIM: tl.constexpr,  # noqa: N803
        BLOCK: tl.constexpr,  # noqa: N803
    ):
        row = tl.program_id(0)
        head = tl.program_id(1)
        written = tl.minimum(tl.load(end_ptr + row), capacity)
        dims = tl.arange(0, DIM)
        q = tl.load(q_ptr + row * q_sb + head * q_sh + dims).to(tl.float32) * sm_scale
        cache_at = row * c_sb + head * c_sh
        scale_at = row * s_sb + head * s_sh
        # A finite start: a row with nothing written yet ends with zeros, never NaN.
        best = tl.full((), -1.0e30, tl.float32)
        total = tl.zeros((), tl.float32)
        acc = tl.zeros((DIM,), tl.float32)
        for start in range(0, capacity, BLOCK):
            pos = start + tl.arange(0, BLOCK)
            inside = pos < capacity
            where = cache_at + pos[:, None] * c_sn + dims[None, :]
            k = tl.load(k_ptr + where, mask=inside[:, None], other=0.0).to(tl.float32)
            k_scale = tl.load(ks_ptr + scale_at + pos, mask=inside, other=0.0)
            score = tl.sum(k * q[None, :], axis=1) * k_scale
            score = tl.where(pos < written, score, -float("inf"))
            new_best = tl.maximum(best, tl.max(score, axis=0))
            keep = tl.exp(best - new_best)
            weight = tl.exp(score - new_best)
            v = tl.load(v_ptr + where, mask=inside[:, None], other=0.0).to(tl.float32)
            v_scale = tl.load(vs_ptr + scale_at + pos, mask=inside, other=0.0)
            acc = acc * keep + tl.sum((weight * v_scale)[:, None] * v, axis=0)
            total = total * keep + tl.sum(weight, axis=0)
            best = new_best
        out = acc / tl.maximum(total, 1.0e-30)
        tl.store(out_ptr + row * o_sb + head * o_sh + dims, out.to(out_ptr.dtype.element_ty))

    @triton.jit  # type: ignore[untyped-decorator]
    def _write(  # type: ignore[no-untyped-def]  # noqa: PLR0917
        x_ptr,
        codes_ptr,
        scales_ptr,
        end_ptr,
        run_ptr,
        x_sb,
        x_sh,
        c_sb,
        c_sh,
        c_sn,
        s_sb,
        s_sh,
        capacity,
        DIM: tl.constexpr,  # noqa: N803
    ):
        row = tl.program_id(0)
        head = tl.program_id(1)
        dims = tl.arange(0, DIM)
        x = tl.load(x_ptr + row * x_sb + head * x_sh + dims).to(tl.float32)
        scale = tl.maximum(tl.max(tl.abs(x), axis=0) / _FP8_MAX, _MIN_SCALE)
        running = tl.load(run_ptr + row) != 0
        # A frozen row writes to its scratch position, past the ring.
        at = tl.where(running, tl.load(end_ptr + row) % capacity, capacity)
        tl.store(
            codes_ptr + row * c_sb + head * c_sh + at * c_sn + dims,
            (x / scale).to(codes_ptr.dtype.element_ty),
        )
        tl.store(scales_ptr + row * s_sb + head * s_sh + at, scale)


def write(cache: Fp8Ring, k: torch.Tensor, v: torch.Tensor, running: torch.Tensor) -> None:
    """One step of ``k`` and ``v`` (``[B, H, 1, D]``) quantized into the ring, and the running
    rows' ``end_offset`` advanced: two small kernels instead of a dozen torch ops a layer."""
    batch, heads, _steps, dim = k.shape
    for which, given in ((0, k), (1, v)):
        x = given if given.stride(-1) == 1 else given.contiguous()
        codes, scales = cache.cache[which], cache.scales[which]
        _write[(batch, heads)](
            x,
            codes,
            scales,
            cache.end_offset,
            running,
            x.stride(0),
            x.stride(1),
            codes.stride(0),
            codes.stride(1),
            codes.stride(2),
            scales.stride(0),
            scales.stride(1),
            cache.capacity,
            DIM=dim,
            num_warps=1,
        )
    cache.end_offset.add_(running.to(cache.end_offset.dtype))


def decode(
    q: torch.Tensor,
    cache: Fp8Ring,
    *,
    block: int = BLOCK_N,
    warps: int = NUM_WARPS,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, H, 1, D]`` attention of one query step per slot over its fp8 ring (into ``out``
    when given: tests poison it first)."""
    batch, heads, _steps, dim = q.shape
    if q.stride(-1) != 1:
        q = q.contiguous()
    if out is None:
        out = torch.empty((batch, heads, 1, dim), dtype=q.dtype, device=q.device)
    keys, values = cache.cache[0], cache.cache[1]
    key_scales, value_scales = cache.scales[0], cache.scales[1]
    _decode[(batch, heads)](
        q,
        keys,
        values,
        key_scales,
        value_scales,
        cache.end_offset,
        out,
        q.stride(0),
        q.stride(1),
        keys.stride(0),
        keys.stride(1),
        keys.stride(2),
        key_scales.stride(0),
        key_scales.stride(1),
        out.stride(0),
        out.stride(1),
        cache.capacity,
        dim**-0.5,
        DIM=dim,
        BLOCK=block,
        num_warps=warps,
    )
    return out
