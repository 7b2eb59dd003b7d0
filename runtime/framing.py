"""Caller audio at the caller's rate in, whole frames of the backend's out, and back.

Every protocol collects what its caller sends (any message size, at 8, 16 or 24 kHz) into
chunks of exactly one backend frame's duration, resamples each to the backend's rate and
hands it to the engine; model frames go the other way. The rates offered divide both frames
(80 ms and 125 ms) into whole samples, so chunks never drift against the frame clock.

The caller's first audio is padded at the front with silence to whole frames, so it goes to
the engine as it arrives: a session's slot is first stepped with its first frame, and waiting
for a whole frame of audio (125 ms for Hertz-dev, where Moshi's client sends 80 ms pages)
would add that wait to the time to first audio. The silence is what the caller would have
sent had it started a moment earlier; nothing it sends is lost or reordered.
"""

from __future__ import annotations

import numpy as np

from voicefleet.runtime.backends.base import FrameFormat, Pcm
from voicefleet.runtime.resample import StreamResampler


class FrameAssembler:
    def __init__(self, rate: int, frame: FrameFormat) -> None:
        self.frame = frame
        self._chunk = frame.samples_at(rate)
        self._resample = StreamResampler(rate, frame.sample_rate)
        self._pcm: Pcm = np.zeros(0, dtype=np.float32)
        self._started = False

    def push(self, pcm: Pcm) -> list[Pcm]:
        """Add caller audio; every backend frame it completes, in order."""
        samples = pcm.reshape(-1).astype(np.float32, copy=False)
        if not self._started and samples.size:
            self._started = True
            self._pcm = np.zeros(-samples.size % self._chunk, dtype=np.float32)
        self._pcm = np.concatenate((self._pcm, samples))
        frames = []
        while self._pcm.size >= self._chunk:
            chunk, self._pcm = self._pcm[: self._chunk], self._pcm[self._chunk :]
            frames.append(self._resample.process(chunk)[: self.frame.samples])
        return frames


def to_caller(frame: FrameFormat, rate: int) -> StreamResampler:
    """A resampler of model frames to a caller's rate (one per session: it keeps an edge)."""
    return StreamResampler(frame.sample_rate, rate)
