"""The fp8 KV cache on the GPU (``runtime/backends/kv_fp8.py``): is the fused kernel right, is
it fast, and what does fp8 storage do to the model's output.

- ``check``: the fused kernel against the reference path (same fp8 bytes, plain torch) and
  against exact bf16 attention, on fresh random rows at every fill (empty, partial, wrapped),
  with the output poisoned first; and once inside a CUDA graph.
- ``speed``: one layer's attention step at B slots over a 3000-step ring: bf16 SDPA with
  moshi's mask (the bf16 path), fp8 dequantized to bf16 then SDPA (what the fused kernel
  avoids), the fused kernel (a few block sizes), and the fp8 write. Bytes each must move.
- ``quality``: the full-size LM (random weights, or real ones with ``--weights``) teacher
  forced over ``--steps`` steps twice, bf16 and fp8 cache, same weights and tokens: the KL
  divergence of the text and first-codebook logits, and how often their argmax agrees.
- ``loop``: the bare batched step (Mimi, ``LMGen.step``, Mimi) with either cache, like
  ``runtime_density baseline``: step p50/p95 and peak GPU memory.

Usage (GPU): ``python -m bench.kv_fp8 check speed quality loop --out kv_fp8.json``. With real
weights: ``python -m bench.kv_fp8 quality --weights /path/to/moshiko-pytorch-bf16 --steps 1000``
(the directory holding ``model.safetensors``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from moshi.models import loaders
from moshi.models.lm import LMGen

from voicefleet.runtime.backends import kv_fp8, kv_fp8_kernel

HEADS, DIM, CONTEXT = 32, 128, 3000
FRAME = 1920


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30))


def _filled(batch: int, ends: list[int]) -> tuple[kv_fp8.Fp8RingCache, torch.Tensor, torch.Tensor]:
    """A cache whose rows hold ``ends[b]`` steps of fresh random K/V, and the bf16 K/V
    written (``[B, H, CONTEXT, D]``, ring order)."""
    cache = kv_fp8.Fp8RingCache.empty(batch, HEADS, DIM, CONTEXT, torch.device("cuda"))
    k = torch.randn(batch, HEADS, CONTEXT, DIM, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    # Outlier channels, as real keys have: per-vector scales must cope.
    k[..., :4] *= 8
    for which, x in ((0, k), (1, v)):
        codes, scale = kv_fp8.quantize(x)
        cache.cache[which, :, :, :CONTEXT] = codes
        cache.scales[which, :, :, :CONTEXT] = scale
    cache.end_offset[:] = torch.tensor(ends, device="cuda")
    return cache, k, v


def check() -> dict[str, Any]:
    torch.manual_seed(1)
    ends = [1, 7, 64, 65, 1500, 2999, 3000, 3001, 4500, 9000, 0]
    batch = len(ends)
    cache, k, v = _filled(batch, ends)
    q = torch.randn(batch, HEADS, 1, DIM, device="cuda", dtype=torch.bfloat16)
    offset = (cache.end_offset - 1).clamp(min=0)
    ref = kv_fp8.attend_reference(q.float(), cache, offset, CONTEXT)
    rows: dict[str, Any] = {}
    for block in (32, 64, 128):
        out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
        kv_fp8_kernel.decode(q, cache, block=block, out=out)
        torch.cuda.synchronize()
        live = slice(0, batch - 1)  # the last row is empty: zeros, checked below
        rows[f"fused_vs_reference_block{block}"] = _rel(out[live], ref[live])
        assert not torch.isnan(out).any(), "NaN in the fused output"
        assert float(out[-1].abs().max()) == 0.0, "an empty row must give zeros"
    # Against exact attention over the bf16 K/V the cache was made from.
    held = kv_fp8.positions(cache)[:, None, None, :]
    allowed = held >= 0
    exact = torch.nn.functional.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), allowed
    )
    out = kv_fp8_kernel.decode(q, cache)
    rows["fused_vs_exact_bf16_kv"] = _rel(out[:-1], exact[:-1])
    bf16_sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, allowed)
    rows["bf16_sdpa_vs_exact"] = _rel(bf16_sdpa[:-1], exact[:-1])
    rows |= _check_write(cache) | _check_graph()
    print(json.dumps({"part": "check", **rows}), flush=True)
    return {"part": "check", **rows}


def _check_write(cache: kv_fp8.Fp8RingCache) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    batch = cache.cache.shape[1]
    # The fused write stores the same bytes as the torch one, frozen rows at the scratch.
    running = torch.tensor([i % 3 != 1 for i in range(batch)], device="cuda")
    new_k, new_v = (torch.randn(batch, HEADS, 1, DIM, device="cuda") for _ in range(2))
    twin = kv_fp8.Fp8RingCache(cache.cache.clone(), cache.scales.clone(), cache.end_offset.clone())
    kv_fp8_kernel.write(cache, new_k, new_v, running)
    twin.write(new_k, new_v, running)
    torch.cuda.synchronize()
    rows["write_codes_equal"] = bool(
        torch.equal(cache.cache.view(torch.uint8), twin.cache.view(torch.uint8))
    )
    rows["write_scales_max_rel"] = float(
        ((cache.scales - twin.scales).abs() / twin.scales.abs().clamp(min=1e-30)).max()
    )
    rows["write_ends_equal"] = bool(torch.equal(cache.end_offset, twin.end_offset))
    return rows


def _check_graph() -> dict[str, Any]:
    rows: dict[str, Any] = {}
    # Writes and reads inside a CUDA graph, replayed with new inputs.
    graph_cache = kv_fp8.Fp8RingCache.empty(4, HEADS, DIM, 64, torch.device("cuda"))
    static_k = torch.randn(4, HEADS, 1, DIM, device="cuda", dtype=torch.bfloat16)
    static_q = torch.randn_like(static_k)
    mask = torch.tensor([True, True, False, True], device="cuda")
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    with torch.cuda.stream(stream):
        kv_fp8_kernel.write(graph_cache, static_k, static_k, mask)
        kv_fp8_kernel.decode(static_q, graph_cache)
    torch.cuda.synchronize()
    graph_cache.end_offset.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        kv_fp8_kernel.write(graph_cache, static_k, static_k, mask)
        graphed_out = kv_fp8_kernel.decode(static_q, graph_cache)
    graph_cache.end_offset.zero_()
    worst = 0.0
    for _step in range(100):  # wraps the 64-position ring
        static_k.copy_(torch.randn_like(static_k))
        static_q.copy_(torch.randn_like(static_q))
        graph.replay()
        eager = kv_fp8.attend_reference(
            static_q.float(), graph_cache, graph_cache.end_offset - 1, 64
        )
        worst = max(worst, _rel(graphed_out[mask], eager[mask]))
    rows["graph_vs_reference_worst"] = worst
    rows["graph_frozen_row_end"] = int(graph_cache.end_offset[2])
    rows["graph_live_row_end"] = int(graph_cache.end_offset[0])
    return rows


def _time(fn: Any, calls: int = 20, repeats: int = 7) -> float:
    """Median over ``repeats`` of the mean time of ``calls`` back-to-back calls, in ms."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000 / calls)
    return float(np.median(times))


def speed(batches: list[int]) -> list[dict[str, Any]]:
    rows = []
    for batch in batches:
        rows += _speed_at(batch)
        torch.cuda.empty_cache()
    return rows


def _speed_at(batch: int) -> list[dict[str, Any]]:
    torch.manual_seed(2)
    cache, k, v = _filled(batch, [CONTEXT + 17] * batch)
    q = torch.randn(batch, HEADS, 1, DIM, device="cuda", dtype=torch.bfloat16)
    allowed = (kv_fp8.positions(cache) >= 0)[:, None, None, :]
    new = torch.randn(batch, HEADS, 1, DIM, device="cuda", dtype=torch.bfloat16)
    run = torch.ones(batch, dtype=torch.bool, device="cuda")
    bf16_bytes = 2 * batch * HEADS * CONTEXT * DIM * 2
    fp8_bytes = 2 * batch * HEADS * CONTEXT * (DIM + 4)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def dequant_sdpa() -> Any:
        keys = cache.dequantized(0, torch.bfloat16)
        values = cache.dequantized(1, torch.bfloat16)
        return sdpa(q, keys, values, allowed)

    variants: list[tuple[str, Any, int]] = [
        ("bf16 SDPA, moshi's mask", lambda: sdpa(q, k, v, allowed), bf16_bytes),
        # Read fp8 (+scales), write bf16, read bf16 again.
        ("fp8 dequantize all + SDPA", dequant_sdpa, fp8_bytes + 2 * bf16_bytes),
    ]
    for block in (64, 128, 256):
        for warps in (1, 2, 4):
            variants.append(
                (
                    f"fp8 fused block {block} warps {warps}",
                    lambda b=block, w=warps: kv_fp8_kernel.decode(q, cache, block=b, warps=w),
                    fp8_bytes,
                )
            )
    variants.append(("fp8 write, torch ops", lambda: cache.write(new, new, run), 0))
    variants.append(("fp8 write, fused", lambda: kv_fp8_kernel.write(cache, new, new, run), 0))
    rows = []
    for name, fn, moved in variants:
        ms = _time(fn)
        row = {
            "part": "speed",
            "sessions": batch,
            "variant": name,
            "ms_per_layer": round(ms, 4),
            "ms_per_step_32_layers": round(32 * ms, 2),
            "gb_moved": round(moved / 1e9, 3),
            "tb_per_s": round(moved / ms / 1e9, 2) if moved else None,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _load_lm(weights: str | None, context: int) -> Any:
    if weights is None:
        torch.manual_seed(0)
        return loaders.get_moshi_lm(
            None, lm_kwargs_overrides={"context": context}, device="cuda", dtype=torch.bfloat16
        )
    path = Path(weights) / loaders.MOSHI_NAME
    return loaders.get_moshi_lm(
        str(path), lm_kwargs_overrides={"context": context}, device="cuda", dtype=torch.bfloat16
    )


def quality(weights: str | None, steps: int, batch: int) -> dict[str, Any]:
    """Teacher forcing: both caches see the same token sequence; per step, compare the text
    logits and the first audio codebook's (depformer) logits."""
    reference = _load_lm(weights, CONTEXT)
    candidate = copy.deepcopy(reference)
    changed = kv_fp8.use_fp8_kv_cache(candidate.transformer)
    generator = torch.Generator(device="cuda").manual_seed(3)
    streams = reference.num_codebooks
    cards = [reference.text_card] + [reference.card] * (streams - 1)
    kl_text: list[float] = []
    kl_audio: list[float] = []
    agree_text: list[float] = []
    agree_audio: list[float] = []
    rel_hidden: list[float] = []
    # Random weights give flat logits, where argmax flips on any noise: agreement is also
    # reported where bf16's top-1 leads its top-2 by more than 1 nat.
    margin_text: list[float] = []
    agree_text_clear: list[float] = []
    started = time.monotonic()
    with (
        torch.no_grad(),
        reference.streaming(batch),
        candidate.streaming(batch),
    ):
        for _step in range(steps):
            sequence = torch.stack(
                [
                    torch.randint(0, card, (batch, 1), device="cuda", generator=generator)
                    for card in cards
                ],
                dim=1,
            )
            outs = []
            for lm in (reference, candidate):
                hidden, text_logits = lm.forward_text(sequence)
                with lm.depformer.streaming(batch):  # per step, as LMGen runs it
                    audio_logits = lm.forward_depformer(0, sequence[:, :1], hidden)
                outs.append((hidden, text_logits.float(), audio_logits.float()))
            (h0, t0, a0), (h1, t1, a1) = outs
            rel_hidden.append(_rel(h1, h0))
            for ref, cand, kls, agrees in (
                (t0, t1, kl_text, agree_text),
                (a0, a1, kl_audio, agree_audio),
            ):
                p = torch.log_softmax(ref.flatten(0, -2), -1)
                r = torch.log_softmax(cand.flatten(0, -2), -1)
                kls.append(float((p.exp() * (p - r)).sum(-1).mean()))
                same = p.argmax(-1) == r.argmax(-1)
                agrees.append(float(same.float().mean()))
                if kls is kl_text:
                    top2 = p.topk(2, -1).values
                    lead = top2[:, 0] - top2[:, 1]
                    margin_text.append(float(lead.median()))
                    if bool((lead > 1.0).any()):
                        agree_text_clear.append(float(same[lead > 1.0].float().mean()))
    result = {
        "part": "quality",
        "weights": weights or "random",
        "steps": steps,
        "batch": batch,
        "fp8_layers": changed,
        "kl_text_mean": float(np.mean(kl_text)),
        "kl_text_last100": float(np.mean(kl_text[-100:])),
        "kl_audio0_mean": float(np.mean(kl_audio)),
        "argmax_agree_text": float(np.mean(agree_text)),
        "argmax_agree_text_last100": float(np.mean(agree_text[-100:])),
        "argmax_agree_audio0": float(np.mean(agree_audio)),
        "text_top1_lead_nats_median": float(np.median(margin_text)),
        "argmax_agree_text_lead_over_1nat": (
            float(np.mean(agree_text_clear)) if agree_text_clear else None
        ),
        "hidden_rel_err_mean": float(np.mean(rel_hidden)),
        "hidden_rel_err_last100": float(np.mean(rel_hidden[-100:])),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result), flush=True)
    del reference, candidate
    torch.cuda.empty_cache()
    return result


def loop(points: list[tuple[str, int]], context: int) -> list[dict[str, Any]]:
    """The bare batched step, bf16 or fp8 cache, like ``runtime_density baseline``."""
    rows = []
    for dtype, batch in points:
        torch.cuda.empty_cache()
        lm = _load_lm(None, context)
        if dtype == "fp8":
            kv_fp8.use_fp8_kv_cache(lm.transformer)
        mimi = loaders.get_mimi(None, device="cuda")
        lm_gen = LMGen(lm, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
        torch.cuda.reset_peak_memory_stats()
        row: dict[str, Any] = {"part": "loop", "kv": dtype, "context": context, "sessions": batch}
        try:
            with torch.no_grad(), lm_gen.streaming(batch), mimi.streaming(batch):
                for module in lm.transformer.modules():  # a full ring: the worst case
                    state = getattr(module, "_streaming_state", None)
                    cache = getattr(state, "kv_cache", None)
                    if cache is not None:
                        cache.end_offset.fill_(context + 5)
                inputs = [torch.randn(batch, 1, FRAME, device="cuda") * 0.1 for _ in range(8)]
                times: list[float] = []
                for i in range(120):
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    codes = mimi.encode(inputs[i % 8])
                    tokens = lm_gen.step(codes)
                    if tokens is not None:
                        mimi.decode(tokens[:, 1:].clamp(min=0))
                    torch.cuda.synchronize()
                    if i >= 30:
                        times.append((time.perf_counter() - start) * 1000)
            p50, p95 = np.percentile(times, [50, 95])
            row |= {
                "p50_ms": round(float(p50), 1),
                "p95_ms": round(float(p95), 1),
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
            }
        except torch.cuda.OutOfMemoryError as exc:
            row["error"] = f"OOM: {str(exc)[:120]}"
        print(json.dumps(row), flush=True)
        rows.append(row)
        del lm, mimi, lm_gen
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", choices=("check", "speed", "quality", "loop"))
    parser.add_argument("--weights", help="a directory with model.safetensors; default random")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--speed-batches", default="40,72")
    parser.add_argument("--loop", nargs="*", default=["bf16:40", "fp8:40", "fp8:72", "fp8:80"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = [{"gpu": torch.cuda.get_device_name()}]

    def save() -> None:  # after each part: a later part's failure keeps the earlier ones
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")

    if "check" in args.parts:
        rows.append(check())
        save()
    if "speed" in args.parts:
        rows += speed([int(b) for b in args.speed_batches.split(",")])
        save()
    if "quality" in args.parts:
        rows.append(quality(args.weights, args.steps, args.batch))
        save()
    if "loop" in args.parts:
        points = [(p.split(":")[0], int(p.split(":")[1])) for p in args.loop]
        rows += loop(points, CONTEXT)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
