"""The ``moshi`` backend: Kyutai's Moshi 7B (LM) and Mimi (codec) with real weights, or with
random weights at full size for benchmarks.

``--weights`` takes:

- a directory (a mounted volume or a pre-pulled hub snapshot) holding ``model.safetensors``
  (``model.q8.safetensors`` for the int8 variant), Mimi's
  ``tokenizer-e351c8d8-checkpoint125.safetensors`` and ``tokenizer_spm_32k_3.model``;
- ``file:///path`` for the same, or ``hf://org/repo`` when a hub is reachable;
- ``random``: the full-size architecture with random weights and no text tokenizer.

Every failure is raised as :class:`BackendLoadError` with the thing to change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sentencepiece
import torch
from huggingface_hub import snapshot_download
from moshi.models import loaders

from voicefleet import constants
from voicefleet.runtime.backends import kv_fp8
from voicefleet.runtime.backends.base import BackendLoadError, no_text
from voicefleet.runtime.backends.moshi_step import MOSHI_FRAME, MoshiBackend

if TYPE_CHECKING:
    from voicefleet.runtime.config import RuntimeConfig

RANDOM_WEIGHTS = "random"
LM_FILES = {"bf16": "model.safetensors", "int8": "model.q8.safetensors"}
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
# KV cache of Moshi 7B: 32 layers x (K + V) x 4096 dims x 2 bytes = 512 KiB per step; in fp8,
# 1 byte a value and a float32 scale per 128-value head vector: 264 KiB.
KV_BYTES_PER_STEP: dict[str, int] = {
    constants.KV_CACHE_BF16: 32 * 2 * 4096 * 2,
    constants.KV_CACHE_FP8: 32 * 2 * 32 * (128 + 4),
}
# Mimi state, depformer and activations per session, measured (REFERENCE.md: 1.49 GiB at
# 3000 steps, of which 1.46 GiB is the LM's KV cache).
OTHER_BYTES_PER_SESSION = 40 * 2**20
# The replay row (moshi_replay) holds one conversation's LM state beside the slots.
REPLAY_ROWS = 1


def session_bytes(context_steps: int, kv_cache_dtype: str = constants.KV_CACHE_BF16) -> int:
    """GPU memory one session slot needs at this context length."""
    return context_steps * KV_BYTES_PER_STEP[kv_cache_dtype] + OTHER_BYTES_PER_SESSION


def _resolve_dir(weights: str) -> Path:
    if weights.startswith("hf://"):
        repo = weights.removeprefix("hf://").strip("/")
        try:
            return Path(snapshot_download(repo))
        except Exception as exc:
            raise BackendLoadError(
                f"could not fetch {weights} ({type(exc).__name__}: {exc}); without network "
                "access, pre-pull the repository into a volume and pass --weights /path"
            ) from exc
    path = Path(weights.removeprefix("file://"))
    if not path.is_dir():
        raise BackendLoadError(
            f"--weights {weights}: no such directory; mount the weights volume there or "
            "pass hf://kyutai/moshiko-pytorch-bf16"
        )
    return path


def _require(directory: Path, name: str, variant: str) -> Path:
    path = directory / name
    if not path.is_file():
        present = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
        raise BackendLoadError(
            f"{path} is missing (variant {variant} needs {name}); the directory holds: {present}"
        )
    return path


def _lm_kwargs(directory: Path | None, variant: str, context_steps: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(loaders._lm_kwargs)
    if directory is not None and (directory / "config.json").is_file():
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        # Keys that name files or generation defaults, not LMModel arguments.
        for key in ("moshi_name", "mimi_name", "tokenizer_name", "model_type", "lm_gen_config"):
            raw.pop(key, None)
        kwargs = raw
    kwargs["context"] = context_steps
    if variant == "int8":
        kwargs["quantize"] = True
    return kwargs


def _check_memory(device: torch.device, config: RuntimeConfig, context_steps: int) -> None:
    """Refuse at start, with numbers, when the slots' state cannot fit next to the weights."""
    if device.type != "cuda":
        return
    free, _total = torch.cuda.mem_get_info(device)
    one = session_bytes(context_steps, config.kv_cache_dtype)
    # One more: the row moved-in conversations are replayed on (moshi_replay).
    need = (config.max_sessions + REPLAY_ROWS) * one
    if need > free:
        gib = 2**30
        fit = max(0, free // one)
        raise BackendLoadError(
            f"--max-sessions {config.max_sessions} at --max-session-seconds "
            f"{config.max_session_seconds} needs {need / gib:.1f} GiB of session state, but "
            f"only {free / gib:.1f} GiB is free after the weights: lower --max-sessions to "
            f"{max(0, fit - REPLAY_ROWS)}, shorten --max-session-seconds"
            + (
                " or pass --kv-cache-dtype fp8"
                if config.kv_cache_dtype != constants.KV_CACHE_FP8
                else ""
            )
        )


def load_moshi(config: RuntimeConfig, device: torch.device) -> MoshiBackend:
    if config.variant not in LM_FILES:
        raise BackendLoadError(f"--variant {config.variant}: choose one of {sorted(LM_FILES)}")
    weights = config.weights or RANDOM_WEIGHTS
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    directory = None if weights == RANDOM_WEIGHTS else _resolve_dir(weights)
    context_steps = MOSHI_FRAME.context_steps(config.max_session_seconds)
    lm_kwargs = _lm_kwargs(directory, config.variant, context_steps)
    text_piece = no_text
    try:
        if directory is None:
            torch.manual_seed(config.seed)
            mimi = loaders.get_mimi(None, device=device)
            lm = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs, device=device, dtype=dtype)
        else:
            lm_path = _require(directory, LM_FILES[config.variant], config.variant)
            mimi_path = _require(directory, MIMI_FILE, config.variant)
            mimi = loaders.get_mimi(mimi_path, device=device)
            lm = loaders.get_moshi_lm(lm_path, lm_kwargs=lm_kwargs, device=device, dtype=dtype)
            tokenizer_path = directory / TOKENIZER_FILE
            if tokenizer_path.is_file():
                text_piece = _sentencepiece_table(tokenizer_path)
    except torch.cuda.OutOfMemoryError as exc:
        raise BackendLoadError(
            f"not enough GPU memory for the {config.variant} weights on {device}: {exc}"
        ) from exc
    except RuntimeError as exc:
        if "size mismatch" in str(exc) or "Missing key" in str(exc):
            raise BackendLoadError(
                f"the weights in {weights} do not fit the Moshi architecture of variant "
                f"{config.variant} (is it a different model or variant?): {exc}"
            ) from exc
        raise
    kv_fp8.use_kv_cache_dtype(lm, config.kv_cache_dtype)
    _check_memory(device, config, context_steps)
    return MoshiBackend(
        mimi,
        lm,
        text_piece=text_piece,
        name=weights,
        variant=config.variant,
        device=device,
        context_steps=context_steps,
        greedy=config.greedy,
    )


def _sentencepiece_table(path: Path) -> Any:
    processor = sentencepiece.SentencePieceProcessor(str(path))

    def piece(token: int) -> str | None:
        if token in (0, 3):  # Moshi's text padding tokens
            return None
        return str(processor.id_to_piece(token)).replace("\u2581", " ")

    return piece
