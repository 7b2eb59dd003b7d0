"""Model backends behind one small interface: each turns a :class:`RuntimeConfig` into a
:class:`LoadedModel` (one Mimi codec, one LM, a text-piece table) that the batched engine
steps. Add a backend by adding a module and a line to ``LOADERS``."""

from __future__ import annotations

from voicefleet.runtime.backends.base import BackendLoadError, LoadedModel, Loader
from voicefleet.runtime.backends.hertz import load_hertz
from voicefleet.runtime.backends.moshi import load_moshi
from voicefleet.runtime.backends.tiny import load_tiny

LOADERS: dict[str, Loader] = {
    "tiny": load_tiny,
    "moshi": load_moshi,
    "hertz-dev": load_hertz,
}


def get_loader(backend: str) -> Loader:
    """The loader of ``backend``, or a load error that lists the ones that exist."""
    try:
        return LOADERS[backend]
    except KeyError:
        known = ", ".join(sorted(LOADERS))
        raise BackendLoadError(f"unknown backend {backend!r}; choose one of: {known}") from None


__all__ = ["LOADERS", "BackendLoadError", "LoadedModel", "Loader", "get_loader"]
