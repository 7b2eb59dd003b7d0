"""Hertz-dev's streaming parts against a full-sequence forward of the same (random, tiny)
weights: the codec's encoder and decoder, the backbone and the resynthesizer, each stepped
for several slots that join at different times and are frozen for a while, must give every
slot what a plain forward over that slot's own sequence gives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from voicefleet.runtime.backends.hertz.codec import Stream
from voicefleet.runtime.backends.hertz.config import FRAME_SAMPLES, TINY
from voicefleet.runtime.backends.hertz.models import HertzModel
from voicefleet.runtime.backends.hertz.transformer import KV, Rope, StepAt

pytestmark = pytest.mark.runtime

SLOTS = 3
FRAMES = 7  # frames each slot is active for
JOIN = (0, 2, 5)  # the tick each slot joins at
FROZEN = {1: {4, 5}}  # ticks a slot sits out (frozen) after joining
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def model() -> Iterator[HertzModel]:
    torch.manual_seed(7)
    with torch.no_grad():
        yield HertzModel(TINY).eval()


def schedule() -> list[list[tuple[int, int]]]:
    """Per tick, the (slot, frame index) pairs that step; every slot steps FRAMES times."""
    ticks: list[list[tuple[int, int]]] = []
    done = [0] * SLOTS
    tick = 0
    while min(done) < FRAMES:
        row = []
        for slot in range(SLOTS):
            if tick >= JOIN[slot] and tick not in FROZEN.get(slot, set()) and done[slot] < FRAMES:
                row.append((slot, done[slot]))
                done[slot] += 1
        ticks.append(row)
        tick += 1
    return ticks


def active_mask(row: list[tuple[int, int]]) -> Tensor:
    mask = torch.zeros(SLOTS, dtype=torch.bool)
    mask[[slot for slot, _ in row]] = True
    return mask


def test_streaming_codec_equals_full_sequence(model: HertzModel) -> None:
    audio = torch.randn(SLOTS, FRAMES * FRAME_SAMPLES) * 0.1
    latents = torch.randn(SLOTS, FRAMES, TINY.latent)
    encoders, decoders = Stream(), Stream()
    means = torch.full((SLOTS, FRAMES, TINY.latent), float("nan"))
    pcm = torch.full((SLOTS, FRAMES * FRAME_SAMPLES), float("nan"))
    fresh = torch.ones(SLOTS, dtype=torch.bool)
    for row in schedule():
        active = active_mask(row)
        index = torch.zeros(SLOTS, dtype=torch.long)
        for slot, frame in row:
            index[slot] = frame
        # Frozen and waiting slots get garbage: it must not reach their state.
        chunk = torch.randn(SLOTS, FRAME_SAMPLES)
        latent = torch.randn(SLOTS, 1, TINY.latent)
        for slot, frame in row:
            chunk[slot] = audio[slot, frame * FRAME_SAMPLES : (frame + 1) * FRAME_SAMPLES]
            latent[slot, 0] = latents[slot, frame]
        mean, _ = model.codec.encode(chunk, encoders.begin(active))
        out = model.codec.decode(latent, decoders.begin(active, fresh))
        fresh &= ~active
        for slot, frame in row:
            means[slot, frame] = mean[slot, 0]
            pcm[slot, frame * FRAME_SAMPLES : (frame + 1) * FRAME_SAMPLES] = out[slot]
    full_mean, _ = model.codec.encode(audio)
    torch.testing.assert_close(means, full_mean, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(pcm, model.codec.decode(latents), rtol=RTOL, atol=ATOL)


def test_streaming_transformers_equal_full_sequence(model: HertzModel) -> None:
    config = TINY
    rows = FRAMES + 2
    latents = torch.randn(SLOTS, FRAMES, 2 * config.latent)
    tokens = torch.randint(0, config.vocab, (SLOTS, FRAMES))
    like = torch.zeros(())
    ropes = (
        Rope(config.backbone.head_dim, config.backbone.theta, rows, like.device),
        Rope(config.resynthesizer.head_dim, config.resynthesizer.theta, rows, like.device),
    )
    backbone = [KV.empty(SLOTS, config.backbone, rows, like) for _ in range(config.backbone.layers)]
    resynthesizer = [
        KV.empty(SLOTS, config.resynthesizer, rows, like)
        for _ in range(config.resynthesizer.layers)
    ]
    # Stale rows from a previous occupant must not matter: the mask hides them.
    for cache in backbone + resynthesizer:
        cache.k.normal_()
        cache.v.normal_()
    position = torch.zeros(SLOTS, dtype=torch.long)
    logits = torch.full((SLOTS, FRAMES, config.vocab), float("nan"))
    locs = torch.full((SLOTS, FRAMES, config.mixtures, config.latent), float("nan"))
    for row in schedule():
        active = active_mask(row)
        x = torch.randn(SLOTS, 2 * config.latent)
        token = torch.randint(0, config.vocab, (SLOTS,))
        for slot, frame in row:
            x[slot] = latents[slot, frame]
            token[slot] = tokens[slot, frame]
        step_logits = model.backbone.step(x, StepAt.of(ropes[0], position, active, rows), backbone)
        mixture = model.resynthesizer.step(
            x,
            model.quantizer.from_tokens(token),
            StepAt.of(ropes[1], position, active, rows),
            resynthesizer,
        )
        position += active.long()
        for slot, frame in row:
            logits[slot, frame] = step_logits[slot]
            locs[slot, frame] = mixture.locs[slot]
    _, full_logits = model.backbone.full(latents, ropes[0])
    codes = model.quantizer.from_tokens(tokens)
    _, full_mixture = model.resynthesizer.full(latents, (codes, codes), ropes[1])
    torch.testing.assert_close(logits, full_logits, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(locs, full_mixture.locs, rtol=RTOL, atol=ATOL)


def test_quantizer_round_trips_its_own_codes(model: HertzModel) -> None:
    """A token's code, fed back as a latent-free index, is the code of the same index: the
    index <-> digit mapping of the FSQ levels is a bijection."""
    tokens = torch.arange(TINY.vocab)
    codes = model.quantizer.from_tokens(tokens)
    assert codes.shape == (TINY.vocab, TINY.quantizer.dim)
    assert torch.unique(codes, dim=0).shape[0] == TINY.vocab
