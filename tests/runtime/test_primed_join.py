"""Time to first audio on Moshi (issue 14): a new conversation's first step is silent whatever
the caller says (the acoustic codebooks lag one step), so the engine runs it ahead, on
silence, while the caller is still connecting; the caller's first frame is then stepped
straight into audio, at the first tick after it arrives, instead of one tick later.

The engine runs with real frame clocks (tiny Moshi, greedy). Conversation A talks all along;
B claims a slot, and its first frame is pushed from A's frame callback, so it is waiting
before the next tick starts. B's first output must be that next tick's and audible; A's
audio must be what a control engine without B gives, frame for frame, with no tick missed.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from voicefleet.runtime.backends import get_loader
from voicefleet.runtime.backends.base import Pcm, Sampling
from voicefleet.runtime.backends.moshi_step import MoshiBackend
from voicefleet.runtime.config import RuntimeConfig
from voicefleet.runtime.engine import BatchedEngine
from voicefleet.runtime.frame_stats import FrameStats
from voicefleet.runtime.slots import FrameOutput, SlotHandle

pytestmark = pytest.mark.runtime

TICKS = 14  # A's frames in all
B_SPEAKS_AFTER = 6  # A's frames before B's first frame is pushed
WAIT_SECONDS = 120.0
PCM_TOLERANCE = 1e-4  # other rows' values may change fp32 rounding (test_move.py says why)
# On the GPU machine (``pytest --noconftest`` this file there) priming's queued copies also run
# in stream order behind a step the device is still running.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Run:
    """One engine: A speaks ``TICKS`` frames; ``with_b`` claims B at once and pushes its
    first frame from the callback of A's frame number ``B_SPEAKS_AFTER``."""

    def __init__(self, with_b: bool) -> None:
        config = RuntimeConfig(backend="tiny", max_sessions=2, max_session_seconds=20, greedy=True)
        backend = get_loader("tiny")(config, torch.device("cpu"))
        self.a_frames: list[FrameOutput] = []
        self.b_frames: list[tuple[int, FrameOutput]] = []  # (A's frame count then, output)
        self.done = threading.Event()
        self.engine = BatchedEngine(backend, 2, on_frame=self._on_frame, stats=FrameStats())
        self.engine.start()
        assert self.engine.ready.wait(WAIT_SECONDS), self.engine.failure
        assert backend.silent_first_steps == 1
        rng = np.random.default_rng(7)
        self.audio: list[Pcm] = list((0.1 * rng.standard_normal((TICKS + 4, 1920))).astype("f4"))
        self.b_first = self.audio[0] * 0.5
        self.a = self._acquire()
        self.b = self._acquire() if with_b else None
        self.pushed_at: int | None = None
        for frame in self.audio[:TICKS]:
            self.engine.push_input(self.a, frame)

    def _acquire(self) -> SlotHandle:
        handle = self.engine.acquire()
        assert handle is not None
        return handle

    def _on_frame(self, outputs: list[FrameOutput]) -> None:
        for output in outputs:
            if output.slot == self.a.slot:
                self.a_frames.append(output)
            elif self.b is not None and output.slot == self.b.slot:
                self.b_frames.append((len(self.a_frames), output))
        if self.b is not None and len(self.a_frames) == B_SPEAKS_AFTER:
            # Between two ticks: B's first frame waits for the very next one.
            self.pushed_at = len(self.a_frames)
            self.engine.push_input(self.b, self.b_first)
        if len(self.a_frames) >= TICKS:
            self.done.set()

    def run(self) -> Run:
        assert self.done.wait(WAIT_SECONDS), f"A got {len(self.a_frames)} frames of {TICKS}"
        self.engine.stop()
        return self


@pytest.fixture(scope="module")
def runs() -> tuple[Run, Run]:
    return Run(with_b=True).run(), Run(with_b=False).run()


def test_the_first_frame_is_stepped_straight_into_audio(runs: tuple[Run, Run]) -> None:
    with_b, _ = runs
    assert with_b.pushed_at == B_SPEAKS_AFTER
    assert with_b.b_frames, "B got no frame"
    a_count, first = with_b.b_frames[0]
    # The tick right after the push is A's frame B_SPEAKS_AFTER + 1: B's first output is
    # from that tick, and it is sound (the silent step ran while B was connecting).
    assert a_count == B_SPEAKS_AFTER + 1, with_b.b_frames[:2]
    assert first.pcm is not None, "B's first frame must be audible"
    assert with_b.b is not None
    assert first.generation == with_b.b.generation


def test_the_other_conversation_keeps_every_tick_and_its_audio(runs: tuple[Run, Run]) -> None:
    with_b, control = runs
    assert len(with_b.a_frames) >= TICKS and len(control.a_frames) >= TICKS
    for tick, (got, want) in enumerate(zip(with_b.a_frames, control.a_frames, strict=False)):
        assert (got.pcm is None) == (want.pcm is None), f"tick {tick}"
        if got.pcm is not None and want.pcm is not None:
            gap = float(np.abs(got.pcm - want.pcm).max())
            assert gap <= PCM_TOLERANCE, f"tick {tick}: A's audio moved by {gap}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kv_cache_dtype", ["bf16", "fp8"])
def test_a_primed_slot_continues_exactly_as_one_that_stepped_on_silence(
    kv_cache_dtype: str, device: str
) -> None:
    """Priming copies a silent first step in; stepping that step instead gives the same
    conversation after it, token for token (so nothing of the step's state was left out),
    while another slot holds a conversation of its own. The primed slot held an earlier
    conversation: priming does no reset, so whatever of it priming did not overwrite
    would show here."""
    torch.set_grad_enabled(False)
    rng = np.random.default_rng(3)
    speech = (0.1 * rng.standard_normal((12, 2, 1920))).astype(np.float32)
    outputs = []
    for prime in (True, False):
        config = RuntimeConfig(
            backend="tiny",
            max_sessions=2,
            max_session_seconds=20,
            greedy=True,
            kv_cache_dtype=kv_cache_dtype,
        )
        backend = get_loader("tiny")(config, torch.device(device))
        assert isinstance(backend, MoshiBackend)
        backend.start(2)
        backend.reset([0, 1], [Sampling()] * 2)
        backend.freeze(np.array([True, True]))
        for frames in speech[:3]:  # slot 1's earlier conversation, beside slot 0's
            backend.step(frames[::-1].copy())
        backend.freeze(np.array([True, False]))
        for frames in speech[:2]:  # slot 0 talks on (its rows must not move)
            backend.step(frames)
        if prime:
            assert backend.prime([1], [Sampling()])
            backend.step(speech[5])  # slot 0's tick, slot 1 still frozen
        else:
            backend.reset([1], [Sampling()])
            backend.freeze(np.array([True, True]))
            silence = speech[5].copy()
            silence[1] = 0.0
            backend.step(silence)
        backend.freeze(np.array([True, True]))
        tokens = [backend.step(frames).pcm.copy() for frames in speech[6:]]
        outputs.append((np.stack(tokens), backend.last_tokens.copy()))
    (primed_pcm, primed_tokens), (stepped_pcm, stepped_tokens) = outputs
    np.testing.assert_array_equal(primed_tokens, stepped_tokens)
    np.testing.assert_allclose(primed_pcm, stepped_pcm, atol=PCM_TOLERANCE)


@pytest.mark.parametrize("device", DEVICES)
def test_a_queued_prime_never_lands_on_a_slot_reset_before_its_first_step(device: str) -> None:
    """A prime's copies wait for the next step; a slot reset before that step (its caller's
    first frame came first: a plain join) starts from the reset, as if never primed."""
    torch.set_grad_enabled(False)
    rng = np.random.default_rng(5)
    speech = (0.1 * rng.standard_normal((6, 2, 1920))).astype(np.float32)
    outputs = []
    for primed_first in (True, False):
        config = RuntimeConfig(backend="tiny", max_sessions=2, max_session_seconds=20, greedy=True)
        backend = get_loader("tiny")(config, torch.device(device))
        assert isinstance(backend, MoshiBackend)
        backend.start(2)
        if primed_first:
            assert backend.prime([1], [Sampling()])
        backend.reset([0, 1], [Sampling()] * 2)
        backend.freeze(np.array([True, True]))
        outputs.append(np.stack([backend.step(frames).pcm.copy() for frames in speech]))
    np.testing.assert_array_equal(outputs[0], outputs[1])
