"""Streaming linear resampling between a telephony rate and Moshi's 24 kHz.

Each 80 ms chunk maps to exactly one Moshi frame, and the last input sample of a chunk is
kept as the left neighbour of the next, so chunk edges do not click. Linear interpolation is
enough for narrow-band speech; downsampling by a whole ratio first averages over it, a box
filter against the worst aliasing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Pcm = np.ndarray[Any, np.dtype[np.float32]]
SUPPORTED_RATES = (8_000, 16_000, 24_000)


class StreamResampler:
    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._last = np.float32(0.0)

    def process(self, chunk: Pcm) -> Pcm:
        """Resample one chunk; ``len(out) == len(chunk) * dst / src`` (rounded)."""
        if self.src_rate == self.dst_rate or chunk.size == 0:
            return chunk.astype(np.float32, copy=False)
        n_out = round(chunk.size * self.dst_rate / self.src_rate)
        ratio = self.src_rate / self.dst_rate
        source = chunk
        if ratio > 1 and ratio.is_integer():
            step = int(ratio)
            usable = (chunk.size // step) * step
            source = chunk[:usable].reshape(-1, step).mean(axis=1).astype(np.float32)
            ratio = 1.0
            n_out = source.size
        padded = np.concatenate(([self._last], source)).astype(np.float32)
        # Output sample k sits at input position (k + 1) * ratio, counted from the previous
        # chunk's last sample, so consecutive chunks tile without overlap.
        positions = (np.arange(n_out, dtype=np.float64) + 1.0) * ratio
        out = np.interp(positions, np.arange(padded.size), padded).astype(np.float32)
        self._last = np.float32(source[-1])
        return out
