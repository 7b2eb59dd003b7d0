"""The ``hertz-dev`` and ``hertz-tiny`` loaders.

``--weights`` for hertz-dev takes:

- a directory holding the converted safetensors (``voicefleet runtime convert-hertz DIR``
  writes them beside the published ``.pt`` files); ``file:///dir`` likewise;
- ``hf://si-pbc/hertz-dev``: the converted copy that ``voicefleet runtime convert-hertz
  hf://si-pbc/hertz-dev`` left in the local cache (the pre-pull Job runs it once);
- ``random``: the full-size architecture with random bf16 weights, for benchmarks.

Serving never unpickles: without converted files the load fails and says what to run.
``hertz-tiny`` is the same architecture at toy sizes with random weights, for CPU tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from voicefleet import constants
from voicefleet.runtime.backends.base import BackendLoadError
from voicefleet.runtime.backends.hertz.backend import HertzBackend
from voicefleet.runtime.backends.hertz.config import FULL, TINY, HertzConfig
from voicefleet.runtime.backends.hertz.models import HertzModel
from voicefleet.runtime.backends.hertz.prompt import read_prompt
from voicefleet.runtime.backends.hertz.slots import kv_bytes_per_frame
from voicefleet.runtime.backends.hertz.weights import PARTS, load_part
from voicefleet.runtime.config import RuntimeConfig

RANDOM_WEIGHTS = "random"
HUB_REPO = "si-pbc/hertz-dev"
ENV_CACHE = "VOICEFLEET_WEIGHTS_CACHE"
# Codec streaming state, sampling buffers and activations per slot, beyond the caches
# (hertz-facts.md 2.5: the codec's state is under 1 MB in bf16).
OTHER_BYTES_PER_SLOT = 8 * 2**20


def converted_dir(source: str) -> Path:
    """Where ``convert-hertz`` writes, and the runtime reads, a hub repository's converted
    weights: under $VOICEFLEET_WEIGHTS_CACHE (default ~/.cache/voicefleet/weights)."""
    root = Path(os.environ.get(ENV_CACHE, Path.home() / ".cache" / "voicefleet" / "weights"))
    return root / source.removeprefix("hf://").strip("/").replace("/", "--")


def _weights_dir(weights: str) -> Path:
    if weights.startswith("hf://"):
        directory = converted_dir(weights)
        if not (directory / PARTS["backbone"][1]).is_file():
            raise BackendLoadError(
                f"no converted copy of {weights} in {directory}: run `voicefleet runtime "
                f"convert-hertz {weights}` once (it downloads the published checkpoints and "
                "writes safetensors there), or pass --weights DIR with converted files"
            )
        return directory
    path = Path(weights.removeprefix("file://"))
    if not path.is_dir():
        raise BackendLoadError(
            f"--weights {weights}: no such directory; mount the converted weights there, or "
            f"pass hf://{HUB_REPO} after converting it"
        )
    return path


def _build(config: HertzConfig, device: torch.device, dtype: torch.dtype) -> HertzModel:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = HertzModel(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _check_memory(config: RuntimeConfig, backend: HertzBackend) -> None:
    """Refuse at start, with numbers, when the slots' state cannot fit beside the weights."""
    if backend.device.type != "cuda":
        return
    per_slot = backend.rows() * kv_bytes_per_frame(backend.model, backend.dtype)
    per_slot += OTHER_BYTES_PER_SLOT
    free, _total = torch.cuda.mem_get_info(backend.device)
    if config.max_sessions * per_slot > free:
        gib = 2**30
        raise BackendLoadError(
            f"--max-sessions {config.max_sessions} at --max-session-seconds "
            f"{config.max_session_seconds} needs {config.max_sessions * per_slot / gib:.1f} GiB "
            f"of session state, but only {free / gib:.1f} GiB is free after the weights: lower "
            f"--max-sessions to {free // per_slot} or shorten --max-session-seconds"
        )


def _backend(
    config: RuntimeConfig, device: torch.device, hertz: HertzConfig, weights: str, variant: str
) -> HertzBackend:
    if config.kv_cache_dtype != constants.KV_CACHE_BF16:
        raise BackendLoadError(
            f"--kv-cache-dtype {config.kv_cache_dtype}: Hertz-dev's cache is bf16 only (the fp8 "
            "cache is Moshi's); pass --kv-cache-dtype bf16"
        )
    frame = HertzBackend.frame
    context_steps = frame.context_steps(config.max_session_seconds)
    prompt = read_prompt(config.prompt)
    prompt_frames = prompt.shape[1] // frame.samples
    if prompt_frames + context_steps > hertz.max_positions:
        longest = int((hertz.max_positions - prompt_frames) * frame.seconds)
        raise BackendLoadError(
            f"Hertz-dev was trained on {hertz.max_positions} frames; a {prompt_frames}-frame "
            f"prompt leaves room for {longest} s: lower --max-session-seconds to {longest} "
            "or shorten the prompt"
        )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    # Before building anything: a wrong path must fail in a second, not after minutes.
    directory = None if weights == RANDOM_WEIGHTS else _weights_dir(weights)
    torch.manual_seed(config.seed)
    try:
        model = _build(hertz, device, dtype)
        if directory is not None:
            for part, module in model.parts().items():
                load_part(directory, part, module, device)
    except torch.cuda.OutOfMemoryError as exc:
        raise BackendLoadError(f"not enough GPU memory for Hertz-dev on {device}: {exc}") from exc
    backend = HertzBackend(
        model,
        prompt,
        name=weights,
        variant=variant,
        device=device,
        dtype=dtype,
        context_steps=context_steps,
        graphs=True,
    )
    _check_memory(config, backend)
    return backend


def load_hertz(config: RuntimeConfig, device: torch.device) -> HertzBackend:
    if config.variant != "bf16":
        raise BackendLoadError(f"--variant {config.variant}: hertz-dev has bf16 only")
    return _backend(config, device, FULL, config.weights or RANDOM_WEIGHTS, config.variant)


def load_hertz_tiny(config: RuntimeConfig, device: torch.device) -> HertzBackend:
    """Toy sizes, random weights unless ``--weights`` names converted tiny ones."""
    variant = "bf16" if device.type == "cuda" else "fp32"
    return _backend(config, device, TINY, config.weights or RANDOM_WEIGHTS, variant)
