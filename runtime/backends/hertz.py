"""Where Hertz-dev (Standard Intelligence, 16 kHz codec, 8 Hz latents) will plug in.

Its engine differs from Moshi's (a VAE decoder and 2000-sample frames instead of Mimi's
1920), so it needs its own frame size and step; until then this loader refuses clearly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voicefleet.runtime.backends.base import BackendLoadError, LoadedModel

if TYPE_CHECKING:
    import torch

    from voicefleet.runtime.config import RuntimeConfig


def load_hertz(config: RuntimeConfig, device: torch.device) -> LoadedModel:
    raise BackendLoadError(
        "the hertz-dev backend is not implemented yet; run --backend moshi or --backend tiny"
    )
