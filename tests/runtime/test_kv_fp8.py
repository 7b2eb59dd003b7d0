"""The fp8 KV cache (``--kv-cache-dtype fp8``) on the CPU: its plain-torch path, which the
tiny model and a moved conversation's replay use (the GPU's fused kernel is checked against
the same path by ``bench/kv_fp8.py``).

- Its ring keeps moshi's positions and mask: attention over the dequantized values equals
  moshi's own ``RingKVCache`` attention over the same values, before and after the ring wraps.
- Quantization costs little: the tiny LM teacher-forced with the fp8 cache stays close to the
  same LM with its float32 cache, and the error does not grow with the conversation.
- A frozen slot keeps its history: the batched step's write for a frozen row goes to the
  row's scratch position, not into its ring (moshi's bf16 ring writes it into the ring).
- A real runtime process serves a conversation with it and says so on /v1/status.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from moshi.models import loaders
from moshi.modules.transformer import RingKVCache

from voicefleet import constants
from voicefleet.runtime.backends import get_loader, kv_fp8
from voicefleet.runtime.backends.base import BackendLoadError, Sampling
from voicefleet.runtime.backends.moshi_step import MoshiBackend
from voicefleet.runtime.backends.tiny import tiny_configs
from voicefleet.runtime.config import RuntimeConfig
from voicefleet.testing.clients import moshi_session
from voicefleet.testing.loopback import http
from voicefleet.testing.runtime_process import start_server

pytestmark = pytest.mark.runtime

HEADS, DIM, CAPACITY = 2, 16, 10


def test_the_fp8_ring_attends_like_moshis_ring_before_and_after_it_wraps() -> None:
    torch.manual_seed(0)
    batch = 3
    fp8 = kv_fp8.Fp8RingCache.empty(batch, HEADS, DIM, CAPACITY, torch.device("cpu"))
    ring = RingKVCache(batch, HEADS, DIM, CAPACITY, device=torch.device("cpu"), dtype=torch.float32)
    running = torch.tensor([True, True, False])  # the last row joins late
    offset = torch.zeros(batch, dtype=torch.long)
    for step in range(2 * CAPACITY + 3):
        if step == 4:
            running[2] = True
        k, v, q = (torch.randn(batch, HEADS, 1, DIM) for _ in range(3))
        fp8.write(k, v, running)
        # moshi's ring gets exactly what the fp8 one holds, so only the bookkeeping differs.
        codes_k, scale_k = kv_fp8.quantize(k)
        codes_v, scale_v = kv_fp8.quantize(v)
        keys, values, held = ring.complete(
            codes_k.float() * scale_k[..., None], codes_v.float() * scale_v[..., None], running
        )
        np.testing.assert_array_equal(kv_fp8.positions(fp8)[running], held[running])
        delta = offset.view(-1, 1, 1, 1) - held[:, None, None, :]
        allowed = (held[:, None, None, :] >= 0) & (delta >= 0) & (delta < CAPACITY)
        want = torch.nn.functional.scaled_dot_product_attention(q, keys, values, allowed)
        got = kv_fp8.attend_reference(q, fp8, offset, CAPACITY)
        torch.testing.assert_close(got[running], want[running], rtol=1e-5, atol=1e-6)
        offset = torch.where(running, offset + 1, offset)


def test_the_tiny_lm_with_an_fp8_cache_stays_close_to_its_float32_cache() -> None:
    torch.manual_seed(0)
    _, lm_kwargs = tiny_configs(30)
    exact = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs, device="cpu", dtype=torch.float32)
    fp8 = copy.deepcopy(exact)
    assert kv_fp8.use_fp8_kv_cache(fp8.transformer) == len(fp8.transformer.layers)
    batch, errors = 2, []
    cards = [exact.text_card] + [exact.card] * (exact.num_codebooks - 1)
    with torch.no_grad(), exact.streaming(batch), fp8.streaming(batch):
        for _step in range(75):  # past the 30-step ring, twice
            tokens = torch.stack([torch.randint(0, c, (batch, 1)) for c in cards], dim=1)
            want, _ = exact.forward_text(tokens)
            got, _ = fp8.forward_text(tokens)
            errors.append(float((got - want).norm() / want.norm()))
    # e4m3 keeps 3 mantissa bits: a few percent per value, averaged down by attention.
    assert max(errors) < 0.08, errors
    assert np.mean(errors[-25:]) < 1.5 * np.mean(errors[:25]) + 0.01, "the error must not grow"
    assert min(errors) > 0, "the fp8 path must actually quantize"


def test_a_frozen_slot_keeps_its_history_while_the_others_wrap_their_rings() -> None:
    config = RuntimeConfig(
        backend="tiny",
        max_sessions=2,
        max_session_seconds=2,
        greedy=True,
        kv_cache_dtype=constants.KV_CACHE_FP8,
    )
    backend = get_loader("tiny")(config, torch.device("cpu"))
    assert isinstance(backend, MoshiBackend)
    torch.set_grad_enabled(False)
    backend.start(2)
    backend.reset([0, 1], [Sampling(), Sampling()])
    backend.freeze(np.array([True, True]))
    rng = np.random.default_rng(0)
    for _ in range(10):
        backend.step((0.1 * rng.standard_normal((2, 1920))).astype(np.float32))
    caches = _caches(backend)
    frozen = [(c.cache[:, 1, :, : c.capacity].clone(), c.scales[:, 1].clone()) for c in caches]
    backend.freeze(np.array([True, False]))
    steps = 2 * backend.context_steps
    for _ in range(steps):  # slot 0 wraps its ring twice
        backend.step((0.1 * rng.standard_normal((2, 1920))).astype(np.float32))
    for cache, (codes, scales) in zip(caches, frozen, strict=True):
        assert int(cache.end_offset[0]) == 10 + steps
        assert int(cache.end_offset[1]) == 10
        assert torch.equal(
            cache.cache[:, 1, :, : cache.capacity].view(torch.uint8), codes.view(torch.uint8)
        )
        assert torch.equal(cache.scales[:, 1, :, : cache.capacity], scales[:, :, : cache.capacity])


def _caches(backend: MoshiBackend) -> list[kv_fp8.Fp8RingCache]:
    found = []
    for module in backend.lm.transformer.modules():
        state: Any = getattr(module, "_streaming_state", None)
        if state is not None and isinstance(getattr(state, "kv_cache", None), kv_fp8.Fp8RingCache):
            found.append(state.kv_cache)
    assert found, "the tiny LM must have fp8 caches"
    return found


def test_a_kv_cache_dtype_the_model_cannot_store_is_refused_at_load() -> None:
    for backend, dtype, words in (
        ("tiny", "fp4", "choose one of ['bf16', 'fp8']"),
        ("hertz-tiny", "fp8", "Hertz-dev's cache is bf16 only"),
    ):
        config = RuntimeConfig(backend=backend, kv_cache_dtype=dtype)
        with pytest.raises(BackendLoadError, match=words.replace("[", r"\[").replace("]", r"\]")):
            get_loader(backend)(config, torch.device("cpu"))


def test_a_runtime_with_an_fp8_cache_serves_a_conversation(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, max_sessions=1, max_session_seconds=20, extra_args=["--kv-cache-dtype=fp8"]
    )
    try:
        status = json.loads(http("GET", f"{server.http}{constants.PATH_STATUS}")[2])
        assert status["model"]["kvCacheDtype"] == "fp8"
        transcript = asyncio.run(moshi_session(f"{server.ws}/api/chat", 2.0))
        assert not transcript.errors
        assert transcript.audio_samples > 0, transcript
    finally:
        server.stop()


def test_a_moved_conversation_rebuilds_its_fp8_cache_in_the_new_slot() -> None:
    """The replay of a moved conversation (several steps at batch 1, through the reference
    path over a row view) writes the same fp8 history the source's one-step-at-a-time path
    wrote: the codes may differ by one e4m3 step where float32 rounding crossed a boundary."""
    torch.set_grad_enabled(False)
    backends = []
    for slots in (2, 3):
        config = RuntimeConfig(
            backend="tiny",
            max_sessions=slots,
            max_session_seconds=20,
            greedy=True,
            kv_cache_dtype=constants.KV_CACHE_FP8,
        )
        backend = get_loader("tiny")(config, torch.device("cpu"))
        assert isinstance(backend, MoshiBackend)
        backend.start(slots)
        backends.append(backend)
    source, target = backends
    source.reset([0, 1], [Sampling(), Sampling()])
    source.freeze(np.array([True, True]))
    rng = np.random.default_rng(5)
    steps = 40
    for _ in range(steps):
        source.step((0.1 * rng.standard_normal((2, 1920))).astype(np.float32))
    state = source.export_slot(1)
    left = target.import_begin(2, state)
    while left:
        left = target.import_step(2, 16)
    for moved, kept in zip(_caches(target), _caches(source), strict=True):
        assert int(moved.end_offset[2]) == steps
        for which in (0, 1):
            got = moved.dequantized(which, torch.float32)[2, :, :steps]
            want = kept.dequantized(which, torch.float32)[1, :, :steps]
            assert float((got - want).norm() / want.norm()) < 1e-2
