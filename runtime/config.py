"""The runtime's settings, gathered from the command line into one immutable object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voicefleet import constants
from voicefleet.runtime import limits


@dataclass(frozen=True)
class RuntimeConfig:
    backend: str = "tiny"
    host: str = "0.0.0.0"
    port: int = constants.RUNTIME_PORT
    max_sessions: int = 4
    max_session_seconds: int = 240
    weights: str | None = None
    variant: str = "bf16"
    device: str = "auto"
    token: str | None = None
    drain_seconds: int = 30
    reconnect_url: str | None = None
    codec_workers: int = 1
    cpu_threads: int = 1
    # Audio a session may queue before the oldest is dropped (2 s), each way: enough to ride
    # out network jitter, little enough that a burst never turns into seconds of lag.
    queue_seconds: float = 2.0
    # Hertz-dev's voice prompt (a WAV file; None: a second of silence).
    prompt: str | None = None
    seed: int = 42_424_242
    # Moshi: argmax instead of sampling, so the same input gives the same conversation.
    greedy: bool = False
    # Moshi: how the LM's KV cache is stored (constants.KV_CACHE_DTYPES; kv_fp8.py).
    kv_cache_dtype: str = constants.KV_CACHE_BF16
    # Bounds on what callers may do; limits.py says why each default is what it is.
    idle_seconds: float = limits.IDLE_SECONDS
    header_timeout_seconds: float = limits.HEADER_TIMEOUT_SECONDS
    max_client_lag_seconds: float = limits.MAX_CLIENT_LAG_SECONDS
    input_burst_seconds: float = limits.INPUT_BURST_SECONDS


def read_token(token_file: Path | None, env_token: str | None) -> str | None:
    """The pool token: the file wins over the environment; blank means none."""
    if token_file is not None:
        text = token_file.read_text(encoding="utf-8").strip()
        return text or None
    if env_token is not None and env_token.strip():
        return env_token.strip()
    return None
