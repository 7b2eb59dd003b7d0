"""Model backends behind one small contract (``base.Backend``): each loader turns a
:class:`RuntimeConfig` into a backend that the batched engine steps. Add a backend by adding
a module and a line to ``LOADERS``.

Loaders are imported when asked for, so a Hertz-dev server never imports moshi and the
protocol modules (which only need ``base``) never import torch models.
"""

from __future__ import annotations

import importlib

from voicefleet import constants
from voicefleet.runtime.backends.base import Backend, BackendLoadError, FrameFormat, Loader

# backend name -> "module:function" under voicefleet.runtime.backends
LOADERS: dict[str, str] = {
    "tiny": "tiny:load_tiny",
    "moshi": "moshi:load_moshi",
    "hertz-dev": "hertz.load:load_hertz",
    "hertz-tiny": "hertz.load:load_hertz_tiny",
}

_MOSHI = FrameFormat(constants.MOSHI_SAMPLE_RATE, constants.MOSHI_FRAME_SAMPLES)
_HERTZ = FrameFormat(constants.HERTZ_SAMPLE_RATE, constants.HERTZ_FRAME_SAMPLES)
FRAMES = {"tiny": _MOSHI, "moshi": _MOSHI, "hertz-dev": _HERTZ, "hertz-tiny": _HERTZ}


def frame_of(backend: str) -> FrameFormat:
    """A backend's frame, known before its model loads (Moshi's for an unknown name)."""
    return FRAMES.get(backend, _MOSHI)


def get_loader(backend: str) -> Loader:
    """The loader of ``backend``, or a load error that lists the ones that exist."""
    try:
        module, _, function = LOADERS[backend].partition(":")
    except KeyError:
        known = ", ".join(sorted(LOADERS))
        raise BackendLoadError(f"unknown backend {backend!r}; choose one of: {known}") from None
    loader: Loader = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    return loader


__all__ = [
    "FRAMES",
    "LOADERS",
    "Backend",
    "BackendLoadError",
    "FrameFormat",
    "Loader",
    "frame_of",
    "get_loader",
]
