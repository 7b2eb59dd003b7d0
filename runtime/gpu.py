"""GPU name and memory from NVML (pynvml, from the nvidia-ml-py package), or nothing on a
machine without an NVIDIA driver."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuMemory:
    name: str
    used: int
    total: int


class Gpu:
    """Reads the first visible GPU; NVML is initialised once, on first use."""

    def __init__(self, index: int = 0) -> None:
        self._index = index
        self._lock = threading.Lock()
        self._handle: Any = None
        self._tried = False

    def _nvml(self) -> Any:
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    import pynvml  # noqa: PLC0415 - optional: absent without NVIDIA's library

                    pynvml.nvmlInit()
                    self._handle = pynvml.nvmlDeviceGetHandleByIndex(self._index)
                except Exception:  # no driver, no GPU: report none
                    self._handle = None
            return self._handle

    def read(self) -> GpuMemory | None:
        handle = self._nvml()
        if handle is None:
            return None
        import pynvml  # noqa: PLC0415 - imported above once NVML initialised

        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        if isinstance(name, bytes):
            name = name.decode()
        return GpuMemory(name=str(name), used=int(info.used), total=int(info.total))
