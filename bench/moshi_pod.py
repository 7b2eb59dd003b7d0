"""The Moshi backend of one pod as the GPU benchmarks build it: command-line arguments for its
size and cache, and the loaded backend (random weights at full size, or the tiny model)."""

from __future__ import annotations

import argparse

import torch

from voicefleet.runtime.backends import get_loader
from voicefleet.runtime.backends.moshi_step import MoshiBackend
from voicefleet.runtime.config import RuntimeConfig


def add_arguments(parser: argparse.ArgumentParser, sessions: int) -> None:
    parser.add_argument("--backend", default="moshi", choices=("tiny", "moshi"))
    parser.add_argument("--sessions", type=int, default=sessions)
    parser.add_argument("--seconds", type=int, default=240)
    parser.add_argument("--kv-cache-dtype", default="bf16")
    parser.add_argument("--device", default="cuda")


def load(args: argparse.Namespace) -> MoshiBackend:
    """The backend for ``args`` (not started: the engine or the caller starts it)."""
    config = RuntimeConfig(
        backend=args.backend,
        weights="random",
        max_sessions=args.sessions,
        max_session_seconds=args.seconds,
        kv_cache_dtype=args.kv_cache_dtype,
    )
    backend = get_loader(args.backend)(config, torch.device(args.device))
    assert isinstance(backend, MoshiBackend)
    return backend
