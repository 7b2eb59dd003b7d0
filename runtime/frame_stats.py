"""Step durations of the last few hundred frames, for ``/v1/status``'s p50 and p95."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

# 250 frames: the last 20 seconds, long enough to smooth jitter, short enough to show a
# pod that just became overloaded.
WINDOW_FRAMES = 250


class FrameStats:
    """Written by the engine thread, read by HTTP handlers; a lock keeps the two apart."""

    def __init__(self, window: int = WINDOW_FRAMES) -> None:
        self._lock = threading.Lock()
        self._step_ms: deque[float] = deque(maxlen=window)
        self.late_frames = 0
        self.steps = 0

    def record(self, step_ms: float, late: bool) -> None:
        with self._lock:
            self._step_ms.append(step_ms)
            self.steps += 1
            if late:
                self.late_frames += 1

    def percentiles(self) -> tuple[float, float]:
        """(p50, p95) in milliseconds; zeros before the first frame."""
        with self._lock:
            values = np.array(self._step_ms, dtype=np.float64)
        if values.size == 0:
            return 0.0, 0.0
        p50, p95 = np.percentile(values, [50, 95])
        return float(p50), float(p95)
